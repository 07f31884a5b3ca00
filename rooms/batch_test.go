package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

// Concurrent senders share commits: the events waiting for the write lock
// are built one after another and written in one transaction. Each room's
// log must still be a chain of valid events, every send answered with its
// own event (or, for one request sent twice at once, the same event), and
// a sender who may not send fails alone.
func TestConcurrentSendsShareCommits(t *testing.T) {
	e := rtOpen(t, filepath.Join(t.TempDir(), "rooms.db"))
	ctx := context.Background()
	alice, bob, mallory := rtUser("alice"), rtUser("bob"), rtUser("mallory")
	var roomIDs []string
	for _, v := range []string{"10", "12"} {
		room := rtMust(e.svc.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: rooms.PresetPublic, RoomVersion: v})).of(t)
		rtMust(e.svc.Join(ctx, bob, room, "")).of(t)
		roomIDs = append(roomIDs, room)
	}
	before := rtMust(e.db.MaxPos(ctx)).of(t)

	const senders, each = 8, 30
	type sent struct{ room, id string }
	var mu sync.Mutex
	var got []sent
	// Two clients' retries race: the same request twice at once.
	const retried = 20
	twice := make([][2]string, retried)
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range retried {
				id, err := e.svc.Send(ctx, rooms.SendRequest{Sender: alice, RoomID: roomIDs[k%2], Type: "m.room.message",
					Content: json.RawMessage(`{"msgtype":"m.text","body":"again"}`),
					Txn:     &rooms.TxnRef{UserID: alice, Scope: "phone", Path: roomIDs[k%2] + "/send/m.room.message", TxnID: fmt.Sprint(k)}})
				if err != nil {
					t.Errorf("retried request %d: %v", k, err)
				}
				twice[k][c] = id
			}
		}()
	}
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				room := roomIDs[(g+i)%len(roomIDs)]
				sender := []string{alice, bob}[g%2]
				content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d/%d", g, i)})
				req := rooms.SendRequest{Sender: sender, RoomID: room, Type: "m.room.message", Content: content}
				if i%5 == 0 {
					req.Txn = &rooms.TxnRef{UserID: sender, Scope: fmt.Sprint("dev", g), Path: room + "/send/m.room.message", TxnID: fmt.Sprint(i)}
				}
				id, err := e.svc.Send(ctx, req)
				if err != nil {
					t.Errorf("sender %d, message %d: %v", g, i, err)
					continue
				}
				mu.Lock()
				got = append(got, sent{room, id})
				mu.Unlock()
			}
		}()
	}
	// Someone not in the rooms is refused, without failing the others.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range each {
			_, err := e.svc.Send(ctx, rooms.SendRequest{Sender: mallory, RoomID: roomIDs[i%2], Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"let me in"}`)})
			var me *mxhttp.Error
			if !errors.As(err, &me) || me.Status != 403 {
				t.Errorf("mallory's send: %v, want 403", err)
			}
		}
	}()
	wg.Wait()

	ids := map[string]bool{}
	for _, s := range got {
		ids[s.id] = true
	}
	if len(ids) != senders*each {
		t.Errorf("%d distinct events for %d sends", len(ids), senders*each)
	}
	for k, pair := range twice {
		if pair[0] == "" || pair[0] != pair[1] {
			t.Errorf("request %d sent twice: events %q and %q", k, pair[0], pair[1])
		}
	}
	// Every room's log is a chain of signed, allowed events.
	total := 0
	for i, room := range roomIDs {
		version := []string{"10", "12"}[i]
		evs := rtMust(e.db.RoomEvents(ctx, room, 0, math.MaxInt64, true, 10_000)).of(t)
		for j := 1; j < len(evs); j++ {
			ev := rtMust(pdu.Parse(version, evs[j].JSON)).of(t)
			if p := ev.PrevEventIDs(); !slices.Equal(p, []string{evs[j-1].EventID}) || ev.Depth() != evs[j-1].Depth+1 {
				t.Fatalf("room %s event %d: prev_events %v depth %d after %s at %d", room, j, p, ev.Depth(), evs[j-1].EventID, evs[j-1].Depth)
			}
			if err := pdu.VerifySignature(ev, rtServer, e.key.ID, e.key.Public()); err != nil {
				t.Fatalf("room %s event %d: %v", room, j, err)
			}
			if evs[j].Pos > before {
				total++
			}
		}
	}
	if total != senders*each+retried {
		t.Errorf("%d events written, want %d", total, senders*each+retried)
	}
	if after := rtMust(e.db.MaxPos(ctx)).of(t); after-before != int64(total) {
		t.Errorf("the log grew by %d for %d events", after-before, total)
	}
}

// State events share commits too, and an event after a state event in
// the same batch is authorised against the state it made: a ban keeps
// the banned user's next message out, a join lets the joiner's first
// message in. The events are lined up behind the write lock, in order,
// so that they are written as one batch.
func TestStateChangesWithinABatch(t *testing.T) {
	e := rtOpen(t, filepath.Join(t.TempDir(), "rooms.db"))
	ctx := context.Background()
	alice, bob, mallory, carol := rtUser("alice"), rtUser("bob"), rtUser("mallory"), rtUser("carol")
	room := rtMust(e.svc.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: rooms.PresetPublic, RoomVersion: "10"})).of(t)
	rtMust(e.svc.Join(ctx, bob, room, "")).of(t)
	rtMust(e.svc.Join(ctx, mallory, room, "")).of(t)
	message := func(sender string) error {
		_, err := e.svc.Send(ctx, rooms.SendRequest{Sender: sender, RoomID: room, Type: "m.room.message",
			Content: json.RawMessage(`{"msgtype":"m.text","body":"hello"}`)})
		return err
	}
	topic := ""
	steps := []struct {
		name string
		run  func() error
		want int // 0: allowed, else the status
	}{
		{"alice bans mallory", func() error { return e.svc.Ban(ctx, alice, room, mallory, "") }, 0},
		{"mallory speaks", func() error { return message(mallory) }, 403},
		{"carol joins", func() error { _, err := e.svc.Join(ctx, carol, room, ""); return err }, 0},
		{"carol speaks", func() error { return message(carol) }, 0},
		{"alice sets the topic", func() error {
			_, err := e.svc.Send(ctx, rooms.SendRequest{Sender: alice, RoomID: room, Type: "m.room.topic", StateKey: &topic,
				Content: json.RawMessage(`{"topic":"batched"}`)})
			return err
		}, 0},
		{"bob speaks", func() error { return message(bob) }, 0},
	}
	before := rtMust(e.db.MaxPos(ctx)).of(t)
	queued, release := e.svc.HoldWrites()
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, st := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.run()
		}()
		for deadline := time.Now().Add(10 * time.Second); queued() < i+1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				release()
				t.Fatalf("%s: not queued", st.name)
			}
		}
	}
	release()
	wg.Wait()
	for i, st := range steps {
		var me *mxhttp.Error
		switch {
		case st.want == 0 && errs[i] != nil:
			t.Errorf("%s: %v", st.name, errs[i])
		case st.want != 0 && (!errors.As(errs[i], &me) || me.Status != st.want):
			t.Errorf("%s: %v, want %d", st.name, errs[i], st.want)
		}
	}
	if after := rtMust(e.db.MaxPos(ctx)).of(t); after-before != 5 {
		t.Errorf("the log grew by %d, want 5 events", after-before)
	}
	rtCheckLog(t, e, room, "10")
	members := rtMust(e.svc.JoinedUserIDs(ctx, room)).of(t)
	slices.Sort(members)
	if want := []string{alice, bob, carol}; !slices.Equal(members, want) {
		t.Errorf("members %v, want %v", members, want)
	}
}

// Many joins at once, with messages and state between them: every event
// in the log is allowed by the state before it, and the state each one
// records is that state with it applied.
func TestConcurrentJoinsShareCommits(t *testing.T) {
	e := rtOpen(t, filepath.Join(t.TempDir(), "rooms.db"))
	ctx := context.Background()
	alice := rtUser("alice")
	room := rtMust(e.svc.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: rooms.PresetPublic, RoomVersion: "12"})).of(t)
	const joiners = 40
	var wg sync.WaitGroup
	for i := range joiners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := rtUser(fmt.Sprint("joiner", i))
			if _, err := e.svc.Join(ctx, user, room, ""); err != nil {
				t.Errorf("%s joins: %v", user, err)
				return
			}
			if _, err := e.svc.Send(ctx, rooms.SendRequest{Sender: user, RoomID: room, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)}); err != nil {
				t.Errorf("%s speaks: %v", user, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 10 {
			name := ""
			content, _ := json.Marshal(map[string]any{"name": fmt.Sprint("room ", i)})
			if _, err := e.svc.Send(ctx, rooms.SendRequest{Sender: alice, RoomID: room, Type: "m.room.name", StateKey: &name, Content: content}); err != nil {
				t.Errorf("name %d: %v", i, err)
			}
		}
	}()
	wg.Wait()
	rtCheckLog(t, e, room, "12")
	if members := rtMust(e.svc.JoinedUserIDs(ctx, room)).of(t); len(members) != joiners+1 {
		t.Errorf("%d members, want %d", len(members), joiners+1)
	}
}

// rtCheckLog checks a room's log (rtVerifyRoom: a chain of signed
// events, each allowed by the state recorded before it) and that the state
// recorded after each event is what the events up to it make.
func rtCheckLog(t *testing.T, e *rtEnv, room, version string) {
	t.Helper()
	rtVerifyRoom(t, e, room, version)
	ctx := context.Background()
	state := map[pdu.StateKey]string{}
	for j, st := range rtMust(e.db.RoomEvents(ctx, room, 0, math.MaxInt64, true, 10_000)).of(t) {
		if st.StateKey != nil {
			state[pdu.StateKey{Type: st.Type, StateKey: *st.StateKey}] = st.EventID
		}
		var keys []pdu.StateKey
		for k := range state {
			keys = append(keys, k)
		}
		recorded := rtMust(e.db.StateAt(ctx, st.StateGroup, keys)).of(t)
		if len(recorded) != len(state) {
			t.Fatalf("event %d: its state group holds %d of the %d state events", j, len(recorded), len(state))
		}
		for _, r := range recorded {
			if want := state[pdu.StateKey{Type: r.Type, StateKey: r.StateKey}]; r.EventID != want {
				t.Fatalf("event %d: its state has %s at (%s, %s), want %s", j, r.EventID, r.Type, r.StateKey, want)
			}
		}
	}
}
