package storage

import (
	"context"
	"path/filepath"
	"testing"

	"homeserver/push"
)

// Migration 29 rebuilds push_notifications under new keys, and migration
// 37 regroups them by event: the rows written before them are kept,
// counted and paged as before, and new rows still drop duplicates.
func TestMigratePushNotificationKeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	raw := sqliteMigratedTo(t, path, 28)
	for _, q := range []string{
		`INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ('!r:x', '10', '@a:x', 0)`,
		`INSERT INTO events (stream_pos, event_id, room_id, type, sender, depth, origin_server_ts, state_group, json)
			VALUES (10, '$e10', '!r:x', 'm.room.message', '@a:x', 1, 0, 0, '{}'), (11, '$e11', '!r:x', 'm.room.message', '@a:x', 2, 0, 0, '{}'),
			(12, '$e12', '!r:x', 'm.room.message', '@a:x', 3, 0, 0, '{}')`,
		`INSERT INTO push_notifications (id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id) VALUES
			(1, '@b:x', '!r:x', '$e10', 10, 0, '["notify"]', FALSE, 'main'),
			(2, '@b:x', '!r:x', '$e11', 11, 0, '["notify"]', TRUE, 'main'),
			(3, '@b:x', '!r:x', '$e12', 12, 0, '["notify"]', FALSE, '$t')`,
		`INSERT INTO stream_counters (name, pos) VALUES ('notifications', 3) ON CONFLICT (name) DO UPDATE SET pos = 3`,
		`INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos) VALUES ('!r:x', 'm.read', '@b:x', '', '$e10', 0, 1)`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db, err := Open(ctx, Options{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	counts, err := db.UnreadCounts(ctx, "@b:x", "!r:x")
	if err != nil {
		t.Fatal(err)
	}
	if want := (push.Counts{Notifications: 1, Highlights: 1}); counts["main"] != want || counts["$t"] != (push.Counts{Notifications: 1}) || len(counts) != 2 {
		t.Fatalf("counts after migration: %v", counts)
	}
	ns, err := db.Notifications(ctx, "@b:x", 0, 10, false)
	if err != nil || len(ns) != 3 || ns[0].ID != 3 || !ns[2].Read || ns[1].Read {
		t.Fatalf("notifications after migration: %+v, %v", ns, err)
	}
	// An event stored already is dropped whole (an event is evaluated
	// once); a new one is kept.
	err = db.AddNotifications(ctx, "test", []push.Notification{
		{UserID: "@b:x", RoomID: "!r:x", EventID: "$e12", Pos: 12, Actions: []byte(`[]`), ThreadID: "$t"},
		{UserID: "@c:x", RoomID: "!r:x", EventID: "$e12", Pos: 12, Actions: []byte(`[]`), ThreadID: "$t"},
		{UserID: "@b:x", RoomID: "!r:x", EventID: "$e13", Pos: 13, Actions: []byte(`["notify"]`), ThreadID: "main"},
		{UserID: "@c:x", RoomID: "!r:x", EventID: "$e13", Pos: 13, Actions: []byte(`["notify"]`), ThreadID: "main", Highlight: true},
	}, 13)
	if err != nil {
		t.Fatal(err)
	}
	if total, err := db.UnreadTotal(ctx, "@b:x"); err != nil || total != 3 {
		t.Fatalf("total %d, %v; want 3", total, err)
	}
	if total, err := db.UnreadTotal(ctx, "@c:x"); err != nil || total != 1 {
		t.Fatalf("total %d, %v; want 1", total, err)
	}
}
