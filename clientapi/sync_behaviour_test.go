package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// Behaviours of /sync that Synapse has and clients rely on.

func TestSyncRejectedInviteInLeave(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(bob, map[string]any{"invite": []string{alice.ID}})
	r := sySync(t, s, alice, "")
	if _, ok := r.Rooms.Invite[room]; !ok {
		t.Fatalf("no invite: %s", r.Raw)
	}
	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/leave"), alice.Token, map[string]any{})
	r = sySync(t, s, alice, sySince(r.NextBatch))
	lr, ok := r.Rooms.Leave[room]
	if !ok {
		t.Fatalf("rejected invite not in rooms.leave: %s", r.Raw)
	}
	if _, ok := r.Rooms.Invite[room]; ok {
		t.Fatalf("rejected invite still in rooms.invite: %s", r.Raw)
	}
	last, ok := syFind(lr.Timeline.Events, "m.room.member")
	if !ok || last.StateKey == nil || *last.StateKey != alice.ID || last.Content["membership"] != "leave" {
		t.Fatalf("leave section lacks alice's leave: %s", r.Raw)
	}
	for _, e := range append(lr.Timeline.Events, lr.State.Events...) {
		if e.Type == "m.room.create" || e.Type == "m.room.power_levels" {
			t.Fatalf("an invitee who never joined sees %s: %s", e.Type, r.Raw)
		}
	}
}

// TestSyncRejectedRemoteInviteInLeave rejects an invite to a room of
// another server, which goes through that server.
func TestSyncRejectedRemoteInviteInLeave(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreateRoom(alice, map[string]any{"invite": []string{bob.ID}})
	var r syResponse
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r = sySync(t, b, bob, ""); len(r.Rooms.Invite) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if _, ok := r.Rooms.Invite[room]; !ok {
		t.Fatalf("no invite: %s", r.Raw)
	}
	b.MustDo(http.StatusOK, "POST", syRoomPath(room, "/leave"), bob.Token, map[string]any{})
	r = sySync(t, b, bob, sySince(r.NextBatch))
	lr, ok := r.Rooms.Leave[room]
	if !ok {
		t.Fatalf("rejected invite not in rooms.leave: %s", r.Raw)
	}
	if e, ok := syFind(lr.Timeline.Events, "m.room.member"); !ok || e.Content["membership"] != "leave" {
		t.Fatalf("leave section lacks bob's leave: %s", r.Raw)
	}
}

func TestSyncInviteFromIgnoredUserHidden(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]
	s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.ignored_user_list", alice.Token,
		map[string]any{"ignored_users": map[string]any{bob.ID: map[string]any{}}})
	since := sySync(t, s, alice, "").NextBatch
	ignored := s.CreateRoom(bob, map[string]any{"invite": []string{alice.ID}})
	welcome := s.CreateRoom(carol, map[string]any{"invite": []string{alice.ID}})
	for _, q := range []string{"", sySince(since)} {
		r := sySync(t, s, alice, q)
		if _, ok := r.Rooms.Invite[ignored]; ok {
			t.Fatalf("invite from an ignored user served (query %q): %s", q, r.Raw)
		}
		if _, ok := r.Rooms.Invite[welcome]; !ok {
			t.Fatalf("invite from carol missing (query %q): %s", q, r.Raw)
		}
	}
}

func TestSyncPresenceOfNewlySharedUsers(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]
	for _, x := range []testserver.User{bob, carol} {
		s.MustDo(http.StatusOK, "PUT", v3+"/presence/"+url.PathEscape(x.ID)+"/status", x.Token,
			map[string]any{"presence": "online", "status_msg": "hi from " + x.ID})
	}
	room := s.CreateRoom(bob, map[string]any{"preset": "public_chat"})
	mine := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	since := sySync(t, s, alice, "").NextBatch
	// Alice joins bob's room, and carol joins hers: both are new to her,
	// with presence set long before.
	s.Join(alice, room)
	s.Join(carol, mine)
	r := sySync(t, s, alice, sySince(since, "set_presence", "offline"))
	got := map[string]string{}
	for _, e := range r.Presence.Events {
		msg, _ := e.Content["status_msg"].(string)
		got[e.Sender] = msg
	}
	for _, x := range []testserver.User{bob, carol} {
		if got[x.ID] != "hi from "+x.ID {
			t.Fatalf("presence of %s missing: %s", x.ID, r.Raw)
		}
	}
	// Said once: the next sync does not repeat it.
	r = sySync(t, s, alice, sySince(r.NextBatch, "set_presence", "offline"))
	if len(r.Presence.Events) != 0 {
		t.Fatalf("presence repeated: %s", r.Raw)
	}
}

// TestSyncRemoteJoinedRoomTimelineLimited joins rooms over federation:
// the log here starts at the join, and the history before it, when the
// user may see it, is a gap the timeline must own to.
func TestSyncRemoteJoinedRoomTimelineLimited(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	hidden := []any{map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}
	shared := a.CreatePublicRoom(alice)
	private := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "initial_state": hidden})
	for _, room := range []string{shared, private} {
		for i := range 3 {
			a.SendText(alice, room, fmt.Sprintf("before bob %d", i))
		}
	}
	since := sySync(t, b, bob, "").NextBatch
	for _, room := range []string{shared, private} {
		b.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})
	}
	r := sySync(t, b, bob, sySince(since))
	jr, ok := r.Rooms.Join[shared]
	if !ok {
		t.Fatalf("joined room missing: %s", r.Raw)
	}
	if !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
		t.Fatalf("timeline of a room joined over federation, with shared history, not limited: %s", r.Raw)
	}
	// Nothing before the join is bob's to see there: his join begins it.
	if jr := r.Rooms.Join[private]; jr.Timeline.Limited {
		t.Fatalf("timeline of a room whose history is hidden from bob is limited: %v", syKeys(jr.Timeline.Events))
	}
}

func TestSyncInitialHasPushRules(t *testing.T) {
	s := testserver.Start(t, "")
	alice := syUsers(s, "alice")[0]
	r := sySync(t, s, alice, "")
	ev, ok := syFind(r.AccountData.Events, "m.push_rules")
	if !ok {
		t.Fatalf("no m.push_rules in account_data: %s", r.Raw)
	}
	global, _ := ev.Content["global"].(map[string]any)
	if override, _ := global["override"].([]any); len(override) == 0 {
		t.Fatalf("m.push_rules without the default rules: %s", r.Raw)
	}
}

func TestSyncUnsignedMembership(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(bob, map[string]any{"preset": "public_chat"})
	before := s.SendText(bob, room, "before alice")
	s.Join(alice, room)
	after := s.SendText(bob, room, "with alice")
	want := map[string]string{before: "leave", after: "join"}

	r := sySync(t, s, alice, "")
	check := func(where string, evs []syEvent) {
		t.Helper()
		n := 0
		for _, e := range evs {
			if m, ok := want[e.EventID]; ok {
				n++
				if e.Unsigned["membership"] != m {
					t.Fatalf("%s: unsigned.membership of %s is %v, want %s", where, e.EventID, e.Unsigned["membership"], m)
				}
			}
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == alice.ID && e.Unsigned["membership"] != "join" {
				t.Fatalf("%s: alice's join has unsigned.membership %v", where, e.Unsigned["membership"])
			}
		}
		if n != len(want) {
			t.Fatalf("%s: found %d of the events", where, n)
		}
	}
	check("/sync", r.Rooms.Join[room].Timeline.Events)
	check("/messages", syMessages(t, s, alice, room, url.Values{"dir": {"b"}, "limit": {"20"}}).Chunk)
	ev := s.MustDo(http.StatusOK, "GET", syRoomPath(room, "/event/"+url.PathEscape(before)), alice.Token, nil)
	if m, _ := ev.JSON["unsigned"].(map[string]any); m["membership"] != "leave" {
		t.Fatalf("/event: %s", ev.Body)
	}
	var c struct {
		Before []syEvent `json:"events_before"`
		Event  syEvent   `json:"event"`
		After  []syEvent `json:"events_after"`
	}
	body := s.MustDo(http.StatusOK, "GET", syRoomPath(room, "/context/"+url.PathEscape(before)+"?limit=10"), alice.Token, nil).Body
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	check("/context", append(append(c.Before, c.Event), c.After...))
}

// TestSyncNoEventTwiceWhileRoomsAreCreated follows a chain of incremental
// syncs while rooms are created (each a burst of events committed one by
// one): no event may be served twice, in a timeline or a state section.
func TestSyncNoEventTwiceWhileRoomsAreCreated(t *testing.T) {
	for _, tc := range []struct {
		name, filter string
		lazy         bool
	}{
		{"plain", `{"room":{"timeline":{"limit":5}}}`, false},
		{"lazy", `{"room":{"timeline":{"limit":5},"state":{"lazy_load_members":true}}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testserver.Start(t, "")
			u := syUsers(s, "alice", "bob")
			alice, bob := u[0], u[1]
			since := sySync(t, s, alice, syFilterQuery(tc.filter)).NextBatch
			const rounds = 12
			var wg sync.WaitGroup
			errs := make(chan error, 2*rounds)
			for i, creator := range []testserver.User{alice, bob} {
				other := u[1-i]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range rounds {
						status, body, err := syDo(s, s.Client, "POST", v3+"/createRoom", creator.Token, map[string]any{
							"preset": "public_chat", "name": "hammered", "topic": "t", "invite": []string{other.ID},
						})
						if err == nil && status != http.StatusOK {
							err = fmt.Errorf("createRoom: %d %s", status, body)
						}
						if err == nil && creator == bob {
							// Alice joins at once: her syncs meet the room
							// whole, as it is being written.
							var id struct {
								RoomID string `json:"room_id"`
							}
							_ = json.Unmarshal(body, &id)
							if status, body, err = syDo(s, s.Client, "POST", syRoomPath(id.RoomID, "/join"), alice.Token, map[string]any{}); err == nil && status != http.StatusOK {
								err = fmt.Errorf("join: %d %s", status, body)
							}
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			seen := map[string]string{}
			note := func(where string, evs []syEvent, raw []byte, lazyState bool) {
				for _, e := range evs {
					if lazyState && e.Type == "m.room.member" {
						// Lazy loading may send a member again (the
						// spec's redundant membership events).
						continue
					}
					if prev, ok := seen[e.EventID]; ok {
						t.Fatalf("%s served again in %s (first in %s): %s", e.EventID, where, prev, raw)
					}
					seen[e.EventID] = where
				}
			}
			for i, finished := 0, false; !finished; i++ {
				select {
				case <-done:
					finished = true // one more sync collects the rest
				default:
				}
				r := sySync(t, s, alice, sySince(since, "filter", tc.filter))
				for id, jr := range r.Rooms.Join {
					note(fmt.Sprintf("sync %d state of %s", i, id), jr.State.Events, r.Raw, tc.lazy)
					note(fmt.Sprintf("sync %d timeline of %s", i, id), jr.Timeline.Events, r.Raw, false)
				}
				since = r.NextBatch
			}
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if len(seen) == 0 {
				t.Fatal("no event served")
			}
		})
	}
}

// An ignored user's messages are not served, by /sync or /messages; their
// state events are (the room must not look different), and un-ignoring
// shows their new messages again.
func TestIgnoredUsersMessagesHidden(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "power_level_content_override": map[string]any{"state_default": 0}})
	s.Join(bob, room)
	ignore := func(users map[string]any) {
		s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.ignored_user_list", alice.Token,
			map[string]any{"ignored_users": users})
	}
	ignore(map[string]any{bob.ID: map[string]any{}})
	since := sySync(t, s, alice, "").NextBatch
	hidden := s.SendText(bob, room, "you cannot see me")
	topic := s.MustDo(http.StatusOK, "PUT", syRoomPath(room, "/state/m.room.topic/"), bob.Token, map[string]any{"topic": "still shown"}).String("event_id")
	mine := s.SendText(alice, room, "mine")
	for _, q := range []string{"", sySince(since)} {
		r := sySync(t, s, alice, q)
		ids := map[string]bool{}
		for _, e := range r.Rooms.Join[room].Timeline.Events {
			ids[e.EventID] = true
		}
		if ids[hidden] || !ids[topic] || !ids[mine] {
			t.Fatalf("sync (query %q) timeline %v: want the topic and alice's message, not bob's message", q, ids)
		}
	}
	msgs := s.MustDo(http.StatusOK, "GET", syRoomPath(room, "/messages?dir=b&limit=50"), alice.Token, nil)
	if body := string(msgs.Body); strings.Contains(body, hidden) || !strings.Contains(body, topic) {
		t.Fatalf("/messages serves the ignored user's message or hides their state: %s", body)
	}
	s.MustDo(http.StatusNotFound, "GET", syRoomPath(room, "/event/"+url.PathEscape(hidden)), alice.Token, nil)
	ignore(map[string]any{})
	since = sySync(t, s, alice, "").NextBatch
	shown := s.SendText(bob, room, "visible again")
	r := sySync(t, s, alice, sySince(since))
	if e, ok := syFind(r.Rooms.Join[room].Timeline.Events, "m.room.message"); !ok || e.EventID != shown {
		t.Fatalf("message after un-ignoring not served: %s", r.Raw)
	}
}

// With lazy loading, a sender's unchanged membership is sent once per
// device: not again in later incremental syncs, but again to a sync
// retried from a token older than the answer that carried it, and always
// with include_redundant_members.
func TestLazyMembersNotRepeated(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	for i := range 3 {
		s.SendText(alice, room, fmt.Sprint("filler ", i))
	}
	const lazy = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`
	const redundant = `{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true},"timeline":{"limit":1}}}`
	bobMembers := func(r syResponse) int {
		n := 0
		for _, e := range r.Rooms.Join[room].State.Events {
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == bob.ID {
				n++
			}
		}
		return n
	}
	r0 := sySync(t, s, alice, syFilterQuery(lazy))
	if bobMembers(r0) != 0 {
		t.Fatalf("bob's membership sent before he spoke: %s", r0.Raw)
	}
	s.SendText(bob, room, "one")
	r1 := sySync(t, s, alice, sySince(r0.NextBatch, "filter", lazy))
	if bobMembers(r1) != 1 {
		t.Fatalf("bob's membership not sent with his first message: %s", r1.Raw)
	}
	s.SendText(bob, room, "two")
	r2 := sySync(t, s, alice, sySince(r1.NextBatch, "filter", lazy))
	if bobMembers(r2) != 0 {
		t.Fatalf("bob's unchanged membership sent again: %s", r2.Raw)
	}
	if r := sySync(t, s, alice, sySince(r0.NextBatch, "filter", lazy)); bobMembers(r) != 1 {
		t.Fatalf("a sync retried from before the answer that carried bob's membership lacks it: %s", r.Raw)
	}
	if r := sySync(t, s, alice, sySince(r1.NextBatch, "filter", redundant)); bobMembers(r) != 1 {
		t.Fatalf("include_redundant_members did not repeat bob's membership: %s", r.Raw)
	}
}

// Syncs racing a createRoom (as Element Web's do) may see the room in
// parts, but never deliver an event twice, with or without lazy loading.
func TestSyncDuringCreateRoomDeliversEachEventOnce(t *testing.T) {
	s := testserver.Start(t, "")
	alice := syUsers(s, "alice")[0]
	for _, f := range []string{`{}`, `{"room":{"state":{"lazy_load_members":true}}}`} {
		since := sySync(t, s, alice, syFilterQuery(f)).NextBatch
		created := make(chan string, 1)
		go func() {
			created <- s.CreateRoom(alice, map[string]any{"preset": "private_chat", "name": "racing", "topic": "t"})
		}()
		seen := map[string]int{}
		room := ""
		for done := false; !done; {
			select {
			case room = <-created:
			default:
			}
			r := sySync(t, s, alice, sySince(since, "filter", f))
			since = r.NextBatch
			for id, jr := range r.Rooms.Join {
				for _, e := range append(jr.State.Events, jr.Timeline.Events...) {
					seen[e.EventID]++
					if seen[e.EventID] > 1 {
						t.Fatalf("filter %s: event %s (%s) of %s delivered twice", f, e.EventID, e.Type, id)
					}
				}
			}
			done = room != "" && len(r.Rooms.Join[room].Timeline.Events) == 0 && len(seen) > 0
		}
	}
}
