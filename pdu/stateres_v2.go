package pdu

import (
	"cmp"
	"container/heap"
	"math"
	"slices"

	gmsl "github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// This file is state resolution v2 and v2.1 written from the spec (room
// versions 2 and 12, "State resolution"), for room version 12. GMSL cannot
// resolve v12 rooms: both its v2 and v2.1 code rank event senders by power
// before they have a create event to find the room's creators in, and
// panic. The authorisation checks themselves are still GMSL's.

// v2Resolver holds the inputs of one resolution.
type v2Resolver struct {
	r *versionRules
	// events holds every event by ID: the state sets and their auth chains.
	events map[string]*Event
	// v21 selects v2.1: iterative auth checks start from an empty state and
	// the full conflicted set includes the conflicted state subgraph.
	v21 bool
	// powerCache memoises senderPower, which Kahn's algorithm asks for
	// repeatedly.
	powerCache map[string]int64
}

func resolveV2(r *versionRules, stateSets [][]*Event, events map[string]*Event, v21 bool) []*Event {
	s := &v2Resolver{r: r, events: events, v21: v21, powerCache: make(map[string]int64)}
	unconflicted, conflicted := splitStateSets(stateSets)
	if len(conflicted) == 0 {
		return stateList(unconflicted)
	}

	full := s.fullConflictedSet(stateSets, conflicted)

	// Step 1: the power events of the full conflicted set, with their auth
	// chains as far as these lie in the full conflicted set.
	powerSet := make(map[string]bool)
	for id := range full {
		if e := s.events[id]; e != nil && isPowerEvent(e) {
			powerSet[id] = true
			for a := range s.authChain(e) {
				if full[a] {
					powerSet[a] = true
				}
			}
		}
	}
	power := s.reverseTopologicalPowerOrder(powerSet)

	// Step 2.
	partial := make(map[StateKey]*Event)
	if !s.v21 {
		for k, e := range unconflicted {
			partial[k] = e
		}
	}
	s.iterativeAuthChecks(partial, power)

	// Steps 3 and 4: everything else, in mainline order.
	var rest []*Event
	for id := range full {
		if e := s.events[id]; e != nil && !powerSet[id] && e.IsState() {
			rest = append(rest, e)
		}
	}
	s.iterativeAuthChecks(partial, s.mainlineOrder(partial[StateKey{spec.MRoomPowerLevels, ""}], rest))

	// Step 5.
	for k, e := range unconflicted {
		partial[k] = e
	}
	return stateList(partial)
}

// splitStateSets divides the state into the unconflicted state map (keys
// present in every set with the same event) and the conflicted state set
// (every other event), by ID.
func splitStateSets(stateSets [][]*Event) (unconflicted map[StateKey]*Event, conflicted map[string]bool) {
	type entry struct {
		e     *Event
		count int // sets holding this event for the key
	}
	byKey := make(map[StateKey]map[string]*entry)
	for _, set := range stateSets {
		seen := make(map[string]bool, len(set)) // a set listing an event twice counts once
		for _, e := range set {
			if seen[e.id] {
				continue
			}
			seen[e.id] = true
			k := StateKey{e.typ, *e.stateKey}
			if byKey[k] == nil {
				byKey[k] = make(map[string]*entry)
			}
			if byKey[k][e.id] == nil {
				byKey[k][e.id] = &entry{e: e}
			}
			byKey[k][e.id].count++
		}
	}
	unconflicted = make(map[StateKey]*Event)
	conflicted = make(map[string]bool)
	for k, values := range byKey {
		for id, v := range values {
			if len(values) == 1 && v.count == len(stateSets) {
				unconflicted[k] = v.e
			} else {
				conflicted[id] = true
			}
		}
	}
	return unconflicted, conflicted
}

// fullConflictedSet is the conflicted state set, plus the auth difference,
// plus (v2.1) the conflicted state subgraph.
func (s *v2Resolver) fullConflictedSet(stateSets [][]*Event, conflicted map[string]bool) map[string]bool {
	full := make(map[string]bool, len(conflicted))
	for id := range conflicted {
		full[id] = true
	}

	// Auth difference: events in some but not all of the sets' full auth
	// chains.
	inChains := make(map[string]int)
	for _, set := range stateSets {
		for a := range s.authChain(set...) {
			inChains[a]++
		}
	}
	for id, n := range inChains {
		if n < len(stateSets) {
			full[id] = true
		}
	}

	if s.v21 {
		// Conflicted state subgraph: events on an auth path from one
		// conflicted event to another. Conflicted endpoints are already
		// in the set; the other events on such paths are those in the auth
		// chain of a conflicted event that themselves lead to a conflicted
		// event.
		leads := make(map[string]bool) // memo: event leads to a conflicted event
		var leadsToConflicted func(id string) bool
		leadsToConflicted = func(id string) bool {
			if conflicted[id] {
				return true
			}
			if v, ok := leads[id]; ok {
				return v
			}
			leads[id] = false // the auth graph is acyclic; this only guards bad input
			e := s.events[id]
			if e == nil {
				return false
			}
			for _, a := range e.auth {
				if leadsToConflicted(a) {
					leads[id] = true
					return true
				}
			}
			return false
		}
		var roots []*Event
		for id := range conflicted {
			if e := s.events[id]; e != nil {
				roots = append(roots, e)
			}
		}
		for a := range s.authChain(roots...) {
			if leadsToConflicted(a) {
				full[a] = true
			}
		}
	}
	return full
}

// authChain returns the IDs of the known events reachable from the given
// events through auth_events: the union of their auth chains. Unknown
// events are skipped, as GMSL does: the caller was asked for complete auth
// chains.
func (s *v2Resolver) authChain(events ...*Event) map[string]bool {
	chain := make(map[string]bool)
	var stack []string
	for _, e := range events {
		stack = append(stack, e.auth...)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		a := s.events[id]
		if a == nil || chain[id] {
			continue
		}
		chain[id] = true
		stack = append(stack, a.auth...)
	}
	return chain
}

// isPowerEvent reports whether e is an event that may take someone's power
// away: power levels, join rules, or a kick or ban.
func isPowerEvent(e *Event) bool {
	if e.stateKey == nil {
		return false
	}
	switch e.typ {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return *e.stateKey == ""
	case spec.MRoomMember:
		return (e.membership == spec.Leave || e.membership == spec.Ban) && e.sender != *e.stateKey
	}
	return false
}

// authEventOfType returns the event of the given type with an empty state
// key among e's auth events.
func (s *v2Resolver) authEventOfType(e *Event, eventType string) *Event {
	for _, id := range e.auth {
		if a := s.events[id]; a != nil && a.typ == eventType && a.stateKey != nil && *a.stateKey == "" {
			return a
		}
	}
	return nil
}

// senderPower is the power level of e's sender according to e's auth
// events, for ordering power events.
func (s *v2Resolver) senderPower(e *Event) int64 {
	if p, ok := s.powerCache[e.id]; ok {
		return p
	}
	p := s.computeSenderPower(e)
	s.powerCache[e.id] = p
	return p
}

func (s *v2Resolver) computeSenderPower(e *Event) int64 {
	create := s.authEventOfType(e, spec.MRoomCreate)
	if create != nil && s.r.gmsl.PrivilegedCreators() {
		// Room creators outrank everyone, whatever the power levels say.
		if slices.Contains(gmsl.CreatorsFromCreateEvent(create.pdu), e.sender) {
			return math.MaxInt64
		}
	}
	pl := s.authEventOfType(e, spec.MRoomPowerLevels)
	if pl == nil {
		// Without power levels the creator has 100 and everyone else 0.
		if create != nil && create.sender == e.sender {
			return 100
		}
		return 0
	}
	content, err := gmsl.NewPowerLevelContentFromEvent(pl.pdu)
	if err != nil {
		return 0
	}
	return content.UserLevel(spec.SenderID(e.sender))
}

// reverseTopologicalPowerOrder sorts the events with the given IDs so that
// every event comes after its auth events, choosing at each step the event
// whose sender has the most power, then the earliest, then the smallest ID
// (Kahn's algorithm, as the spec describes).
func (s *v2Resolver) reverseTopologicalPowerOrder(ids map[string]bool) []*Event {
	// waiting counts, per event, its auth events still to be placed;
	// dependents lists the reverse edges.
	waiting := make(map[string]int, len(ids))
	dependents := make(map[string][]string)
	for id := range ids {
		e := s.events[id]
		waiting[id] = 0
		for _, a := range e.auth {
			if ids[a] {
				waiting[id]++
				dependents[a] = append(dependents[a], id)
			}
		}
	}
	ready := &eventHeap{less: func(x, y *Event) bool {
		return cmp.Or(
			cmp.Compare(s.senderPower(y), s.senderPower(x)),
			cmp.Compare(x.ts, y.ts),
			cmp.Compare(x.id, y.id),
		) < 0
	}}
	for id, n := range waiting {
		if n == 0 {
			heap.Push(ready, s.events[id])
		}
	}
	out := make([]*Event, 0, len(ids))
	for ready.Len() > 0 {
		e := heap.Pop(ready).(*Event)
		out = append(out, e)
		for _, d := range dependents[e.id] {
			if waiting[d]--; waiting[d] == 0 {
				heap.Push(ready, s.events[d])
			}
		}
	}
	return out
}

// mainlineOrder sorts events by their position relative to the mainline of
// the power levels event pl (earliest first), then by timestamp and ID.
func (s *v2Resolver) mainlineOrder(pl *Event, events []*Event) []*Event {
	// The mainline: pl, then the power levels in its auth events, and so
	// on back to the start of the room. Position 0 is pl itself.
	mainline := make(map[string]int)
	for i, p := 0, pl; p != nil; i, p = i+1, s.authEventOfType(p, spec.MRoomPowerLevels) {
		if _, seen := mainline[p.id]; seen {
			break // a cycle can only come from bad input
		}
		mainline[p.id] = i
	}
	position := func(e *Event) int {
		seen := make(map[string]bool)
		for p := s.authEventOfType(e, spec.MRoomPowerLevels); p != nil && !seen[p.id]; p = s.authEventOfType(p, spec.MRoomPowerLevels) {
			if i, ok := mainline[p.id]; ok {
				return i
			}
			seen[p.id] = true
		}
		return math.MaxInt // not based on the mainline at all: sorts first
	}
	type keyed struct {
		e   *Event
		pos int
	}
	ks := make([]keyed, len(events))
	for i, e := range events {
		ks[i] = keyed{e, position(e)}
	}
	slices.SortFunc(ks, func(x, y keyed) int {
		// A greater position means based on an older power levels event,
		// which comes first.
		return cmp.Or(cmp.Compare(y.pos, x.pos), cmp.Compare(x.e.ts, y.e.ts), cmp.Compare(x.e.id, y.e.id))
	})
	out := make([]*Event, len(ks))
	for i, k := range ks {
		out[i] = k.e
	}
	return out
}

// iterativeAuthChecks applies each event to state if the auth rules allow
// it there. State the rules need but state lacks is taken from the event's
// own auth events.
func (s *v2Resolver) iterativeAuthChecks(state map[StateKey]*Event, events []*Event) {
	for _, e := range events {
		if !e.IsState() {
			continue // only a broken auth chain can lead here
		}
		provider, err := gmsl.NewAuthEvents(nil)
		if err != nil {
			continue
		}
		for _, t := range gmsl.StateNeededForAuth([]gmsl.PDU{e.pdu}).Tuples() {
			k := StateKey{t.EventType, t.StateKey}
			a := state[k]
			if a == nil {
				a = s.authEventFor(e, k)
			}
			if a != nil {
				_ = provider.AddEvent(a.pdu) // only fails for non-state events
			}
		}
		if gmsl.Allowed(e.pdu, provider, userIDForSender) == nil {
			state[StateKey{e.typ, *e.stateKey}] = e
		}
	}
}

// authEventFor returns the event among e's auth events that holds state k.
func (s *v2Resolver) authEventFor(e *Event, k StateKey) *Event {
	for _, id := range e.auth {
		if a := s.events[id]; a != nil && a.typ == k.Type && a.stateKey != nil && *a.stateKey == k.StateKey {
			return a
		}
	}
	return nil
}

func stateList(m map[StateKey]*Event) []*Event {
	out := make([]*Event, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	return out
}

// eventHeap is a priority queue of events under less.
type eventHeap struct {
	events []*Event
	less   func(x, y *Event) bool
}

func (h *eventHeap) Len() int           { return len(h.events) }
func (h *eventHeap) Less(i, j int) bool { return h.less(h.events[i], h.events[j]) }
func (h *eventHeap) Swap(i, j int)      { h.events[i], h.events[j] = h.events[j], h.events[i] }
func (h *eventHeap) Push(x any)         { h.events = append(h.events, x.(*Event)) }
func (h *eventHeap) Pop() any {
	e := h.events[len(h.events)-1]
	h.events = h.events[:len(h.events)-1]
	return e
}
