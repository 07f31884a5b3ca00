package storage_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"homeserver/search"
	"homeserver/storage"
)

func openSQLiteAt(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), storage.Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// needle counts the entries of the word "needle" in room !r:x.
func needle(t *testing.T, db *storage.DB) int {
	t.Helper()
	n, err := db.CountSearchEvents(context.Background(), search.Query{Words: []string{"needle"}, Rooms: []string{"!r:x"},
		Keys: []string{search.KeyBody, search.KeyName, search.KeyTopic}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func needleAt(pos int64) search.Entry {
	return search.Entry{EventID: "$e" + string(rune('a'+pos)), RoomID: "!r:x", Sender: "@a:x", Key: search.KeyBody,
		Value: "a needle", Pos: pos, TS: 1}
}

// SQLite's index lives in its own file, which survives a restart, and is
// emptied when it is ahead of the log (the database restored from an
// older backup), to be built again.
func TestSearchIndexFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	if got := storage.SearchIndexPath(path); got != filepath.Join(filepath.Dir(path), "homeserver-search.db") {
		t.Fatalf("index path %s", got)
	}
	db := openSQLiteAt(t, path)
	if err := db.UpdateSearchIndex(ctx, "search", search.Update{Put: []search.Entry{needleAt(1)}}, 0); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openSQLiteAt(t, path)
	if n := needle(t, db); n != 1 {
		t.Fatalf("after a restart: %d entries, want 1", n)
	}
	// The log is empty: a cursor past it is from another history.
	if err := db.UpdateSearchIndex(ctx, "search", search.Update{}, 50); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openSQLiteAt(t, path)
	defer db.Close()
	if n := needle(t, db); n != 0 {
		t.Fatalf("an index ahead of the log kept %d entries", n)
	}
	if pos, err := db.SearchCursor(ctx, "search"); err != nil || pos != 0 {
		t.Fatalf("cursor %d, %v; want 0", pos, err)
	}
}

// A database whose index was kept in it, as before the index had a file
// of its own, loses it, and the search reader starts from the beginning.
func TestSearchIndexMovedOut(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	openSQLiteAt(t, path).Close()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE VIRTUAL TABLE event_search_fts USING fts5(value, meta, content='', contentless_delete=1)`,
		`INSERT INTO event_search (event_id, room_id, sender, key, value, stream_pos, origin_server_ts)
			VALUES ('$old', '!r:x', '@a:x', 'content.body', 'old needle', 7, 1)`,
		`INSERT INTO event_search_fts (rowid, value, meta) VALUES (7, 'old needle', '')`,
		`INSERT INTO reader_cursors (reader, stream, pos) VALUES ('search', 'events', 7)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db := openSQLiteAt(t, path)
	defer db.Close()
	raw, err = sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var tables, rows, cursors int
	if err := raw.QueryRow(`SELECT (SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'event_search_fts%'),
		(SELECT COUNT(*) FROM event_search), (SELECT COUNT(*) FROM reader_cursors WHERE reader = 'search')`).Scan(&tables, &rows, &cursors); err != nil {
		t.Fatal(err)
	}
	if tables != 0 || rows != 0 || cursors != 0 {
		t.Fatalf("left in the database: %d full-text tables, %d entries, %d cursors", tables, rows, cursors)
	}
	if pos, err := db.SearchCursor(ctx, "search"); err != nil || pos != 0 {
		t.Fatalf("cursor %d, %v; want 0", pos, err)
	}
}

// Entries written after a purge are checked against the log: the indexer
// may have read a purged room's events before the purge.
func TestSearchIndexAfterPurge(t *testing.T) {
	ctx := context.Background()
	db := openSQLiteAt(t, filepath.Join(t.TempDir(), "homeserver.db"))
	defer db.Close()
	put := func(pos int64) {
		t.Helper()
		if err := db.UpdateSearchIndex(ctx, "search", search.Update{Put: []search.Entry{needleAt(pos)}}, -1); err != nil {
			t.Fatal(err)
		}
	}
	// No purge since: taken as read (these positions have no events).
	put(1)
	put(2)
	if n := needle(t, db); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
	if err := db.PurgeRoom(ctx, "!r:x"); err != nil {
		t.Fatal(err)
	}
	if n := needle(t, db); n != 0 {
		t.Fatalf("%d entries after the room's purge, want 0", n)
	}
	// Read before the purge, written after: its event is gone.
	put(3)
	if n := needle(t, db); n != 0 {
		t.Fatalf("an entry of a purged event was written")
	}
	put(4)
	if n := needle(t, db); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
}
