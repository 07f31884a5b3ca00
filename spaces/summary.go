package spaces

import (
	"context"

	"homeserver/mxhttp"
	"homeserver/rooms"
)

// Summary is a room as GET /room_summary describes it to a user: the
// hierarchy's summary of the room, without its children, and the user's
// membership.
type Summary struct {
	rooms.PublicRoom
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	Membership     string   `json:"membership"`
}

// RoomSummary describes a room to a user who may see it in a hierarchy
// (joined or invited, or it is open to them: public, knockable, world
// readable, restricted to a room they are in). A room this server is not in
// is asked of the servers in via. Anything else is not found, alike, so
// that a private room's existence does not show.
func (s *Service) RoomSummary(ctx context.Context, user, roomID string, via []string) (*Summary, error) {
	room, _, err := s.localRoom(ctx, roomID, false)
	if err != nil {
		return nil, err
	}
	if room == nil {
		if ans := s.fetch(ctx, roomID, via, false); ans != nil {
			room, _ = withChildren(ans.Room, false)
		}
	}
	notFound := mxhttp.NotFound("Room not found")
	if room == nil {
		return nil, notFound
	}
	if may, err := s.userMay(ctx, user, room); err != nil {
		return nil, err
	} else if !may {
		return nil, notFound
	}
	m, err := s.rooms.Membership(ctx, roomID, user)
	if err != nil {
		return nil, err
	}
	if m == "" {
		m = "leave" // as Synapse says of a user with no membership
	}
	return &Summary{PublicRoom: room.PublicRoom, AllowedRoomIDs: room.AllowedRoomIDs, Encryption: room.Encryption, RoomVersion: room.RoomVersion, Membership: m}, nil
}
