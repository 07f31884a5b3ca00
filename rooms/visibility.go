package rooms

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
)

// viewer decides which events of one room one user may see, following the
// spec's history visibility rules with the state at each event taken from
// the room's ordered log: the user's membership events and the
// history_visibility changes are few, so one read of each suffices for any
// number of events.
type viewer struct {
	user        string
	memberships []posValue // the user's membership after each change
	visibility  []posValue // history_visibility after each change
	// byDepth is visibility in topological order, for history backfilled
	// from other servers, whose stream positions say nothing of its place.
	byDepth []posValue
	// ignored are the users whose events other than state the user does
	// not see (m.ignored_user_list): state is shown, lest the room look
	// different to them.
	ignored map[string]bool
	// all marks a server admin's view (the admin API): every event, as
	// stored, whatever the history visibility.
	all bool
}

type posValue struct {
	pos   int64
	value string
}

func (s *Service) viewer(ctx context.Context, roomID, user string) (*viewer, error) {
	members, err := s.store.MemberEvents(ctx, roomID, user)
	if err != nil {
		return nil, err
	}
	hv, err := s.store.TypeEvents(ctx, roomID, "m.room.history_visibility")
	if err != nil {
		return nil, err
	}
	v := &viewer{user: user}
	if v.ignored, err = s.ignoredUsers(ctx, user); err != nil {
		return nil, err
	}
	for _, m := range members {
		v.memberships = append(v.memberships, posValue{m.Pos, m.Membership})
	}
	if cur := v.current(); cur == "leave" || cur == "ban" {
		// A user who forgot the room reads it as one who was never in it
		// (world-readable history only). Only one who left can have
		// forgotten: joining again unforgets.
		forgot, err := s.store.Forgotten(ctx, user, roomID)
		if err != nil {
			return nil, err
		}
		if forgot {
			v.memberships = nil
		}
	}
	for _, e := range hv {
		var c struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.JSON, &c)
		v.visibility = append(v.visibility, posValue{e.Pos, c.Content.HistoryVisibility})
		v.byDepth = append(v.byDepth, posValue{e.Depth, c.Content.HistoryVisibility})
	}
	sort.SliceStable(v.byDepth, func(i, j int) bool { return v.byDepth[i].pos < v.byDepth[j].pos })
	return v, nil
}

// ignoredUsers reads the users the user ignores (m.ignored_user_list).
func (s *Service) ignoredUsers(ctx context.Context, user string) (map[string]bool, error) {
	raw, err := s.store.IgnoredUserList(ctx, user)
	if err != nil || raw == nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	_ = json.Unmarshal(raw, &c)
	out := make(map[string]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		if u != user {
			out[u] = true
		}
	}
	return out, nil
}

// before returns the value in effect just before pos ("" when none).
func before(vals []posValue, pos int64) string {
	i := sort.Search(len(vals), func(i int) bool { return vals[i].pos >= pos })
	if i == 0 {
		return ""
	}
	return vals[i-1].value
}

// after returns the value in effect just after pos.
func after(vals []posValue, pos int64) string {
	i := sort.Search(len(vals), func(i int) bool { return vals[i].pos > pos })
	if i == 0 {
		return ""
	}
	return vals[i-1].value
}

func normaliseVisibility(v string) string {
	switch v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return "shared" // absent or not understood
}

func (v *viewer) allowedWith(pos int64, membership, visibility string) bool {
	switch {
	case visibility == "world_readable":
		return true
	case membership == "join":
		return true
	case visibility == "shared" && v.joinedAfter(pos):
		return true
	case membership == "invite" && visibility == "invited":
		return true
	}
	return false
}

func (v *viewer) joinedAfter(pos int64) bool {
	for _, m := range v.memberships {
		if m.pos > pos && m.value == "join" {
			return true
		}
	}
	return false
}

// canSee applies the rules to one event.
func (v *viewer) canSee(e Stored) bool {
	if v.all {
		return true
	}
	if e.StateKey == nil && v.ignored[e.Sender] {
		return false
	}
	if e.Pos < 0 {
		return v.canSeeBackfilled(e)
	}
	memBefore := before(v.memberships, e.Pos)
	visBefore := normaliseVisibility(before(v.visibility, e.Pos))
	if v.allowedWith(e.Pos, memBefore, visBefore) {
		return true
	}
	// History visibility changes and the user's own membership events are
	// visible when the state before or after them allows it.
	if e.StateKey != nil && *e.StateKey == "" && e.Type == "m.room.history_visibility" {
		return v.allowedWith(e.Pos, memBefore, normaliseVisibility(after(v.visibility, e.Pos)))
	}
	if e.StateKey != nil && *e.StateKey == v.user && e.Type == "m.room.member" {
		// A user always sees their own leave from a room they were in or
		// invited to, as Synapse has it: else a rejected invite would
		// never leave the client's list.
		if e.Membership == "leave" && (memBefore == "join" || memBefore == "invite") {
			return true
		}
		return v.allowedWith(e.Pos, after(v.memberships, e.Pos), visBefore)
	}
	return false
}

// canSeeBackfilled applies the rules to an event backfilled from another
// server: this server's users were not in the room then (their
// memberships are all in the live timeline), and the history visibility
// in effect is that of the deepest change above it.
func (v *viewer) canSeeBackfilled(e Stored) bool {
	vis := normaliseVisibility(before(v.byDepth, e.Depth))
	if v.allowedWith(e.Pos, "", vis) {
		return true
	}
	if e.StateKey != nil && *e.StateKey == "" && e.Type == "m.room.history_visibility" {
		var c struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.JSON, &c)
		return v.allowedWith(e.Pos, "", normaliseVisibility(c.Content.HistoryVisibility))
	}
	return false
}

// membershipAt is the user's membership at the event, including any change
// the event made (unsigned.membership): "leave" when they had none, as for
// history backfilled from other servers, older than any membership of
// this server's users.
func (v *viewer) membershipAt(e Stored) string {
	if v.all {
		return "" // an admin's view is nobody's membership
	}
	if e.Pos < 0 {
		return "leave"
	}
	if m := after(v.memberships, e.Pos); m != "" {
		return m
	}
	return "leave"
}

// annotate sets the events' ViewerMembership.
func (v *viewer) annotate(evs []Stored) {
	for i := range evs {
		evs[i].ViewerMembership = v.membershipAt(evs[i])
	}
}

// current is the user's membership now.
func (v *viewer) current() string {
	if len(v.memberships) == 0 {
		return ""
	}
	return v.memberships[len(v.memberships)-1].value
}

// lastJoinEnd returns the position of the membership change that ended the
// user's last stay in the room, and false when the user is joined or was
// never joined.
func (v *viewer) lastJoinEnd() (int64, bool) {
	for i := len(v.memberships) - 1; i >= 0; i-- {
		if v.memberships[i].value == "join" {
			if i == len(v.memberships)-1 {
				return 0, false
			}
			return v.memberships[i+1].pos, true
		}
	}
	return 0, false
}

// mayReadHistory reports whether the user may page through the room's
// history at all: when it is world readable, when they have been joined,
// or while invited (history_visibility "invited" shows them events). Which
// events they see is then up to canSee.
func (v *viewer) mayReadHistory() bool {
	if v.all {
		return true
	}
	if v.worldReadable() || v.current() == "invite" {
		return true
	}
	return slices.ContainsFunc(v.memberships, func(m posValue) bool { return m.value == "join" })
}

// worldReadable reports whether the room's history is currently world readable.
func (v *viewer) worldReadable() bool {
	return len(v.visibility) > 0 && v.visibility[len(v.visibility)-1].value == "world_readable"
}
