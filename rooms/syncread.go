package rooms

import (
	"context"
	"encoding/json"
	"slices"

	"homeserver/filter"
	"homeserver/pdu"
)

// This file is the read side /sync uses: everything is bounded by the
// positions the sync snapshot took, so that no event is missed or repeated
// between two syncs.

// UserMemberships returns the user's current membership event in each room.
func (s *Service) UserMemberships(ctx context.Context, user string) ([]Stored, error) {
	return s.store.UserMemberships(ctx, user)
}

// UserMembershipHeads is UserMemberships without the events' JSON (nor
// depth, time or state group), and with the sender only of invites,
// leaves and bans: what sync needs of a user's rooms.
func (s *Service) UserMembershipHeads(ctx context.Context, user string) ([]Stored, error) {
	return s.store.UserMembershipHeads(ctx, user)
}

// RoomsWithEventsBetween returns the rooms with events in (from, to].
func (s *Service) RoomsWithEventsBetween(ctx context.Context, from, to int64) ([]string, error) {
	return s.store.RoomsWithEventsBetween(ctx, from, to)
}

// MaxPos is the position of the newest event.
func (s *Service) MaxPos(ctx context.Context) (int64, error) { return s.store.MaxPos(ctx) }

// Timeline returns up to limit events in (from, to] of the room that the
// user may see and the filter keeps, oldest first, and whether more such
// events were left out.
func (s *Service) Timeline(ctx context.Context, user, roomID string, from, to int64, limit int, f *filter.RoomEventFilter) ([]Stored, bool, error) {
	v, err := s.viewer(ctx, roomID, user)
	if err != nil {
		return nil, false, err
	}
	return s.timeline(ctx, v, roomID, from, to, limit, f)
}

// TimelineJoined is Timeline for a user whose membership, read in the same
// snapshot, has been join since position joinedAt. When that is no later
// than from, every event of the range is theirs to see (ignored senders
// aside), so neither their membership history nor the room's history
// visibility is read: an incremental /sync of a room the user stayed in,
// the common answer, costs one read less of each.
func (s *Service) TimelineJoined(ctx context.Context, user, roomID string, joinedAt, from, to int64, limit int, f *filter.RoomEventFilter) ([]Stored, bool, error) {
	if joinedAt <= 0 || from <= 0 || joinedAt > from {
		return s.Timeline(ctx, user, roomID, from, to, limit, f)
	}
	ignored, err := s.ignoredUsers(ctx, user)
	if err != nil {
		return nil, false, err
	}
	v := &viewer{user: user, memberships: []posValue{{joinedAt, "join"}}, ignored: ignored}
	return s.timeline(ctx, v, roomID, from, to, limit, f)
}

func (s *Service) timeline(ctx context.Context, v *viewer, roomID string, from, to int64, limit int, f *filter.RoomEventFilter) ([]Stored, bool, error) {
	var picked []Stored
	cursor := to + 1
	scanned := 0
	batchSize := max(limit+1, 20)
	exhausted := false
	for len(picked) <= limit && scanned < maxScan {
		batch, err := s.store.RoomEvents(ctx, roomID, cursor, from, false, batchSize)
		if err != nil {
			return nil, false, err
		}
		for _, e := range batch {
			scanned++
			cursor = e.Pos
			if v.canSee(e) && f.Match(e.RoomID, e.Type, e.Sender, contentOf(e.JSON)) {
				picked = append(picked, e)
				if len(picked) > limit {
					break
				}
			}
		}
		if len(batch) < batchSize {
			exhausted = true
			break
		}
	}
	// A scan cut short at maxScan may have left older events unread: that
	// is a gap too, not the start of the range.
	limited := len(picked) > limit || !exhausted
	if len(picked) > limit {
		picked = picked[:limit]
	}
	slices.Reverse(picked)
	if !limited && from == 0 && (len(picked) == 0 || picked[0].Type != "m.room.create") {
		// The scan reached the start of the room's log here, which may not
		// be the start of the room.
		oldest := to + 1
		if len(picked) > 0 {
			oldest = picked[0].Pos
		}
		var err error
		if limited, err = s.historyBeforeLog(ctx, v, roomID, oldest); err != nil {
			return nil, false, err
		}
	}
	v.annotate(picked)
	return picked, limited, nil
}

// historyBeforeLog reports whether the room has history, older than its
// log here, that the user may see: a room joined over federation starts
// its log at the join, with its create event and the state before among
// the outliers, and a client is owed a gap (limited, with a prev_batch to
// page back from) when the history visibility just before the oldest
// event the user sees lets them read what came before it.
func (s *Service) historyBeforeLog(ctx context.Context, v *viewer, roomID string, oldest int64) (bool, error) {
	create, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.create"}})
	if err != nil {
		return false, err
	}
	if len(create) > 0 && create[0].Pos > 0 {
		return false, nil // created in the log: it holds the whole room
	}
	return v.canSee(Stored{Pos: oldest - 1, Type: "m.room.message"}), nil
}

// StateAfter returns the room's state just after position pos.
func (s *Service) StateAfter(ctx context.Context, roomID string, pos int64) ([]Stored, error) {
	return s.stateAfterPos(ctx, roomID, pos, nil)
}

// stateAfterPos reads the room's state just after pos (only keys', unless
// nil). When that is the current state (no state changed since, the
// common case for /sync), it is read from current_state: one indexed
// read instead of walking the state groups' chain.
func (s *Service) stateAfterPos(ctx context.Context, roomID string, pos int64, keys []pdu.StateKey) ([]Stored, error) {
	group, current, err := s.store.StateGroupAtCurrent(ctx, roomID, pos)
	if err != nil {
		return nil, err
	}
	if current {
		return s.store.CurrentState(ctx, roomID, keys)
	}
	return s.stateOfGroup(ctx, group, keys)
}

// StateAfterKeys returns the events of the given keys in the room's state
// just after position pos; only those are read, so that the cost follows
// the keys asked for and not the size of the room's state.
func (s *Service) StateAfterKeys(ctx context.Context, roomID string, pos int64, keys []pdu.StateKey) ([]Stored, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	return s.stateAfterPos(ctx, roomID, pos, keys)
}

// StateAfterFunc returns the room's state just after position pos, limited
// to the keys keep accepts: the others' events are never read.
func (s *Service) StateAfterFunc(ctx context.Context, roomID string, pos int64, keep func(eventType, stateKey string) bool) ([]Stored, error) {
	group, err := s.store.StateGroupAt(ctx, roomID, pos)
	if err != nil {
		return nil, err
	}
	entries, err := s.store.StateAt(ctx, group, nil)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if keep(e.Type, e.StateKey) {
			ids = append(ids, e.EventID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return s.store.GetEvents(ctx, ids)
}

// StateDelta returns the latest state event of each key changed in
// (from, to), in stream order.
func (s *Service) StateDelta(ctx context.Context, roomID string, from, to int64) ([]Stored, error) {
	evs, err := s.store.StateEventsBetween(ctx, roomID, from, to)
	if err != nil {
		return nil, err
	}
	latest := map[pdu.StateKey]int{}
	for i, e := range evs {
		latest[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = i
	}
	var out []Stored
	for i, e := range evs {
		if latest[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] == i {
			out = append(out, e)
		}
	}
	return out, nil
}

// Summary is the room summary of /sync.
type Summary struct {
	Heroes       []string `json:"m.heroes,omitempty"`
	JoinedCount  int      `json:"m.joined_member_count"`
	InvitedCount int      `json:"m.invited_member_count"`
}

// RoomSummary computes the summary for user.
func (s *Service) RoomSummary(ctx context.Context, roomID, user string) (Summary, error) {
	counts, err := s.store.MemberCounts(ctx, roomID)
	if err != nil {
		return Summary{}, err
	}
	heroes, err := s.store.Heroes(ctx, roomID, user, 5)
	if err != nil {
		return Summary{}, err
	}
	return Summary{Heroes: heroes, JoinedCount: counts["join"], InvitedCount: counts["invite"]}, nil
}

// strippedTypes are the state events an invitee or knocker sees.
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// StrippedState returns the stripped state of a room (with the user's own
// membership event), for invites and knocks.
func (s *Service) StrippedState(ctx context.Context, roomID, user string) ([]json.RawMessage, error) {
	keys := make([]pdu.StateKey, 0, len(strippedTypes)+1)
	for _, t := range strippedTypes {
		keys = append(keys, pdu.StateKey{Type: t})
	}
	keys = append(keys, pdu.StateKey{Type: "m.room.member", StateKey: user})
	st, err := s.store.CurrentState(ctx, roomID, keys)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(st, func(e Stored) bool { return e.Type == "m.room.create" }) {
		// A room known only from another server's invite: the stripped
		// state came with the invite.
		if data, err := s.store.InviteState(ctx, roomID, user); err != nil {
			return nil, err
		} else if data != nil {
			var out []json.RawMessage
			if json.Unmarshal(data, &out) == nil {
				for _, e := range st {
					if e.Type == "m.room.member" {
						out = append(out, strippedOf(e))
					}
				}
				return out, nil
			}
		}
	}
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(st))
	for _, e := range st {
		if e.Type == "m.room.create" && room.Version == "12" {
			// From room version 12 the room ID is the create event's hash:
			// the full event lets the invitee check the room and see who
			// made it, which the room ID no longer says (MSC4311, as
			// Synapse gives it).
			data, err := authJSON(room.Version, e)
			if err != nil {
				return nil, err
			}
			out = append(out, data)
			continue
		}
		out = append(out, strippedOf(e))
	}
	return out, nil
}

func strippedOf(e Stored) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"type": e.Type, "state_key": *e.StateKey, "sender": e.Sender, "content": contentOf(e.JSON),
	})
	return b
}

// SharesRoom reports whether two users are joined to a common room.
func (s *Service) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	if a == b {
		return true, nil
	}
	return s.store.SharesRoom(ctx, a, b)
}

// UsersSharingRoom returns those of candidates joined to a room the user
// is joined to (the user themself included, when a candidate).
func (s *Service) UsersSharingRoom(ctx context.Context, user string, candidates []string) ([]string, error) {
	if len(candidates) == 0 {
		return nil, nil
	}
	return s.store.UsersSharingRoom(ctx, user, candidates)
}

// MemberChangesBetween returns the membership events of the rooms in
// (from, to], in stream order.
func (s *Service) MemberChangesBetween(ctx context.Context, roomIDs []string, from, to int64) ([]MemberChange, error) {
	if len(roomIDs) == 0 || to <= from {
		return nil, nil
	}
	return s.store.MemberChangesBetween(ctx, roomIDs, from, to)
}

// JoinedUserIDs returns the room's joined members.
func (s *Service) JoinedUserIDs(ctx context.Context, roomID string) ([]string, error) {
	return s.store.JoinedUserIDs(ctx, roomID)
}

// MembershipAt returns the user's membership event in force at pos (a
// zero Stored when they had none).
func (s *Service) MembershipAt(ctx context.Context, roomID, user string, pos int64) (Stored, error) {
	evs, err := s.store.MemberEvents(ctx, roomID, user)
	if err != nil {
		return Stored{}, err
	}
	var at Stored
	for _, e := range evs {
		if e.Pos > pos {
			break
		}
		at = e
	}
	return at, nil
}

// JoinedThroughout reports whether the user was joined to the room at from
// and stayed so until to: none of their membership events in (from, to]
// is other than a join (a profile change). One who left and came back in
// between missed what happened meanwhile.
func (s *Service) JoinedThroughout(ctx context.Context, roomID, user string, from, to int64) (bool, error) {
	evs, err := s.store.MemberEvents(ctx, roomID, user)
	if err != nil {
		return false, err
	}
	joined := false
	for _, e := range evs {
		if e.Pos > to {
			break
		}
		if e.Pos <= from {
			joined = e.Membership == "join"
		} else if e.Membership != "join" {
			return false, nil
		}
	}
	return joined, nil
}

// Forgotten reports whether the user forgot the room.
func (s *Service) Forgotten(ctx context.Context, user, roomID string) (bool, error) {
	return s.store.Forgotten(ctx, user, roomID)
}
