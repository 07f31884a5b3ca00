package rooms

import (
	"context"
	"encoding/json"
)

// bumpTypes are the events that count as a room's activity when a
// client's room list is ordered (MSC4186's bump_stamp): messages and the
// like, not state changes or reactions.
var bumpTypes = map[string]bool{
	"m.room.create": true, "m.room.message": true, "m.room.encrypted": true, "m.sticker": true,
	"m.call.invite": true, "m.poll.start": true, "m.beacon_info": true,
}

// IsBumpType reports whether an event of this type moves its room up a
// client's room list.
func IsBumpType(eventType string) bool { return bumpTypes[eventType] }

// RoomInfo is what a room list is filtered and ordered by.
type RoomInfo struct {
	// BumpPos is the position of the room's last event of a bump type (0
	// when it has none, as a room joined over federation may not).
	BumpPos int64
	// Type is the create event's content.type ("" for a plain room).
	Type      string
	Encrypted bool
}

// RoomInfoRow is a room's info as stored.
type RoomInfoRow struct {
	RoomID    string
	BumpPos   int64
	Encrypted bool
}

// UserRoomInfos returns the info of each room the user has a membership
// of; Encrypted only when encryption is asked for. Room types never
// change: each is read once and kept.
func (s *Service) UserRoomInfos(ctx context.Context, user string, encryption bool) (map[string]RoomInfo, error) {
	rows, err := s.store.UserRoomInfos(ctx, user, encryption)
	if err != nil {
		return nil, err
	}
	out := make(map[string]RoomInfo, len(rows))
	var unknown []string
	for _, r := range rows {
		info := RoomInfo{BumpPos: r.BumpPos, Encrypted: r.Encrypted}
		if t, ok := s.roomTypes.Load(r.RoomID); ok {
			info.Type = t.(string)
		} else {
			unknown = append(unknown, r.RoomID)
		}
		out[r.RoomID] = info
	}
	if len(unknown) == 0 {
		return out, nil
	}
	creates, err := s.store.CreateEvents(ctx, unknown)
	if err != nil {
		return nil, err
	}
	for id, js := range creates {
		var create struct {
			Content struct {
				Type any `json:"type"`
			} `json:"content"`
		}
		var t string
		if json.Unmarshal(js, &create) == nil {
			// A type that is not a string is no type.
			t, _ = create.Content.Type.(string)
		}
		s.roomTypes.Store(id, t)
		info := out[id]
		info.Type = t
		out[id] = info
	}
	return out, nil
}
