package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"homeserver/accounts"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	db, err := Open(context.Background(), Options{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// schemaVersion reads goose's bookkeeping directly.
func schemaVersion(t *testing.T, path string) (maxVersion int64, rows int) {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.QueryRow(`SELECT MAX(version_id), COUNT(*) FROM goose_db_version`).Scan(&maxVersion, &rows); err != nil {
		t.Fatal(err)
	}
	return maxVersion, rows
}

func knownVersion(t *testing.T) int64 {
	t.Helper()
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var known int64
	for _, e := range entries {
		var v int64
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err == nil {
			known = max(known, v)
		}
	}
	for _, m := range goMigrations() {
		known = max(known, m.Version)
	}
	if known == 0 {
		t.Fatal("no migrations found")
	}
	return known
}

func TestMigrationsApplyOnceAndReopenIsNoop(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	var logs bytes.Buffer
	db, err := Open(ctx, Options{Path: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "applied database migration") {
		t.Errorf("fresh database: no migration logged: %s", logs.String())
	}
	for _, table := range []string{"users", "profiles", "devices", "access_tokens", "refresh_tokens", "uia_sessions", "registration_nonces"} {
		var n int
		if err := db.w.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1`, table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: n=%d err=%v", table, n, err)
		}
	}
	if err := db.CreateAccount(ctx, accounts.Account{UserID: "@a:x", Localpart: "a", CreatedTS: 1}, "a", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	known := knownVersion(t)
	v1, rows1 := schemaVersion(t, path)
	if v1 != known {
		t.Fatalf("schema version %d after migrating, want %d", v1, known)
	}

	logs.Reset()
	db, err = Open(ctx, Options{Path: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("re-open: %v", err)
	}
	if strings.Contains(logs.String(), "applied database migration") {
		t.Errorf("re-open applied migrations again: %s", logs.String())
	}
	if _, err := db.GetAccount(ctx, "@a:x"); err != nil {
		t.Errorf("data lost on re-open: %v", err)
	}
	db.Close()
	if v2, rows2 := schemaVersion(t, path); v2 != v1 || rows2 != rows1 {
		t.Errorf("re-open changed goose_db_version: version %d→%d, rows %d→%d", v1, v2, rows1, rows2)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	db, err := Open(ctx, Options{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, 1)`, knownVersion(t)+1); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db, err = Open(ctx, Options{Path: path, Logger: quietLog()})
	if err == nil {
		db.Close()
		t.Fatal("Open accepted a database newer than the binary")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("error %q does not say the schema is newer", err)
	}
}

func TestOpenRejectsUnknownEngine(t *testing.T) {
	_, err := Open(context.Background(), Options{Engine: "psycopg2", Path: filepath.Join(t.TempDir(), "x.db"), Logger: quietLog()})
	if err == nil || !strings.Contains(err.Error(), "psycopg2") {
		t.Fatalf("unknown engine: %v", err)
	}
}

func TestInMemory(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, Options{Path: ":memory:", Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateAccount(ctx, accounts.Account{UserID: "@a:x", Localpart: "a", CreatedTS: 1}, "", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetAccount(ctx, "@a:x"); err != nil {
		t.Fatal(err)
	}
}

func TestAccountsAndProfiles(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	acc := accounts.Account{UserID: "@alice:x", Localpart: "alice", PasswordHash: "h", IsAdmin: true, CreatedTS: 42}
	if err := db.CreateAccount(ctx, acc, "Alice", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateAccount(ctx, acc, "", nil, nil); !errors.Is(err, accounts.ErrUserExists) {
		t.Fatalf("duplicate account: %v", err)
	}
	got, err := db.GetAccount(ctx, "@alice:x")
	if err != nil || got != acc {
		t.Fatalf("GetAccount = %+v, %v; want %+v", got, err, acc)
	}
	if _, err := db.GetAccount(ctx, "@nobody:x"); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	if _, err := db.GetProfile(ctx, "@nobody:x"); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("unknown profile: %v", err)
	}

	p, err := db.GetProfile(ctx, "@alice:x")
	if err != nil || p.DisplayName == nil || *p.DisplayName != "Alice" || p.AvatarURL != nil || len(p.Fields) != 0 {
		t.Fatalf("initial profile: %+v, %v", p, err)
	}
	avatar := "mxc://x/y"
	p.AvatarURL = &avatar
	p.DisplayName = nil
	p.Fields = map[string]json.RawMessage{"org.example.n": json.RawMessage(`{"a":[1,2]}`), "org.example.null": json.RawMessage(`null`)}
	if err := db.PutProfile(ctx, "@alice:x", p); err != nil {
		t.Fatal(err)
	}
	p, err = db.GetProfile(ctx, "@alice:x")
	if err != nil || p.DisplayName != nil || p.AvatarURL == nil || *p.AvatarURL != avatar ||
		string(p.Fields["org.example.n"]) != `{"a":[1,2]}` || string(p.Fields["org.example.null"]) != "null" {
		t.Fatalf("profile round trip: %+v, %v", p, err)
	}

	if err := db.Deactivate(ctx, "@alice:x"); err != nil {
		t.Fatal(err)
	}
	got, _ = db.GetAccount(ctx, "@alice:x")
	if !got.Deactivated || got.PasswordHash != "" {
		t.Fatalf("after deactivation: %+v", got)
	}
	p, _ = db.GetProfile(ctx, "@alice:x")
	if p.DisplayName != nil || p.AvatarURL != nil || len(p.Fields) != 0 {
		t.Fatalf("profile after deactivation: %+v", p)
	}
	if err := db.CreateAccount(ctx, accounts.Account{UserID: "@alice:x", Localpart: "alice"}, "", nil, nil); !errors.Is(err, accounts.ErrUserExists) {
		t.Fatalf("re-registering a deactivated user: %v", err)
	}
}

func TestDeletingDevicesDeletesTokens(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	if err := db.CreateAccount(ctx, accounts.Account{UserID: "@a:x", Localpart: "a"}, "", nil, nil); err != nil {
		t.Fatal(err)
	}
	// More devices than one DELETE chunk holds.
	const n = 503
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("D%04d", i)
		tok := accounts.IssuedTokens{AccessHash: "a" + ids[i], RefreshHash: "r" + ids[i]}
		if err := db.IssueDevice(ctx, accounts.Device{UserID: "@a:x", DeviceID: ids[i]}, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.DeleteDevices(ctx, "@a:x", ids[:n-1]); err != nil {
		t.Fatal(err)
	}
	devs, err := db.ListDevices(ctx, "@a:x")
	if err != nil || len(devs) != 1 || devs[0].DeviceID != ids[n-1] {
		t.Fatalf("devices left: %+v, %v", devs, err)
	}
	for _, q := range []string{`SELECT COUNT(*) FROM access_tokens`, `SELECT COUNT(*) FROM refresh_tokens`} {
		var c int
		if err := db.w.QueryRow(q).Scan(&c); err != nil || c != 1 {
			t.Errorf("%s = %d, %v; want 1", q, c, err)
		}
	}
	if _, err := db.LookupAccessToken(ctx, "a"+ids[0]); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("token of a deleted device: %v", err)
	}
	if _, err := db.LookupAccessToken(ctx, "a"+ids[n-1]); err != nil {
		t.Errorf("token of the kept device: %v", err)
	}
}

func TestNonces(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	for _, n := range []struct {
		nonce string
		ts    int64
	}{{"old", 100}, {"new", 200}} {
		if err := db.CreateNonce(ctx, n.nonce, n.ts, 0, 10); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := db.ConsumeNonce(ctx, "old", 150); ok || err != nil {
		t.Fatalf("expired nonce: %v, %v", ok, err)
	}
	if ok, err := db.ConsumeNonce(ctx, "new", 150); !ok || err != nil {
		t.Fatalf("fresh nonce: %v, %v", ok, err)
	}
	if ok, err := db.ConsumeNonce(ctx, "new", 150); ok || err != nil {
		t.Fatalf("reused nonce: %v, %v", ok, err)
	}
	if ok, err := db.ConsumeNonce(ctx, "never", 0); ok || err != nil {
		t.Fatalf("unknown nonce: %v, %v", ok, err)
	}
}
