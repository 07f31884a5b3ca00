package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"

	"homeserver/push"
)

// Migration 37 regroups notifications by event and back: down to 36 gives
// every user's row as it was written, and up again gives the same counts,
// pages and actions.
func TestMigrateEventNotificationsRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	db, err := Open(ctx, Options{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	var ns []push.Notification
	users := []string{"@a:x", "@b:x", "@c:x", "@d:x", "@e:x"}
	for pos := int64(1); pos <= 40; pos++ {
		room := []string{"!r1:x", "!r2:x"}[pos%2]
		for i, u := range users {
			if (int(pos)+i)%3 == 0 {
				continue
			}
			actions := `["notify"]`
			if i == 2 {
				actions = `["notify",{"set_tweak":"sound","value":"default"}]`
			}
			ns = append(ns, push.Notification{UserID: u, RoomID: room, EventID: "$e" + string(rune('A'+pos)), Pos: pos, TS: pos * 10,
				Actions: json.RawMessage(actions), Highlight: (int(pos)+i)%7 == 0, ThreadID: []string{"main", "$t"}[pos%3/2]})
		}
	}
	if err := db.AddNotifications(ctx, "test", ns, 40); err != nil {
		t.Fatal(err)
	}
	page := func(db *DB) map[string][]push.Notification {
		t.Helper()
		out := map[string][]push.Notification{}
		for _, u := range users {
			got, err := db.Notifications(ctx, u, 0, 100, false)
			if err != nil {
				t.Fatal(err)
			}
			out[u] = got
		}
		return out
	}
	before := page(db)
	// Pages of three, merged from both rooms, and the highlights alone,
	// give the same notifications in the same order.
	for _, u := range users {
		var paged []push.Notification
		for from := int64(0); ; {
			got, err := db.Notifications(ctx, u, from, 3, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				break
			}
			paged, from = append(paged, got...), got[len(got)-1].ID
		}
		if !slices.EqualFunc(paged, before[u], func(a, b push.Notification) bool { return a.ID == b.ID && a.RoomID == b.RoomID }) {
			t.Fatalf("%s: paged %+v\nwant %+v", u, paged, before[u])
		}
		highlights, err := db.Notifications(ctx, u, 0, 100, true)
		if err != nil {
			t.Fatal(err)
		}
		var want []push.Notification
		for _, n := range before[u] {
			if n.Highlight {
				want = append(want, n)
			}
		}
		if len(want) == 0 || !slices.EqualFunc(highlights, want, func(a, b push.Notification) bool { return a.ID == b.ID }) {
			t.Fatalf("%s: highlights %+v\nwant %+v", u, highlights, want)
		}
		// Pushers read forwards after an ID, and /sync asks which rooms.
		after, err := db.NotificationsAfter(ctx, u, before[u][4].ID, 100)
		if err != nil {
			t.Fatal(err)
		}
		newer := slices.Clone(before[u][:4])
		slices.Reverse(newer)
		if !slices.EqualFunc(after, newer, func(a, b push.Notification) bool {
			return a.ID == b.ID && string(a.Actions) == string(b.Actions) && a.Highlight == b.Highlight
		}) {
			t.Fatalf("%s: after %d: %+v\nwant %+v", u, before[u][4].ID, after, newer)
		}
		rooms, err := db.RoomsNotifiedBetween(ctx, u, before[u][1].ID, before[u][0].ID)
		if err != nil || !slices.Equal(rooms, []string{before[u][0].RoomID}) {
			t.Fatalf("%s: rooms notified between %d and %d: %v, %v", u, before[u][1].ID, before[u][0].ID, rooms, err)
		}
	}
	for _, u := range users {
		var want []push.Notification
		for _, n := range ns {
			if n.UserID == u {
				want = append(want, n)
			}
		}
		got := before[u]
		if len(got) != len(want) {
			t.Fatalf("%s: %d notifications, want %d", u, len(got), len(want))
		}
		for i, g := range got {
			w := want[len(want)-1-i]
			if g.RoomID != w.RoomID || g.EventID != w.EventID || g.Pos != w.Pos || g.TS != w.TS || string(g.Actions) != string(w.Actions) ||
				g.Highlight != w.Highlight || g.ThreadID != w.ThreadID || g.Read {
				t.Fatalf("%s: notification %d is %+v, want %+v", u, i, g, w)
			}
		}
	}
	db.Close()

	raw, err := sql.Open("sqlite", sqliteDSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, raw, sub, goose.WithGoMigrations(goMigrations()...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 36); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := raw.QueryRowContext(ctx, `SELECT COUNT(*) FROM push_notifications`).Scan(&rows); err != nil || rows != len(ns) {
		t.Fatalf("%d rows after going down, %v; want %d", rows, err, len(ns))
	}
	for _, n := range ns {
		var actions string
		var highlight bool
		err := raw.QueryRowContext(ctx, `SELECT actions, highlight FROM push_notifications WHERE user_id = $1 AND room_id = $2 AND stream_pos = $3`,
			n.UserID, n.RoomID, n.Pos).Scan(&actions, &highlight)
		if err != nil || actions != string(n.Actions) || highlight != n.Highlight {
			t.Fatalf("%+v went down as %s %v, %v", n, actions, highlight, err)
		}
	}
	raw.Close()

	db, err = Open(ctx, Options{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	after := page(db)
	for _, u := range users {
		if !slices.EqualFunc(before[u], after[u], func(a, b push.Notification) bool {
			return a.ID == b.ID && a.RoomID == b.RoomID && a.Pos == b.Pos && string(a.Actions) == string(b.Actions) && a.Highlight == b.Highlight && a.ThreadID == b.ThreadID
		}) {
			t.Fatalf("%s: notifications after going down and up\n%+v\nwant\n%+v", u, after[u], before[u])
		}
	}
}

// A slot set holds exactly the slots added, as Go and as both engines'
// SQL read it.
func TestSlotSets(t *testing.T) {
	for _, slots := range [][]int{nil, {0}, {1}, {2}, {3}, {4}, {0, 5, 10, 15}, {63}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {999}} {
		var s slotSet
		for _, n := range slots {
			s.add(n)
		}
		set := s.String()
		for n := range 1001 {
			if slotIn(set, n) != slices.Contains(slots, n) {
				t.Fatalf("%v as %q: slot %d in is %v", slots, set, n, slotIn(set, n))
			}
		}
	}
}
