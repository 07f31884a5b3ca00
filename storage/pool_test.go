package storage_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/storage"
	"homeserver/stream"
)

// With every connection busy for longer than MaxConnWait, reads, writes
// and transactions give up with ErrBusy, which HTTP answers 503 with
// Retry-After; once connections come free, the same operations succeed.
func TestPoolExhaustionIsBusy(t *testing.T) {
	opts := storage.Options{
		Path: filepath.Join(t.TempDir(), "homeserver.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ReadConns: 2, MaxConnWait: 50 * time.Millisecond,
	}
	if dsn := os.Getenv("HOMESERVER_TEST_POSTGRES"); dsn != "" {
		opts.Engine, opts.DSN = storage.Postgres, throwawayPostgres(t, dsn)
	}
	db, err := storage.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	write := func() error { return db.SetReaderCursor(ctx, "pool-test", stream.Events, 7) }
	read := func() error { _, _, err := db.ReaderCursor(ctx, "pool-test", stream.Events); return err }
	txn := func() error {
		return db.CreateAccount(ctx, accounts.Account{UserID: "@pool:test", Localpart: "pool", CreatedTS: 1}, "", nil, nil)
	}

	release := storage.HoldConnections(db)
	for name, op := range map[string]func() error{"write": write, "read": read, "transaction": txn} {
		err := op()
		if !errors.Is(err, storage.ErrBusy) {
			t.Fatalf("%s with every connection busy: %v", name, err)
		}
		rec := httptest.NewRecorder()
		mxhttp.WriteError(rec, err)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("%s: answered %d, Retry-After %q", name, rec.Code, rec.Header().Get("Retry-After"))
		}
	}
	release()
	for name, op := range map[string]func() error{"write": write, "read": read, "transaction": txn} {
		if err := op(); err != nil {
			t.Fatalf("%s once connections are free: %v", name, err)
		}
	}
	// A caller that gives up first gets its own error, not ErrBusy.
	release = storage.HoldConnections(db)
	defer release()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := db.ReaderCursor(cctx, "pool-test", stream.Events); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
}
