package storage

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"homeserver/stream"
)

// A database written before the spine (schema 13) keeps its positions and
// cursors: the counters start where the tables were, the readers where
// they were.
func TestMigrateToStreamCounters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	raw := sqliteMigratedTo(t, path, 13)
	for _, q := range []string{
		`INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ('!r:x', '10', '@a:x', 0)`,
		`INSERT INTO events (stream_pos, event_id, room_id, type, sender, depth, origin_server_ts, state_group, json)
			VALUES (41, '$e', '!r:x', 'm.room.message', '@a:x', 1, 0, 0, '{}')`,
		`INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos) VALUES ('!r:x', 'm.read', '@a:x', '', '$e', 0, 7)`,
		`INSERT INTO account_data_stream (id, pos) VALUES (1, 12)`,
		`INSERT INTO appservice_state (as_id, stream_pos, last_txn, to_device_pos, device_list_pos, otk_pos) VALUES ('irc', 40, 3, 5, 6, 0)`,
		`INSERT INTO push_cursors (name, stream_pos) VALUES ('evaluator', 39), ('pusher:2', 17)`,
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
	for name, want := range map[stream.Name]int64{stream.Events: 41, stream.Receipts: 7, stream.AccountData: 12, stream.Presence: 0} {
		if got, err := db.streamMaxPos(ctx, string(name)); err != nil || got != want {
			t.Errorf("%s counter = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, c := range []struct {
		reader string
		s      stream.Name
		want   int64
	}{
		{"appservice:irc", stream.Events, 40}, {"appservice:irc", stream.ToDevice, 5}, {"appservice:irc", stream.DeviceLists, 6},
		{"appservice:irc", stream.Receipts, 7}, {"push:evaluator", stream.Events, 39}, {"pusher:2", stream.Notifications, 17},
	} {
		if got, ok, err := db.ReaderCursor(ctx, c.reader, c.s); err != nil || !ok || got != c.want {
			t.Errorf("%s %s cursor = %d, %v, %v; want %d", c.reader, c.s, got, ok, err, c.want)
		}
	}
	// The next event takes the position after the last one.
	err = db.tx(ctx, "test", func(tx *txn) error {
		pos, err := nextStreamPos(ctx, tx, string(stream.Events))
		if err == nil && pos != 42 {
			t.Errorf("next event position %d, want 42", pos)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A SQLite database serves one process: a second one is refused with an
// error that says what to do.
func TestSQLiteOneProcess(t *testing.T) {
	_, path := openTemp(t)
	_, err := Open(context.Background(), Options{Path: path, Logger: quietLog()})
	if err == nil || !strings.Contains(err.Error(), "use PostgreSQL for several") {
		t.Fatalf("second open: %v", err)
	}
}

// The room_servers migration counts the joined members of existing rooms
// by server; later membership changes keep the counts.
func TestMigrateRoomServers(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	raw := sqliteMigratedTo(t, path, 29)
	for i, m := range []struct{ room, user, membership string }{
		{"!a:x", "@a:x", "join"}, {"!a:x", "@b:x", "join"}, {"!a:x", "@c:y.org:8448", "join"},
		{"!a:x", "@d:z", "leave"}, {"!a:x", "@e:z", "invite"}, {"!b:x", "@a:x", "ban"},
	} {
		_, err := raw.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
			VALUES ($1, 'm.room.member', $2, $3, $4, $5)`, m.room, m.user, fmt.Sprint("$e", i), m.membership, i+1)
		if err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	db, err := Open(ctx, Options{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.JoinedServers(ctx, "!a:x")
	if err != nil || !slices.Equal(got, []string{"x", "y.org:8448"}) {
		t.Fatalf("servers of !a:x: %v, %v", got, err)
	}
	if got, err := db.JoinedServers(ctx, "!b:x"); err != nil || len(got) != 0 {
		t.Fatalf("servers of !b:x: %v, %v", got, err)
	}
	for _, c := range []struct {
		server string
		want   bool
	}{{"x", true}, {"y.org:8448", true}, {"z", false}} {
		if in, err := db.ServerInRoom(ctx, "!a:x", c.server); err != nil || in != c.want {
			t.Errorf("ServerInRoom(%s) = %v, %v", c.server, in, err)
		}
	}
	err = db.tx(ctx, "test", func(tx *txn) error {
		for _, c := range []struct{ user, before, after string }{
			{"@a:x", "join", "leave"}, {"@c:y.org:8448", "join", "join"}, {"@d:z", "leave", "join"}, {"@b:x", "join", "ban"},
		} {
			if err := adjustRoomServers(ctx, tx, "!a:x", c.user, c.before, c.after); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.JoinedServers(ctx, "!a:x"); err != nil || !slices.Equal(got, []string{"y.org:8448", "z"}) {
		t.Fatalf("servers of !a:x after changes: %v, %v", got, err)
	}
}

// sqliteMigratedTo opens a SQLite database at path with the SQL
// migrations applied up to version, as an older binary left it.
func sqliteMigratedTo(t *testing.T, path string, version int64) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", sqliteDSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, raw, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return raw
}
