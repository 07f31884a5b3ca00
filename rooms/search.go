package rooms

import (
	"context"
	"encoding/json"
	"slices"

	"homeserver/pdu"
)

// What server-side search (package search) needs of rooms: which rooms a
// user may search, which of the events found they may see (the history
// visibility rules /messages applies), and the context around a result.

// maxPredecessors bounds the walk up a chain of upgraded rooms.
const maxPredecessors = 32

// SearchRooms returns the rooms whose events the user may search: those
// they are in or have left (or been banned from). Which events of them
// they see is SearchView's to decide.
func (s *Service) SearchRooms(ctx context.Context, user string) ([]string, error) {
	ms, err := s.store.UserMembershipHeads(ctx, user)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		switch m.Membership {
		case "join", "leave", "ban":
			out = append(out, m.RoomID)
		}
	}
	return out, nil
}

// Predecessors returns the rooms an upgraded room replaced, nearest
// first, following each m.room.create's predecessor while the room is
// known here.
func (s *Service) Predecessors(ctx context.Context, roomID string) ([]string, error) {
	seen := map[string]bool{roomID: true}
	var out []string
	for range maxPredecessors {
		st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.create"}})
		if err != nil {
			return nil, err
		}
		if len(st) == 0 {
			break
		}
		var c struct {
			Content struct {
				Predecessor struct {
					RoomID any `json:"room_id"`
				} `json:"predecessor"`
			} `json:"content"`
		}
		_ = json.Unmarshal(st[0].JSON, &c)
		pred, _ := c.Content.Predecessor.RoomID.(string)
		if pred == "" || seen[pred] {
			break
		}
		seen[pred] = true
		out = append(out, pred)
		roomID = pred
	}
	return out, nil
}

// SearchView decides, for one user, which events found by a search they
// may see, reading each room's visibility once.
type SearchView struct {
	s       *Service
	user    string
	viewers map[string]*viewer // nil: the user was never joined
}

// NewSearchView returns the user's view for one search.
func (s *Service) NewSearchView(user string) *SearchView {
	return &SearchView{s: s, user: user, viewers: map[string]*viewer{}}
}

func (sv *SearchView) viewer(ctx context.Context, roomID string) (*viewer, error) {
	if v, ok := sv.viewers[roomID]; ok {
		return v, nil
	}
	v, err := sv.s.viewer(ctx, roomID, sv.user)
	if err != nil {
		return nil, err
	}
	// Only rooms the user has been joined to are searched (a forgotten
	// room reads as never joined), whatever their history visibility.
	if !slices.ContainsFunc(v.memberships, func(m posValue) bool { return m.value == "join" }) {
		v = nil
	}
	sv.viewers[roomID] = v
	return v, nil
}

// CanSee reports whether the user may see the event found.
func (sv *SearchView) CanSee(ctx context.Context, e Stored) (bool, error) {
	v, err := sv.viewer(ctx, e.RoomID)
	if err != nil || v == nil {
		return false, err
	}
	return v.canSee(e), nil
}

// ClientEvents renders events the user may see, with their membership at
// each (unsigned.membership).
func (sv *SearchView) ClientEvents(ctx context.Context, evs []Stored) ([]json.RawMessage, error) {
	for i := range evs {
		v, err := sv.viewer(ctx, evs[i].RoomID)
		if err != nil {
			return nil, err
		}
		if v != nil {
			evs[i].ViewerMembership = v.membershipAt(evs[i])
		}
	}
	return sv.s.ClientEvents(ctx, evs, FormatOptions{})
}

// SearchProfile is a sender's profile at a point of a room.
type SearchProfile struct {
	DisplayName *string `json:"displayname"`
	AvatarURL   *string `json:"avatar_url"`
}

// SearchContext is the context of one search result.
type SearchContext struct {
	Start        string                   `json:"start"`
	End          string                   `json:"end"`
	EventsBefore []json.RawMessage        `json:"events_before"`
	EventsAfter  []json.RawMessage        `json:"events_after"`
	ProfileInfo  map[string]SearchProfile `json:"profile_info,omitempty"`
}

// Context returns up to nBefore visible events before e and nAfter after
// it, with /messages tokens as /context gives them (Start continues
// backwards before events_before, End forwards after events_after), and,
// with profiles, the senders' display names and avatars in the state at
// the last event returned.
func (sv *SearchView) Context(ctx context.Context, e Stored, nBefore, nAfter int, profiles bool) (*SearchContext, error) {
	v, err := sv.viewer(ctx, e.RoomID)
	if err != nil {
		return nil, err
	}
	keep := func(x Stored) bool { return v != nil && v.canSee(x) }
	fetch, step := sv.s.roomEvents(ctx, e.RoomID, false)
	before, start, _, err := collect(e.Pos-1, nBefore, fetch, step, keep)
	if err != nil {
		return nil, err
	}
	fetch, step = sv.s.roomEvents(ctx, e.RoomID, true)
	after, end, _, err := collect(e.Pos, nAfter, fetch, step, keep)
	if err != nil {
		return nil, err
	}
	res := &SearchContext{Start: FormatToken(start), End: FormatToken(end)}
	if res.EventsBefore, err = sv.ClientEvents(ctx, before); err != nil {
		return nil, err
	}
	if res.EventsAfter, err = sv.ClientEvents(ctx, after); err != nil {
		return nil, err
	}
	if res.EventsBefore == nil {
		res.EventsBefore = []json.RawMessage{}
	}
	if res.EventsAfter == nil {
		res.EventsAfter = []json.RawMessage{}
	}
	if !profiles {
		return res, nil
	}
	last := e
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	var keys []pdu.StateKey
	seen := map[string]bool{}
	for _, x := range slices.Concat(before, []Stored{e}, after) {
		if !seen[x.Sender] {
			seen[x.Sender] = true
			keys = append(keys, pdu.StateKey{Type: "m.room.member", StateKey: x.Sender})
		}
	}
	state, err := sv.s.stateOfGroup(ctx, last.StateGroup, keys)
	if err != nil {
		return nil, err
	}
	res.ProfileInfo = map[string]SearchProfile{}
	for _, m := range state {
		if m.Type != "m.room.member" || m.StateKey == nil || !seen[*m.StateKey] {
			continue
		}
		var c struct {
			Content struct {
				DisplayName any `json:"displayname"`
				AvatarURL   any `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(m.JSON, &c)
		var p SearchProfile
		if s, ok := c.Content.DisplayName.(string); ok {
			p.DisplayName = &s
		}
		if s, ok := c.Content.AvatarURL.(string); ok {
			p.AvatarURL = &s
		}
		res.ProfileInfo[*m.StateKey] = p
	}
	return res, nil
}
