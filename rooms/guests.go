package rooms

import (
	"context"
	"encoding/json"
	"time"

	"homeserver/pdu"
)

// guestEvictionTime bounds the leaves one change of guest access causes.
const guestEvictionTime = time.Minute

// evictGuests makes this server's guests leave a room whose guest access
// no longer lets them join: the spec has the server set their membership
// to leave when m.room.guest_access stops being can_join. It runs after
// the change is written (locally or received), outside the writer.
func (s *Service) evictGuests(roomID string) {
	ctx, cancel := context.WithTimeout(context.Background(), guestEvictionTime)
	defer cancel()
	access, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.guest_access"}})
	if err != nil {
		s.log.Warn("reading guest access", "room_id", roomID, "err", err)
		return
	}
	for _, e := range access {
		var c struct {
			Content struct {
				GuestAccess string `json:"guest_access"`
			} `json:"content"`
		}
		if json.Unmarshal(e.JSON, &c) == nil && c.Content.GuestAccess == "can_join" {
			return
		}
	}
	members, err := s.store.CurrentStateOfType(ctx, roomID, "m.room.member")
	if err != nil {
		s.log.Warn("listing members to evict guests", "room_id", roomID, "err", err)
		return
	}
	for _, m := range members {
		if m.StateKey == nil || m.Membership != "join" || !s.isLocal(*m.StateKey) {
			continue
		}
		guest, err := s.profiles.IsGuest(ctx, *m.StateKey)
		if err != nil || !guest {
			continue
		}
		if err := s.Leave(ctx, *m.StateKey, roomID, ""); err != nil {
			s.log.Warn("evicting a guest", "room_id", roomID, "user_id", *m.StateKey, "err", err)
		}
	}
}
