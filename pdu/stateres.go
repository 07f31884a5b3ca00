package pdu

import (
	"cmp"
	"fmt"
	"slices"

	gmsl "github.com/matrix-org/gomatrixserverlib"
)

// ResolveState resolves the given room states (each a list of state events,
// one per type and state key) into one, with the room version's algorithm:
// v1 for room version 1, v2 for 2-11 and v2.1 for 12.
//
// Room version 12 uses v2.1, implemented in this package (stateres_v2.go):
// GMSL's v2 and v2.1 both panic on v12 rooms with conflicting state, and its
// v2.1 prints debug lines to stdout. The other versions use GMSL's.
//
// authEvents must hold every event in the auth chains of the state events
// (state events themselves may be left out: they are added). No event is
// treated as rejected: events rejected by their own auth events cannot be in
// state or auth chains, and those rejected only by the state before them
// take part as usual, as the spec says.
//
// The result is sorted by type and state key, so equal inputs give equal
// outputs.
func ResolveState(version string, stateSets [][]*Event, authEvents []*Event) ([]*Event, error) {
	return safely("resolving state", func() ([]*Event, error) {
		r, err := lookupVersion(version)
		if err != nil {
			return nil, err
		}
		// Every event GMSL may hand back, by ID, to map results back to the
		// caller's *Event values.
		known := make(map[string]*Event)
		add := func(e *Event) error {
			if e == nil {
				return errNilEvent
			}
			if e.version != r.id {
				return fmt.Errorf("pdu: event %s is room version %s, resolving %s", e.id, e.version, r.id)
			}
			known[e.id] = e
			return nil
		}
		sets := make([][]gmsl.PDU, 0, len(stateSets))
		for _, set := range stateSets {
			pdus := make([]gmsl.PDU, 0, len(set))
			for _, e := range set {
				if err := add(e); err != nil {
					return nil, err
				}
				if !e.IsState() {
					return nil, fmt.Errorf("pdu: event %s in a state set is not a state event", e.id)
				}
				pdus = append(pdus, e.pdu)
			}
			sets = append(sets, pdus)
		}
		for _, e := range authEvents {
			if err := add(e); err != nil {
				return nil, err
			}
		}

		switch len(sets) {
		case 0:
			return nil, nil
		case 1:
			// Nothing to resolve; GMSL insists on at least two sets.
			return sortState(slices.Clone(stateSets[0])), nil
		}

		var resolved []gmsl.PDU
		switch r.gmsl.StateResAlgorithm() {
		case gmsl.StateResV1:
			// v1 authorises conflicted events against the unconflicted
			// state, and GMSL takes that as its "auth events": handing it
			// whole auth chains would let an arbitrary old event per type
			// and state key stand in for the current one.
			resolved, err = gmsl.ResolveConflictsNew(r.gmsl.Version(), sets, unconflictedV1(stateSets), userIDForSender, neverRejected)
			if err != nil {
				return nil, fmt.Errorf("pdu: resolving state: %w", err)
			}
		case gmsl.StateResV2:
			// v2 walks auth chains through this set, and GMSL looks state
			// events up in it as well, so it must hold both.
			auth := make([]gmsl.PDU, 0, len(known))
			for _, e := range known {
				auth = append(auth, e.pdu)
			}
			resolved = gmsl.ResolveStateConflictsV2New(gmsl.StateResV2, sets, auth, userIDForSender, neverRejected)
		default:
			return sortState(resolveV2(r, stateSets, known, true)), nil
		}
		out := make([]*Event, 0, len(resolved))
		for _, p := range resolved {
			e, ok := known[p.EventID()]
			if !ok {
				return nil, fmt.Errorf("pdu: state resolution returned unknown event %s", p.EventID())
			}
			out = append(out, e)
		}
		return sortState(out), nil
	})
}

// neverRejected tells GMSL that no auth event is rejected (see ResolveState).
func neverRejected(string) bool { return false }

// unconflictedV1 returns the state entries on which all sets that have the
// entry agree: state resolution v1's starting point.
func unconflictedV1(stateSets [][]*Event) []gmsl.PDU {
	seen := make(map[StateKey]*Event)
	conflicted := make(map[StateKey]bool)
	for _, set := range stateSets {
		for _, e := range set {
			k := StateKey{e.typ, *e.stateKey}
			if prev, ok := seen[k]; ok && prev.id != e.id {
				conflicted[k] = true
			}
			seen[k] = e
		}
	}
	var out []gmsl.PDU
	for k, e := range seen {
		if !conflicted[k] {
			out = append(out, e.pdu)
		}
	}
	return out
}

func sortState(events []*Event) []*Event {
	slices.SortFunc(events, func(a, b *Event) int {
		return cmp.Or(cmp.Compare(a.typ, b.typ), cmp.Compare(*a.stateKey, *b.stateKey), cmp.Compare(a.id, b.id))
	})
	return events
}
