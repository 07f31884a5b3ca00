package storage_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"homeserver/push"
	"homeserver/storage"
)

// The unread counts read the receipts first and count a range after them
// (or after the last notification they counted, while the receipts stay);
// on random notifications and receipts (unthreaded, main, and per thread,
// some on events the server does not hold) they must equal the per-row
// check they replace, per room and in total, on either engine.
func TestUnreadCountsMatchPerRowCheck(t *testing.T) {
	db := openServerKeysDB(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(29, 1))
	users := []string{"@a:hs", "@b:hs", "@c:hs"}
	roomIDs := []string{"!r1:hs", "!r2:hs"}
	threads := []string{"main", "$t1", "$t2", "$t3"}
	for _, r := range roomIDs {
		if err := storage.ExecRaw(ctx, db, `INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, '10', '@a:hs', 0)`, r); err != nil {
			t.Fatal(err)
		}
	}
	events := func(from, to int64) []push.Notification {
		var ns []push.Notification
		for pos := from; pos <= to; pos++ {
			room := roomIDs[rng.IntN(len(roomIDs))]
			ev := fmt.Sprintf("$e%d", pos)
			if err := storage.ExecRaw(ctx, db, `INSERT INTO events (stream_pos, event_id, room_id, type, sender, depth, origin_server_ts, state_group, json)
				VALUES ($1, $2, $3, 'm.room.message', '@a:hs', $1, 0, 0, '{}')`, pos, ev, room); err != nil {
				t.Fatal(err)
			}
			thread := threads[rng.IntN(len(threads))]
			for _, u := range users {
				if rng.IntN(3) > 0 {
					ns = append(ns, push.Notification{UserID: u, RoomID: room, EventID: ev, Pos: pos, TS: pos,
						Actions: []byte(`["notify"]`), Highlight: rng.IntN(5) == 0, ThreadID: thread})
				}
			}
		}
		return ns
	}
	ns := events(1, 300)
	// In two calls, the second repeating some events: they are dropped.
	half := len(ns) / 2
	for half < len(ns) && ns[half].Pos == ns[half-1].Pos {
		half++
	}
	again := half - 1
	for again > 0 && ns[again-1].Pos >= ns[half-1].Pos-3 {
		again--
	}
	if err := db.AddNotifications(ctx, "test", ns[:half], 1); err != nil {
		t.Fatal(err)
	}
	if err := db.AddNotifications(ctx, "test", ns[again:], 2); err != nil {
		t.Fatal(err)
	}
	check := func(step int) {
		t.Helper()
		for _, u := range users {
			total := 0
			for _, r := range roomIDs {
				got, err := db.UnreadCounts(ctx, u, r)
				if err != nil {
					t.Fatal(err)
				}
				want, err := storage.CorrelatedUnreadCounts(ctx, db, u, r)
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(got, want) {
					t.Fatalf("step %d, %s in %s: counts %v, want %v", step, u, r, got, want)
				}
				for _, c := range want {
					total += c.Notifications
				}
			}
			if got, err := db.UnreadTotal(ctx, u); err != nil || got != total {
				t.Fatalf("step %d, %s: total %d, %v; want %d", step, u, got, err, total)
			}
		}
	}
	check(0)
	receiptPos := int64(1000)
	last := int64(300)
	for step := 1; step <= 60; step++ {
		// New notifications between receipts: the counts kept from the
		// last check are added to, and must still be right.
		if rng.IntN(2) == 0 {
			n := int64(1 + rng.IntN(5))
			if err := db.AddNotifications(ctx, "test", events(last+1, last+n), last+n); err != nil {
				t.Fatal(err)
			}
			last += n
			check(step)
		}
		u, r := users[rng.IntN(len(users))], roomIDs[rng.IntN(len(roomIDs))]
		typ := []string{"m.read", "m.read.private", "m.fully_read"}[rng.IntN(3)]
		thread := append([]string{"", ""}, threads...)[rng.IntN(len(threads)+2)]
		ev := fmt.Sprintf("$e%d", 1+rng.IntN(int(last)))
		if rng.IntN(10) == 0 {
			ev = "$unknown" // a receipt on an event this server does not hold covers nothing
		}
		receiptPos++
		if err := storage.ExecRaw(ctx, db, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
			VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
			event_id = excluded.event_id, stream_pos = excluded.stream_pos`, r, typ, u, thread, ev, receiptPos); err != nil {
			t.Fatal(err)
		}
		check(step)
	}
}

// The SQL test of a slot set agrees with the Go one, on either engine.
func TestSlotSetSQL(t *testing.T) {
	db := openServerKeysDB(t)
	ctx := context.Background()
	for _, slots := range [][]int{{}, {0}, {3}, {4, 7}, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {37}, {130, 131}} {
		set := storage.SlotSet(slots...)
		for n := range 140 {
			got, err := storage.SlotInSQL(ctx, db, set, n)
			if err != nil {
				t.Fatal(err)
			}
			if got != storage.SlotIn(set, n) {
				t.Fatalf("%v as %q: slot %d in SQL is %v", slots, set, n, got)
			}
		}
	}
}
