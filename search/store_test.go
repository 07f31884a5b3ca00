package search_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"homeserver/internal/testserver"
	"homeserver/search"
	"homeserver/storage"
)

// openStores opens an empty SQLite database and, when
// HOMESERVER_TEST_POSTGRES is set, an empty PostgreSQL one.
func openStores(t *testing.T) map[string]*storage.DB {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	out := map[string]*storage.DB{}
	db, err := storage.Open(ctx, storage.Options{Path: filepath.Join(t.TempDir(), "homeserver.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	out["sqlite"] = db
	if dsn := os.Getenv(testserver.PostgresEnv); dsn != "" {
		name := testserver.CreatePostgresDB(t, dsn)
		pg, err := storage.Open(ctx, storage.Options{Engine: storage.Postgres, DSN: testserver.PostgresDSNFor(dsn, name), Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		out["postgres"] = pg
	}
	return out
}

// A user in many rooms: the room restriction (an OR of one token per room
// in SQLite's FTS5 query, an IN list on PostgreSQL) still works.
func TestSearchManyRooms(t *testing.T) {
	ctx := context.Background()
	for engine, db := range openStores(t) {
		t.Run(engine, func(t *testing.T) {
			// The index's rows alone: SearchEvents joins events, so the
			// match is checked through the count.
			var rooms []string
			for i := range 2000 {
				rooms = append(rooms, fmt.Sprintf("!room%04d:x", i))
			}
			var u search.Update
			for i, r := range []string{rooms[0], rooms[999], rooms[1999]} {
				u.Put = append(u.Put, search.Entry{EventID: fmt.Sprintf("$e%d", i), RoomID: r, Sender: "@a:x",
					Key: search.KeyBody, Value: "needle in a haystack", Pos: int64(i + 1), TS: 1})
			}
			if err := db.UpdateSearchIndex(ctx, "test", u, -1); err != nil {
				t.Fatal(err)
			}
			q := search.Query{Words: []string{"needle", "hay"}, Rooms: rooms, Keys: []string{search.KeyBody, search.KeyName, search.KeyTopic}}
			if n, err := db.CountSearchEvents(ctx, q, 100); err != nil || n != 3 {
				t.Errorf("count over 2,000 rooms: %d, %v; want 3", n, err)
			}
			q.Keys = []string{search.KeyName}
			if n, err := db.CountSearchEvents(ctx, q, 100); err != nil || n != 0 {
				t.Errorf("count in names: %d, %v; want 0", n, err)
			}
			q.Keys = []string{search.KeyBody}
			q.NotSenders = []string{"@a:x"}
			if n, err := db.CountSearchEvents(ctx, q, 100); err != nil || n != 0 {
				t.Errorf("count without @a:x: %d, %v; want 0", n, err)
			}
			q.NotSenders, q.Senders = nil, []string{"@a:x", "@b:x"}
			if n, err := db.CountSearchEvents(ctx, q, 100); err != nil || n != 3 {
				t.Errorf("count from @a:x: %d, %v; want 3", n, err)
			}
		})
	}
}
