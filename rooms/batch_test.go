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
