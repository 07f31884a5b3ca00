package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"homeserver/pdu"
)

// A room's history forks when servers write concurrently: an event can
// extend a branch other than the one this server's current state follows,
// or merge several. Then the state before it is the resolution of its prev
// events' states, and the room's current state the resolution of its
// forward extremities' states (the room version's state resolution).

// stateMap is a room state by (type, state_key).
type stateMap map[pdu.StateKey]string

// stateAfter returns the state after a stored timeline event (ok false
// for events whose state is not known here: outliers, unknown events).
func (s *Service) stateAfter(ctx context.Context, eventID string) (stateMap, bool, error) {
	ev, err := s.store.GetEvent(ctx, eventID)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if ev.Pos <= 0 || ev.StateGroup <= 0 {
		return nil, false, nil
	}
	entries, err := s.store.StateAt(ctx, ev.StateGroup, nil)
	if err != nil {
		return nil, false, err
	}
	m := make(stateMap, len(entries))
	for _, e := range entries {
		m[pdu.StateKey{Type: e.Type, StateKey: e.StateKey}] = e.EventID
	}
	return m, true, nil
}

func (m stateMap) equal(o stateMap) bool {
	if len(m) != len(o) {
		return false
	}
	for k, v := range m {
		if o[k] != v {
			return false
		}
	}
	return true
}

func (m stateMap) entries() []StateEntry {
	out := make([]StateEntry, 0, len(m))
	for k, v := range m {
		out = append(out, StateEntry{Type: k.Type, StateKey: k.StateKey, EventID: v})
	}
	slices.SortFunc(out, func(a, b StateEntry) int {
		if a.Type != b.Type {
			return compare(a.Type, b.Type)
		}
		return compare(a.StateKey, b.StateKey)
	})
	return out
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// resolve resolves states with the room version's algorithm; pending is
// an event not stored yet that the states may hold (the one being
// written).
func (s *Service) resolve(ctx context.Context, version string, states []stateMap, pending *pdu.Event) (stateMap, error) {
	if len(states) == 1 || !slices.ContainsFunc(states[1:], func(o stateMap) bool { return !o.equal(states[0]) }) {
		return states[0], nil
	}
	parsed := map[string]*pdu.Event{}
	if pending != nil {
		parsed[pending.ID()] = pending
	}
	load := func(ids []string) ([]*pdu.Event, error) {
		var want []string
		for _, id := range ids {
			if parsed[id] == nil {
				want = append(want, id)
			}
		}
		stored, err := s.store.GetEvents(ctx, want)
		if err != nil {
			return nil, err
		}
		for _, e := range stored {
			data, err := authJSON(version, e)
			if err != nil {
				return nil, err
			}
			ev, err := pdu.Parse(version, data)
			if err != nil {
				return nil, fmt.Errorf("rooms: resolving state: %w", err)
			}
			parsed[e.EventID] = ev
		}
		out := make([]*pdu.Event, 0, len(ids))
		for _, id := range ids {
			if ev := parsed[id]; ev != nil {
				out = append(out, ev)
			}
		}
		return out, nil
	}
	sets := make([][]*pdu.Event, 0, len(states))
	var frontier []string
	for _, st := range states {
		ids := make([]string, 0, len(st))
		for _, id := range st {
			ids = append(ids, id)
		}
		evs, err := load(ids)
		if err != nil {
			return nil, err
		}
		if len(evs) != len(ids) {
			return nil, errors.New("rooms: resolving state: a state event is not stored here")
		}
		sets = append(sets, evs)
		for _, ev := range evs {
			frontier = append(frontier, ev.AuthEventIDs()...)
		}
	}
	// The auth chains of every state event: what resolution may consult.
	seen := map[string]bool{}
	var chain []*pdu.Event
	for len(frontier) > 0 {
		var next []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				next = append(next, id)
			}
		}
		evs, err := load(next)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0]
		for _, ev := range evs {
			chain = append(chain, ev)
			frontier = append(frontier, ev.AuthEventIDs()...)
		}
	}
	res, err := pdu.ResolveState(version, sets, chain)
	if err != nil {
		return nil, fmt.Errorf("rooms: resolving state: %w", err)
	}

	out := make(stateMap, len(res))
	for _, ev := range res {
		out[pdu.StateKey{Type: ev.Type(), StateKey: *ev.StateKey()}] = ev.ID()
	}
	return out, nil
}

// forkState decides how a received event's state is written. When the
// event's prev_events are exactly the room's forward extremities (the
// usual case: it extends what this server has), the room's current state
// is its state before, and the store applies it as a delta (nil, nil).
// Otherwise it returns the state after the event and the room's new
// current state, resolved over the branches. before is the state before
// the event when the caller has it in full (given by another server:
// stated, or resolved at a merge).
func (s *Service) forkState(ctx context.Context, version string, ev *pdu.Event, before stateMap, stated bool) (after, current []StateEntry, err error) {
	extremities, _, err := s.store.Extremities(ctx, ev.RoomID())
	if err != nil {
		return nil, nil, err
	}
	prevs := ev.PrevEventIDs()
	if !stated && sameSet(prevs, extremities) {
		return nil, nil, nil
	}
	if before == nil {
		var prevStates []stateMap
		for _, p := range prevs {
			st, ok, err := s.stateAfter(ctx, p)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				prevStates = append(prevStates, st)
			}
		}
		if len(prevStates) == 0 {
			// Nothing known before it (a gap that could not be filled): it
			// extends the current state, as before forks were handled.
			return nil, nil, nil
		}
		if before, err = s.resolve(ctx, version, prevStates, nil); err != nil {
			return nil, nil, err
		}
	}
	afterMap := make(stateMap, len(before)+1)
	for k, v := range before {
		afterMap[k] = v
	}
	if sk := ev.StateKey(); sk != nil {
		afterMap[pdu.StateKey{Type: ev.Type(), StateKey: *sk}] = ev.ID()
	}
	branches := []stateMap{afterMap}
	for _, x := range extremities {
		if slices.Contains(prevs, x) {
			continue // replaced by this event
		}
		st, ok, err := s.stateAfter(ctx, x)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			branches = append(branches, st)
		}
	}
	currentMap, err := s.resolve(ctx, version, branches, ev)
	if err != nil {
		return nil, nil, err
	}

	return afterMap.entries(), currentMap.entries(), nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
