package accountdata_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"homeserver/accountdata"
	"homeserver/internal/testserver"
	"homeserver/mxhttp"
	"homeserver/storage"
)

// newService opens a fresh database: SQLite, or PostgreSQL when the
// integration tests' variable names a server.
func newService(t *testing.T, notify func(string)) (*accountdata.Service, *storage.DB) {
	t.Helper()
	opts := storage.Options{Path: filepath.Join(t.TempDir(), "homeserver.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if dsn := os.Getenv(testserver.PostgresEnv); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + testserver.CreatePostgresDB(t, dsn)
		opts.Engine, opts.DSN = storage.Postgres, u.String()
	}
	db, err := storage.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return accountdata.New(db, notify), db
}

func errStatus(err error) (int, string) {
	var me *mxhttp.Error
	if errors.As(err, &me) {
		return me.Status, me.Code
	}
	return 0, fmt.Sprint(err)
}

func TestSinceOrderAndPositions(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var notified []string
	s, _ := newService(t, func(u string) { mu.Lock(); notified = append(notified, u); mu.Unlock() })
	const alice, bob = "@alice:test.local", "@bob:test.local"

	if p, err := s.MaxPos(ctx); err != nil || p != 0 {
		t.Fatalf("empty stream: pos %d, %v", p, err)
	}
	put := func(user, room, typ, content string) int64 {
		t.Helper()
		if err := s.Put(ctx, user, room, typ, json.RawMessage(content)); err != nil {
			t.Fatalf("put %s %s: %v", room, typ, err)
		}
		p, err := s.MaxPos(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p1 := put(alice, "", "a.one", `{"v": 1}`)
	p2 := put(alice, "!r:test.local", "a.one", `{"v":2}`)
	p3 := put(bob, "", "a.one", `{"v":3}`)
	p4 := put(alice, "", "a.two", `{"v":4}`)
	if !(0 < p1 && p1 < p2 && p2 < p3 && p3 < p4) {
		t.Fatalf("positions not strictly increasing: %d %d %d %d", p1, p2, p3, p4)
	}

	all, err := s.Since(ctx, alice, 0, p4)
	if err != nil {
		t.Fatal(err)
	}
	want := []accountdata.Item{
		{RoomID: "", Type: "a.one", Content: json.RawMessage(`{"v":1}`), Pos: p1},
		{RoomID: "!r:test.local", Type: "a.one", Content: json.RawMessage(`{"v":2}`), Pos: p2},
		{RoomID: "", Type: "a.two", Content: json.RawMessage(`{"v":4}`), Pos: p4},
	}
	checkItems(t, "alice (0, p4]", all, want)

	// Rewriting a.one moves it to the end; the window it left no longer holds it.
	p5 := put(alice, "", "a.one", `{"v":5}`)
	got, _ := s.Since(ctx, alice, p1, p5)
	checkItems(t, "alice (p1, p5]", got, []accountdata.Item{want[1], want[2], {Type: "a.one", Content: json.RawMessage(`{"v":5}`), Pos: p5}})
	got, _ = s.Since(ctx, alice, 0, p4)
	checkItems(t, "alice (0, p4] after rewrite", got, want[1:])
	got, _ = s.Since(ctx, alice, p5, p5)
	checkItems(t, "empty window", got, nil)
	got, _ = s.Since(ctx, bob, 0, p5)
	checkItems(t, "bob", got, []accountdata.Item{{Type: "a.one", Content: json.RawMessage(`{"v":3}`), Pos: p3}})

	mu.Lock()
	if len(notified) != 5 || notified[2] != bob {
		t.Fatalf("notified %v", notified)
	}
	mu.Unlock()

	// Removing a tag the room lacks writes nothing.
	if err := s.RemoveTag(ctx, alice, "!r:test.local", "u.none"); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.MaxPos(ctx); p != p5 {
		t.Fatalf("no-op removal moved the stream to %d", p)
	}
}

func checkItems(t *testing.T, what string, got, want []accountdata.Item) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, want %d: %+v", what, len(got), len(want), got)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.RoomID != w.RoomID || g.Type != w.Type || string(g.Content) != string(w.Content) || g.Pos != w.Pos {
			t.Fatalf("%s: item %d = %+v (%s), want %+v (%s)", what, i, g, g.Content, w, w.Content)
		}
	}
}

func TestRestrictedTypesAndValidation(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, nil)
	const alice = "@alice:test.local"
	for _, typ := range []string{"m.fully_read", "m.push_rules"} {
		for _, room := range []string{"", "!r:test.local"} {
			if st, code := errStatus(s.Put(ctx, alice, room, typ, json.RawMessage(`{}`))); st != 405 || code != "M_BAD_JSON" {
				t.Fatalf("Put %s in %q: %d %s", typ, room, st, code)
			}
		}
	}
	if err := s.PutInternal(ctx, alice, "!r:test.local", "m.fully_read", json.RawMessage(`{"event_id":"$e"}`)); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Get(ctx, alice, "!r:test.local", "m.fully_read"); err != nil || string(c) != `{"event_id":"$e"}` {
		t.Fatalf("get m.fully_read: %s %v", c, err)
	}
	if st, code := errStatus(s.Put(ctx, alice, "", "x", json.RawMessage(`[1]`))); st != 400 || code != "M_BAD_JSON" {
		t.Fatalf("array content: %d %s", st, code)
	}
	if st, code := errStatus(s.Put(ctx, alice, "not-a-room", "x", json.RawMessage(`{}`))); st != 400 || code != "M_INVALID_PARAM" {
		t.Fatalf("bad room: %d %s", st, code)
	}
	if st, code := errStatus(func() error { _, err := s.Get(ctx, alice, "", "unset"); return err }()); st != 404 || code != "M_NOT_FOUND" {
		t.Fatalf("unset: %d %s", st, code)
	}
}

// Concurrent writers each get their own position, and concurrent tag
// changes on one room are not lost, even from two services (as two
// processes would run) that do not share the in-process lock.
func TestConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	s, db := newService(t, nil)
	other := accountdata.New(db, nil)
	const alice, room, n = "@alice:test.local", "!r:test.local", 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- s.Put(ctx, alice, "", fmt.Sprintf("t.%d", i), json.RawMessage(`{}`))
		}()
		go func() {
			defer wg.Done()
			w := s
			if i%2 == 1 {
				w = other
			}
			errs <- w.SetTag(ctx, alice, room, fmt.Sprintf("u.%d", i), json.RawMessage(`{"order":0.5}`))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := s.MaxPos(ctx); p != 2*n {
		t.Fatalf("stream at %d after %d writes", p, 2*n)
	}
	tags, err := s.Tags(ctx, alice, room)
	if err != nil || len(tags) != n {
		t.Fatalf("%d tags, want %d (%v)", len(tags), n, err)
	}
	items, _ := s.Since(ctx, alice, 0, 2*n)
	if len(items) != n+1 {
		t.Fatalf("%d items, want %d", len(items), n+1)
	}
	for i := 1; i < len(items); i++ {
		if items[i].Pos <= items[i-1].Pos {
			t.Fatalf("items out of order: %+v", items)
		}
	}
}
