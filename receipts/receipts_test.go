package receipts_test

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

	"homeserver/internal/testserver"
	"homeserver/mxhttp"
	"homeserver/receipts"
	"homeserver/storage"
)

func decode(t *testing.T, raw json.RawMessage) map[string]map[string]map[string]map[string]any {
	t.Helper()
	var c map[string]map[string]map[string]map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return c
}

func TestEventHidesOthersPrivateReceipts(t *testing.T) {
	rs := []receipts.Receipt{
		{RoomID: "!r", Type: receipts.TypeRead, UserID: "@alice:x", EventID: "$1", TS: 10, Pos: 1},
		{RoomID: "!r", Type: receipts.TypeReadPrivate, UserID: "@alice:x", EventID: "$2", TS: 11, Pos: 2},
		{RoomID: "!r", Type: receipts.TypeReadPrivate, UserID: "@bob:x", EventID: "$3", TS: 12, Pos: 3},
		{RoomID: "!r", Type: receipts.TypeRead, UserID: "@bob:x", EventID: "$1", ThreadID: "main", TS: 13, Pos: 4},
	}
	raw, ok := receipts.Event(rs, "@alice:x")
	if !ok {
		t.Fatal("nothing to show alice")
	}
	c := decode(t, raw)
	if len(c) != 2 || c["$3"] != nil {
		t.Fatalf("alice sees %s", raw)
	}
	if c["$2"]["m.read.private"]["@alice:x"]["ts"] != float64(11) {
		t.Fatalf("alice's own private receipt missing: %s", raw)
	}
	if c["$1"]["m.read"]["@bob:x"]["thread_id"] != "main" {
		t.Fatalf("bob's threaded receipt: %s", raw)
	}
	if _, has := c["$1"]["m.read"]["@alice:x"]["thread_id"]; has {
		t.Fatalf("unthreaded receipt carries thread_id: %s", raw)
	}

	raw, _ = receipts.Event(rs, "@carol:x")
	c = decode(t, raw)
	if len(c) != 1 || c["$1"]["m.read.private"] != nil || len(c["$1"]["m.read"]) != 2 {
		t.Fatalf("carol sees %s", raw)
	}

	// Only private receipts of others: nothing at all.
	if raw, ok := receipts.Event(rs[1:3], "@carol:x"); ok {
		t.Fatalf("carol sees %s", raw)
	}
	if _, ok := receipts.Event(nil, "@carol:x"); ok {
		t.Fatal("event from no receipts")
	}
}

func TestEventSlotCollisionKeepsLatest(t *testing.T) {
	rs := []receipts.Receipt{
		{Type: receipts.TypeRead, UserID: "@a:x", EventID: "$1", ThreadID: "main", TS: 2, Pos: 7},
		{Type: receipts.TypeRead, UserID: "@a:x", EventID: "$1", TS: 1, Pos: 3},
	}
	raw, _ := receipts.Event(rs, "@b:x")
	if got := decode(t, raw)["$1"]["m.read"]["@a:x"]["thread_id"]; got != "main" {
		t.Fatalf("kept %s", raw)
	}
}

func TestInThread(t *testing.T) {
	// $root <-thread- $t1 <-annotation- $t1r ; $root <-reference- $ref ;
	// $plain; a chain of annotations longer than the walk goes.
	rels := map[string]receipts.Relation{
		"$t1":  {RelType: "m.thread", EventID: "$root"},
		"$t1r": {RelType: "m.annotation", EventID: "$t1"},
		"$ref": {RelType: "m.reference", EventID: "$root"},
		"$a1":  {RelType: "m.annotation", EventID: "$t1"},
		"$a2":  {RelType: "m.annotation", EventID: "$a1"},
		"$a3":  {RelType: "m.annotation", EventID: "$a2"},
		"$a4":  {RelType: "m.annotation", EventID: "$a3"},
	}
	lookup := func(_ context.Context, id string) (receipts.Relation, error) { return rels[id], nil }
	for _, c := range []struct {
		event, thread string
		want          bool
	}{
		{"$root", "main", true}, {"$root", "$root", true},
		{"$t1", "$root", true}, {"$t1", "main", false},
		{"$t1r", "$root", true}, {"$t1r", "main", false},
		{"$ref", "$root", true}, {"$ref", "main", true},
		{"$plain", "main", true}, {"$plain", "$root", false},
		{"$t1", "$other", false},
		{"$a3", "$root", true},
		{"$a4", "$root", false}, // beyond three hops
	} {
		got, err := receipts.InThread(context.Background(), c.event, c.thread, lookup)
		if err != nil || got != c.want {
			t.Errorf("InThread(%s, %s) = %v, %v; want %v", c.event, c.thread, got, err, c.want)
		}
	}
	boom := errors.New("boom")
	if _, err := receipts.InThread(context.Background(), "$x", "main", func(context.Context, string) (receipts.Relation, error) {
		return receipts.Relation{}, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("lookup error lost: %v", err)
	}
}

// openStore opens a fresh database: SQLite, or PostgreSQL when the tests'
// DSN is set.
func openStore(t *testing.T) *storage.DB {
	t.Helper()
	opts := storage.Options{
		Path:   filepath.Join(t.TempDir(), "homeserver.db"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
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
	return db
}

func TestPostSinceAndPositions(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var notified []string
	s := receipts.New(openStore(t), func(room string) {
		mu.Lock()
		notified = append(notified, room)
		mu.Unlock()
	})
	if p, err := s.MaxPos(ctx); err != nil || p != 0 {
		t.Fatalf("empty MaxPos %d, %v", p, err)
	}
	post := func(user, room, typ, event, thread string) {
		t.Helper()
		if err := s.Post(ctx, user, room, typ, event, thread); err != nil {
			t.Fatalf("post %s %s: %v", typ, event, err)
		}
	}
	post("@a:x", "!r1", receipts.TypeRead, "$1", "")
	post("@a:x", "!r1", receipts.TypeRead, "$1", "main") // another thread: another receipt
	post("@a:x", "!r1", receipts.TypeReadPrivate, "$1", "")
	post("@b:x", "!r2", receipts.TypeRead, "$9", "")
	mid, _ := s.MaxPos(ctx)
	if mid != 4 {
		t.Fatalf("MaxPos %d after four receipts", mid)
	}
	post("@a:x", "!r1", receipts.TypeRead, "$2", "") // replaces $1 (events unknown here: no order to keep)
	post("@a:x", "!r1", receipts.TypeRead, "$2", "") // same event: no change
	if p, _ := s.MaxPos(ctx); p != 5 {
		t.Fatalf("MaxPos %d, want 5", p)
	}
	if len(notified) != 5 {
		t.Fatalf("notified %v", notified)
	}

	all, err := s.Since(ctx, []string{"!r1", "!r2"}, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("%d receipts, want 4 (one per key): %+v", len(all), all)
	}
	for i, r := range all {
		if i > 0 && r.Pos <= all[i-1].Pos {
			t.Fatalf("not in position order: %+v", all)
		}
		if r.TS == 0 {
			t.Fatalf("no ts: %+v", r)
		}
	}
	if last := all[3]; last.EventID != "$2" || last.Pos != 5 || last.ThreadID != "" {
		t.Fatalf("latest receipt %+v", last)
	}
	later, _ := s.Since(ctx, []string{"!r1", "!r2"}, mid, 5)
	if len(later) != 1 || later[0].EventID != "$2" {
		t.Fatalf("since %d: %+v", mid, later)
	}
	if r2, _ := s.Since(ctx, []string{"!r2"}, 0, 5); len(r2) != 1 || r2[0].UserID != "@b:x" {
		t.Fatalf("room filter: %+v", r2)
	}
	if none, _ := s.Since(ctx, nil, 0, 5); len(none) != 0 {
		t.Fatalf("no rooms: %+v", none)
	}

	for _, bad := range []struct{ typ, event, thread string }{
		{"m.fully_read", "$1", ""}, {"m.unknown", "$1", ""}, {receipts.TypeRead, "nope", ""}, {receipts.TypeRead, "$1", "thread"},
	} {
		var me *mxhttp.Error
		if err := s.Post(ctx, "@a:x", "!r1", bad.typ, bad.event, bad.thread); !errors.As(err, &me) || me.Code != "M_INVALID_PARAM" {
			t.Errorf("post %+v: %v", bad, err)
		}
	}
}

func TestConcurrentPostsGetDistinctPositions(t *testing.T) {
	ctx := context.Background()
	s := receipts.New(openStore(t), nil)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Post(ctx, fmt.Sprintf("@u%d:x", i), "!r", receipts.TypeRead, "$e", "")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.Since(ctx, []string{"!r"}, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("%d receipts, want %d", len(all), n)
	}
	for i, r := range all {
		if r.Pos != int64(i+1) {
			t.Fatalf("positions not 1..%d: %+v", n, all)
		}
	}
}
