package storage_test

import (
	"context"
	"testing"

	"homeserver/storage"
	"homeserver/stream"
)

// Reads under one snapshot see the database as at the snapshot's first
// read, whatever commits meanwhile; snapshots past the budget (half the
// readers) run their reads one by one instead of waiting for one.
func TestReadSnapshot(t *testing.T) {
	db := openServerKeysDB(t)
	if db.Engine() != storage.SQLite {
		t.Skip("PostgreSQL reads run as they are")
	}
	ctx := context.Background()
	head := func(ctx context.Context) int64 {
		t.Helper()
		h, err := db.StreamHeads(ctx, []stream.Name{stream.Events})
		if err != nil {
			t.Fatal(err)
		}
		return h[stream.Events]
	}
	bump := func() {
		t.Helper()
		if err := storage.ExecRaw(ctx, db, `INSERT INTO stream_counters (name, pos) VALUES ('events', 1)
			ON CONFLICT (name) DO UPDATE SET pos = stream_counters.pos + 1`); err != nil {
			t.Fatal(err)
		}
	}
	bump()
	err := db.ReadSnapshot(ctx, func(ctx context.Context) error {
		first := head(ctx)
		bump()
		if got := head(ctx); got != first {
			t.Errorf("inside the snapshot: %d after %d", got, first)
		}
		if got := head(context.Background()); got != first+1 {
			t.Errorf("outside it: %d, want %d", got, first+1)
		}
		// The default pool of 6 readers allows 3 snapshots: a fourth runs
		// its reads one by one, and sees the present.
		return db.ReadSnapshot(context.Background(), func(ctx2 context.Context) error {
			second := head(ctx2)
			return db.ReadSnapshot(context.Background(), func(ctx3 context.Context) error {
				third := head(ctx3)
				return db.ReadSnapshot(context.Background(), func(ctx4 context.Context) error {
					before := head(ctx4)
					bump()
					if got := head(ctx4); got != before+1 {
						t.Errorf("past the budget: %d after %d, want the present", got, before)
					}
					if got := head(ctx2); got != second {
						t.Errorf("second snapshot: %d, want %d", got, second)
					}
					if got := head(ctx3); got != third {
						t.Errorf("third snapshot: %d, want %d", got, third)
					}
					return nil
				})
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
