package presence_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/presence"
	"homeserver/storage"
)

// openDB opens a fresh database: SQLite, or PostgreSQL when the tests'
// PostgreSQL DSN is set.
func openDB(t *testing.T) *storage.DB {
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
	return db
}

func TestStoredStreamPositions(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	svc := presence.New(openDB(t), nil, clk.now)
	bob, carol := "@bob:test.local", "@carol:test.local"

	if pos, err := svc.MaxPos(ctx); err != nil || pos != 0 {
		t.Fatalf("empty stream: %d, %v", pos, err)
	}
	if st, err := svc.Get(ctx, alice); err != nil || st.Presence != presence.Offline || st.Pos != 0 {
		t.Fatalf("unknown user: %+v, %v", st, err)
	}
	mustTouch := func(user string) {
		t.Helper()
		if err := svc.Touch(ctx, user, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Positions 1, 2 and 3.
	mustTouch(alice)
	mustTouch(bob)
	if err := svc.Set(ctx, carol, presence.Unavailable, "away", true); err != nil {
		t.Fatal(err)
	}
	mustTouch(alice) // fresh: no write
	if pos, _ := svc.MaxPos(ctx); pos != 3 {
		t.Fatalf("max position %d, want 3", pos)
	}
	clk.advance(time.Minute)
	mustTouch(alice) // 4: one row per user, moved to the new position

	got, err := svc.Since(ctx, []string{alice, bob, carol, alice}, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].UserID != bob || got[1].UserID != carol || got[2].UserID != alice || got[2].Pos != 4 {
		t.Fatalf("since 0: %+v", got)
	}
	if got[1].StatusMsg != "away" || got[1].Presence != presence.Unavailable || got[2].LastActiveTS != clk.now().UnixMilli() || !got[2].CurrentlyActive {
		t.Fatalf("stored fields: %+v", got)
	}
	if got, err := svc.Since(ctx, []string{alice, bob}, 2, 3); err != nil || len(got) != 0 {
		t.Fatalf("since (2, 3] for alice and bob: %+v, %v", got, err)
	}
	if got, err := svc.Since(ctx, []string{carol, bob}, 1, 3); err != nil || len(got) != 2 || got[0].UserID != bob {
		t.Fatalf("since (1, 3]: %+v, %v", got, err)
	}
}

// Concurrent writers each get their own position, and a reader that saw
// position N has seen every change up to N.
func TestConcurrentWritesGetDistinctPositions(t *testing.T) {
	ctx := context.Background()
	svc := presence.New(openDB(t), nil, nil)
	const users, rounds = 8, 5
	ids := make([]string, users)
	var wg sync.WaitGroup
	errs := make(chan error, users*rounds)
	for i := range users {
		ids[i] = fmt.Sprintf("@u%d:test.local", i)
		wg.Go(func() {
			for r := range rounds {
				errs <- svc.Set(ctx, ids[i], presence.Online, fmt.Sprint(r), true)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if pos, _ := svc.MaxPos(ctx); pos != users*rounds {
		t.Fatalf("max position %d, want %d", pos, users*rounds)
	}
	got, err := svc.Since(ctx, ids, 0, users*rounds)
	if err != nil || len(got) != users {
		t.Fatalf("since 0: %d rows, %v", len(got), err)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Pos <= got[i-1].Pos {
			t.Fatalf("positions not increasing: %+v", got)
		}
	}
	for _, st := range got {
		if st.StatusMsg != fmt.Sprint(rounds-1) {
			t.Fatalf("lost the last write: %+v", st)
		}
	}
}
