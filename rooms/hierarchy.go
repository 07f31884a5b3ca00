package rooms

import (
	"context"
	"encoding/json"

	"homeserver/pdu"
)

// SpaceRoom is what a space hierarchy (package spaces) shows of a room this
// server holds, read from its current state.
type SpaceRoom struct {
	PublicRoom
	RoomVersion string
	// Encryption is the algorithm of m.room.encryption, if any.
	Encryption string
	// AllowedRoomIDs are the rooms of the join rules' m.room_membership
	// conditions, whatever the join rule: the caller decides whether the
	// rule makes them count.
	AllowedRoomIDs []string
	// Children are the room's m.space.child events, valid or not.
	Children []SpaceChild
}

// SpaceChild is one m.space.child event of a room.
type SpaceChild struct {
	RoomID  string // the state key
	Sender  string
	TS      int64
	Content json.RawMessage
}

// spaceStateKeys is the state a space hierarchy shows beyond the
// directory's.
var spaceStateKeys = []pdu.StateKey{{Type: "m.room.encryption"}, {Type: "m.room.join_rules"}}

// SpaceRoom reads a room's summary and m.space.child events from its
// current state, with redacted events' content redacted; ErrNotFound when
// the room is unknown.
func (s *Service) SpaceRoom(ctx context.Context, roomID string) (SpaceRoom, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return SpaceRoom{}, err
	}
	counts, err := s.store.MemberCounts(ctx, roomID)
	if err != nil {
		return SpaceRoom{}, err
	}
	summary, err := s.publicRoom(ctx, DirectoryRoom{RoomID: roomID, JoinedMembers: counts["join"]})
	if err != nil {
		return SpaceRoom{}, err
	}
	out := SpaceRoom{PublicRoom: summary, RoomVersion: room.Version}
	versions := map[string]string{roomID: room.Version}
	st, err := s.store.CurrentState(ctx, roomID, spaceStateKeys)
	if err != nil {
		return SpaceRoom{}, err
	}
	for _, ev := range st {
		raw, err := s.currentContent(ctx, ev, versions)
		if err != nil {
			return SpaceRoom{}, err
		}
		var c struct {
			Algorithm string `json:"algorithm"`
			Allow     []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		}
		if json.Unmarshal(raw, &c) != nil {
			continue // content of the wrong shape shows as unset
		}
		switch ev.Type {
		case "m.room.encryption":
			out.Encryption = c.Algorithm
		case "m.room.join_rules":
			for _, a := range c.Allow {
				if a.Type == "m.room_membership" && a.RoomID != "" {
					out.AllowedRoomIDs = append(out.AllowedRoomIDs, a.RoomID)
				}
			}
		}
	}
	children, err := s.store.CurrentStateOfType(ctx, roomID, "m.space.child")
	if err != nil {
		return SpaceRoom{}, err
	}
	for _, ev := range children {
		if ev.StateKey == nil {
			continue
		}
		raw, err := s.currentContent(ctx, ev, versions)
		if err != nil {
			return SpaceRoom{}, err
		}
		out.Children = append(out.Children, SpaceChild{RoomID: *ev.StateKey, Sender: ev.Sender, TS: ev.TS, Content: raw})
	}
	return out, nil
}
