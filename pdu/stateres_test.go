package pdu

import (
	"maps"
	"slices"
	"testing"
)

func powerLevels(t *testing.T, version string, bobLevel, stateDefault int) Proto {
	users := map[string]int{alice: 100, bob: bobLevel}
	if version == "12" {
		delete(users, alice) // creators may not be listed in v12
	}
	return Proto{Sender: alice, Type: "m.room.power_levels", StateKey: ptr(""), Content: mustJSON(t, map[string]any{
		"users": users, "users_default": 0, "state_default": stateDefault, "events_default": 0,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
	})}
}

// forkPowerLevels builds a room where bob (power 50) and alice (the
// creator, 100) change the power levels concurrently: alice demotes bob to
// 0, bob lowers state_default. Both changes are allowed on their own branch.
func forkPowerLevels(t *testing.T, version string) (r *testRoom, demote, lower *Event) {
	r = newTestRoom(t, version)
	r.mustAccept(member(alice, alice, "join"))
	r.mustAccept(powerLevels(t, version, 50, 50))
	r.mustAccept(Proto{Sender: alice, Type: "m.room.join_rules", StateKey: ptr(""), Content: []byte(`{"join_rule":"public"}`)})
	r.mustAccept(member(bob, bob, "join"))

	// Both branches start from the same event and state.
	demote = r.build(powerLevels(t, version, 0, 50))
	lowerProto := powerLevels(t, version, 50, 40)
	lowerProto.Sender = bob
	lower = r.build(lowerProto)
	for _, e := range []*Event{demote, lower} {
		if err := Allowed(e, r.state); err != nil {
			t.Fatalf("v%s: %s's power levels not allowed on its branch: %v", version, e.Sender(), err)
		}
	}
	return r, demote, lower
}

func TestResolveStateConflictedPowerLevels(t *testing.T) {
	for _, version := range []string{"1", "2", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			r, demote, lower := forkPowerLevels(t, version)
			setA := stateWith(r.state, demote)
			setB := stateWith(r.state, lower)
			got, err := ResolveState(version, [][]*Event{setA, setB}, r.events)
			if err != nil {
				t.Fatal(err)
			}
			// Alice outranks bob, and once bob is demoted his own change is
			// no longer allowed, so alice's power levels win under every
			// algorithm.
			want := stateWith(r.state, demote)
			if !slices.Equal(ids(got), ids(want)) {
				t.Errorf("resolved state %v\nwant %v\n(alice's %s, bob's %s)", ids(got), ids(want), demote.ID(), lower.ID())
			}
			// Resolution does not depend on the order of the state sets.
			again, err := ResolveState(version, [][]*Event{setB, setA}, r.events)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(again), ids(got)) {
				t.Errorf("swapping state sets changed the result: %v vs %v", ids(again), ids(got))
			}
		})
	}
}

func TestResolveStateTrivial(t *testing.T) {
	r := newTestRoom(t, "10")
	r.mustAccept(member(alice, alice, "join"))
	set := slices.Collect(maps.Values(r.state))

	got, err := ResolveState("10", [][]*Event{set}, nil)
	if err != nil || !slices.Equal(ids(got), ids(sortState(slices.Clone(set)))) {
		t.Errorf("one state set: %v, %v", ids(got), err)
	}
	got, err = ResolveState("10", [][]*Event{set, set}, r.events)
	if err != nil || !slices.Equal(ids(got), ids(sortState(slices.Clone(set)))) {
		t.Errorf("two equal state sets: %v, %v", ids(got), err)
	}
	if got, err := ResolveState("10", nil, nil); err != nil || len(got) != 0 {
		t.Errorf("no state sets: %v, %v", got, err)
	}
}

func TestResolveStateRejectsBadInput(t *testing.T) {
	r := newTestRoom(t, "10")
	r.mustAccept(member(alice, alice, "join"))
	msg := r.mustAccept(message(alice, "x"))
	set := slices.Collect(maps.Values(r.state))
	tests := []struct {
		name    string
		version string
		sets    [][]*Event
	}{
		{"unknown version", "99", [][]*Event{set, set}},
		{"wrong version", "11", [][]*Event{set, set}},
		{"message event", "10", [][]*Event{set, append(slices.Clone(set), msg)}},
		{"nil event", "10", [][]*Event{set, {nil}}},
	}
	for _, tt := range tests {
		if _, err := ResolveState(tt.version, tt.sets, r.events); err == nil {
			t.Errorf("%s: ResolveState succeeded", tt.name)
		}
	}
}

// stateWith returns the state s with e applied, as a sorted list.
func stateWith(s memState, e *Event) []*Event {
	m := maps.Clone(s)
	m[StateKey{e.Type(), *e.StateKey()}] = e
	return sortState(slices.Collect(maps.Values(m)))
}

func ids(events []*Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type() + "/" + *e.StateKey() + "=" + e.ID()
	}
	return out
}

// forkTwo builds two events on concurrent branches after the room's current
// last event, each allowed on its own branch.
func forkTwo(t *testing.T, r *testRoom, a, b Proto) (*Event, *Event) {
	t.Helper()
	ea, eb := r.build(a), r.build(b)
	for _, e := range []*Event{ea, eb} {
		if err := Allowed(e, r.state); err != nil {
			t.Fatalf("v%s: %s from %s not allowed on its branch: %v", r.version, e.Type(), e.Sender(), err)
		}
	}
	return ea, eb
}

func TestResolveStateBanBeatsConcurrentMemberUpdate(t *testing.T) {
	for _, version := range []string{"1", "2", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			r := newTestRoom(t, version)
			r.mustAccept(member(alice, alice, "join"))
			r.mustAccept(powerLevels(t, version, 0, 50))
			r.mustAccept(Proto{Sender: alice, Type: "m.room.join_rules", StateKey: ptr(""), Content: []byte(`{"join_rule":"public"}`)})
			r.mustAccept(member(bob, bob, "join"))
			rename := member(bob, bob, "join")
			rename.Content = []byte(`{"membership":"join","displayname":"Bob"}`)
			ban, renamed := forkTwo(t, r, member(alice, bob, "ban"), rename)

			got, err := ResolveState(version, [][]*Event{stateWith(r.state, renamed), stateWith(r.state, ban)}, r.events)
			if err != nil {
				t.Fatal(err)
			}
			if want := stateWith(r.state, ban); !slices.Equal(ids(got), ids(want)) {
				t.Errorf("resolved %v\nwant %v", ids(got), ids(want))
			}
		})
	}
}

func TestResolveStateLaterTopicWins(t *testing.T) {
	// Not power events, so v2 orders them by mainline position and then by
	// timestamp: the later one is applied last and wins.
	for _, version := range []string{"2", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			r := newTestRoom(t, version)
			r.mustAccept(member(alice, alice, "join"))
			r.mustAccept(powerLevels(t, version, 50, 50))
			r.mustAccept(Proto{Sender: alice, Type: "m.room.join_rules", StateKey: ptr(""), Content: []byte(`{"join_rule":"public"}`)})
			r.mustAccept(member(bob, bob, "join"))
			first, second := forkTwo(t, r,
				Proto{Sender: alice, Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"alice's"}`)},
				Proto{Sender: bob, Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"bob's"}`)})
			if first.OriginServerTS() >= second.OriginServerTS() {
				t.Fatal("test room timestamps do not increase")
			}
			got, err := ResolveState(version, [][]*Event{stateWith(r.state, first), stateWith(r.state, second)}, r.events)
			if err != nil {
				t.Fatal(err)
			}
			if want := stateWith(r.state, second); !slices.Equal(ids(got), ids(want)) {
				t.Errorf("resolved %v\nwant %v", ids(got), ids(want))
			}
		})
	}
}

// Our v2 steps (used for v12's v2.1) must agree with GMSL's v2 where GMSL
// works, that is for room versions before 12.
func TestOwnResolverAgreesWithGMSL(t *testing.T) {
	for _, version := range []string{"10", "11"} {
		r, demote, lower := forkPowerLevels(t, version)
		// A second round of conflict on top: a topic per branch.
		topicA := r.build(Proto{Sender: alice, Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"a"}`)})
		stateA, stateB := stateWith(r.state, demote), stateWith(r.state, lower)
		stateA = append(stateA, topicA)
		sets := [][]*Event{stateA, stateB}
		all := append(slices.Clone(r.events), demote, lower, topicA)

		viaGMSL, err := ResolveState(version, sets, all)
		if err != nil {
			t.Fatal(err)
		}
		known := make(map[string]*Event)
		for _, e := range all {
			known[e.ID()] = e
		}
		ours := sortState(resolveV2(versions[version], sets, known, false))
		if !slices.Equal(ids(ours), ids(viaGMSL)) {
			t.Errorf("v%s: own v2\n%v\nGMSL v2\n%v", version, ids(ours), ids(viaGMSL))
		}
	}
}

// synthetic makes a bare event for testing the graph algorithms.
func synthetic(id, typ string, ts int64, auth ...string) *Event {
	return &Event{id: id, typ: typ, stateKey: ptr(""), ts: ts, auth: auth}
}

func TestConflictedStateSubgraph(t *testing.T) {
	// Auth edges: c1 -> x -> y -> c2, c1 -> z (a dead end), x -> w -> base.
	events := map[string]*Event{}
	for _, e := range []*Event{
		synthetic("c1", "t", 0, "x", "z"),
		synthetic("x", "t", 0, "y", "w"),
		synthetic("y", "t", 0, "c2"),
		synthetic("c2", "t", 0, "base"),
		synthetic("z", "t", 0),
		synthetic("w", "t", 0, "base"),
		synthetic("base", "t", 0),
	} {
		events[e.id] = e
	}
	sets := [][]*Event{{events["c1"], events["c2"]}, {events["c1"], events["c2"]}}
	conflicted := map[string]bool{"c1": true, "c2": true}
	for _, tt := range []struct {
		v21  bool
		want []string
	}{
		{false, []string{"c1", "c2"}},
		{true, []string{"c1", "c2", "x", "y"}},
	} {
		s := &v2Resolver{r: versions["12"], events: events, v21: tt.v21}
		got := slices.Sorted(maps.Keys(s.fullConflictedSet(sets, conflicted)))
		if !slices.Equal(got, tt.want) {
			t.Errorf("v2.1=%v: full conflicted set %v, want %v", tt.v21, got, tt.want)
		}
	}
}

func TestMainlineOrder(t *testing.T) {
	// Power levels p2 -> p1 -> p0 form the mainline of p2.
	const pl = "m.room.power_levels"
	events := map[string]*Event{}
	for _, e := range []*Event{
		synthetic("p0", pl, 0),
		synthetic("p1", pl, 0, "p0"),
		synthetic("p2", pl, 0, "p1"),
		synthetic("side", pl, 0, "p1"), // off the mainline, based on p1
		synthetic("a", "t", 50, "p1"),
		synthetic("b", "t", 20, "p2"),
		synthetic("c", "t", 90),
		synthetic("d", "t", 10, "p2"),
		synthetic("e", "t", 10, "side"),
	} {
		events[e.id] = e
	}
	s := &v2Resolver{r: versions["12"], events: events}
	in := []*Event{events["a"], events["b"], events["c"], events["d"], events["e"]}
	var got []string
	for _, e := range s.mainlineOrder(events["p2"], in) {
		got = append(got, e.id)
	}
	// c cites no power levels (position ∞), a and e are based on p1
	// (position 1; e is earlier), b and d on p2 (position 0; d is earlier).
	if want := []string{"c", "e", "a", "d", "b"}; !slices.Equal(got, want) {
		t.Errorf("mainline order %v, want %v", got, want)
	}
}

// The order of the state sets does not change the result, also when a key
// is missing from one set (a topic set on one branch only).
func TestResolveStateOrderIndependent(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		r, demote, lower := forkPowerLevels(t, version)
		topicA := r.build(Proto{Sender: alice, Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"a"}`)})
		stateA, stateB := stateWith(r.state, demote), stateWith(r.state, lower)
		stateA = append(stateA, topicA)
		all := append(slices.Clone(r.events), demote, lower, topicA)
		ab, err := ResolveState(version, [][]*Event{stateA, stateB}, all)
		if err != nil {
			t.Fatal(err)
		}
		ba, err := ResolveState(version, [][]*Event{stateB, stateA}, all)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(ab), ids(ba)) {
			t.Errorf("v%s: [A,B] gives\n%v\n[B,A] gives\n%v", version, ids(ab), ids(ba))
		}
	}
}
