package syncapi

import (
	"context"
	"sort"

	"homeserver/rooms"
	"homeserver/todevice"
)

// e2ee fills the end-to-end encryption sections: the device's to-device
// messages (moving the token's to-device position to what was handed out),
// the device lists for an incremental sync, and the device's key counts.
func (b *builder) e2ee(ctx context.Context, memberships []rooms.Stored) error {
	s := b.s
	if s.toDevice != nil {
		msgs, next, err := s.toDevice.Deliver(ctx, b.req.UserID, b.req.DeviceID, b.from.ToDevice, b.now.ToDevice)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			b.resp.ToDevice.Events = append(b.resp.ToDevice.Events, todevice.Event(m))
		}
		b.next.ToDevice = next
	}
	if s.keys == nil {
		return nil
	}
	if !b.initial {
		changes, err := b.memberChanges(ctx, memberships)
		if err != nil {
			return err
		}
		dl, err := s.deviceLists(ctx, b.req.UserID, changes, b.from, b.now)
		if err != nil {
			return err
		}
		b.resp.DeviceLists = dl
	}
	if b.req.DeviceID != "" {
		c, err := s.keys.Counts(ctx, b.req.UserID, b.req.DeviceID)
		if err != nil {
			return err
		}
		b.resp.DeviceOneTimeKeysCount = c.OneTimeKeys
		b.resp.DeviceUnusedFallbackKeyTypes = c.FallbackKeys
	}
	return nil
}

// KeyChanges answers /keys/changes: the device lists between two sync
// tokens.
func (s *Service) KeyChanges(ctx context.Context, userID, from, to string) (DeviceLists, error) {
	f, err := ParseToken(from)
	if err != nil {
		return DeviceLists{}, err
	}
	t, err := ParseToken(to)
	if err != nil {
		return DeviceLists{}, err
	}
	now, err := s.Now(ctx)
	if err != nil {
		return DeviceLists{}, err
	}
	if t.after(now) {
		t = now
	}
	memberships, err := s.rooms.UserMembershipHeads(ctx, userID)
	if err != nil {
		return DeviceLists{}, err
	}
	changedRooms, err := s.rooms.RoomsWithEventsBetween(ctx, f.Events, t.Events)
	if err != nil {
		return DeviceLists{}, err
	}
	changes, err := s.rooms.MemberChangesBetween(ctx, concernedRooms(memberships, set(changedRooms), f.Events), f.Events, t.Events)
	if err != nil {
		return DeviceLists{}, err
	}
	return s.deviceLists(ctx, userID, changes, f, t)
}

// deviceLists computes which users' devices the user should fetch again,
// and which they may stop tracking, between two positions: those who share
// a room with them and changed their devices or keys, those who came to
// share a room (all members of a room the user joined, anyone who joined a
// room of theirs) and, as left, those with whom they no longer share any
// room after a leave. The changes are the membership events in the window
// of the rooms the user is in, or left in it.
func (s *Service) deviceLists(ctx context.Context, userID string, changes []rooms.MemberChange, from, to Token) (DeviceLists, error) {
	out := DeviceLists{Changed: []string{}, Left: []string{}}
	changed, leaving := map[string]bool{}, map[string]bool{}
	for _, c := range changes {
		joined, wasJoined := c.Membership == "join", c.Previous == "join"
		if joined == wasJoined {
			continue // a profile change, or an invite coming and going
		}
		if c.UserID != userID {
			if joined {
				changed[c.UserID] = true
			} else {
				leaving[c.UserID] = true
			}
			continue
		}
		// The user's own join or leave: every member is news, or may be
		// gone.
		members, err := s.rooms.JoinedUserIDs(ctx, c.RoomID)
		if err != nil {
			return out, err
		}
		for _, m := range members {
			if joined {
				changed[m] = true
			} else {
				leaving[m] = true
			}
		}
	}
	ownChange := false
	if s.keys != nil && to.DeviceLists > from.DeviceLists {
		users, err := s.keys.DeviceListChanges(ctx, from.DeviceLists, to.DeviceLists)
		if err != nil {
			return out, err
		}
		for _, u := range users {
			changed[u] = true
			ownChange = ownChange || u == userID
		}
	}
	if len(changed) == 0 && len(leaving) == 0 {
		return out, nil
	}
	candidates := make([]string, 0, len(changed)+len(leaving))
	for u := range changed {
		candidates = append(candidates, u)
	}
	for u := range leaving {
		if !changed[u] {
			candidates = append(candidates, u)
		}
	}
	sharing, err := s.rooms.UsersSharingRoom(ctx, userID, candidates)
	if err != nil {
		return out, err
	}
	shares := set(sharing)
	for u := range changed {
		// One's own devices concern one, in a room or not; one's own
		// joins do not make one's devices news.
		if (u == userID && ownChange) || (u != userID && shares[u]) {
			out.Changed = append(out.Changed, u)
		}
	}
	for u := range leaving {
		if !shares[u] && u != userID {
			out.Left = append(out.Left, u)
		}
	}
	sort.Strings(out.Changed)
	sort.Strings(out.Left)
	return out, nil
}

// concernedRooms are the rooms whose membership changes since position
// from concern the user's device lists and presence: those with events
// since (changed) that the user is in, or left since.
func concernedRooms(memberships []rooms.Stored, changed map[string]bool, from int64) []string {
	var out []string
	for _, m := range memberships {
		if changed[m.RoomID] && (m.Membership == "join" || m.Pos > from) {
			out = append(out, m.RoomID)
		}
	}
	return out
}
