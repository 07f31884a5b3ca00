package storage_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-chi/chi/v5"

	"homeserver/federation/keys"
	"homeserver/pdu"
	"homeserver/storage"
)

// openServerKeysDB opens a fresh database: SQLite, or PostgreSQL when
// HOMESERVER_TEST_POSTGRES names a server (a throwaway database on it).
func openServerKeysDB(t *testing.T) *storage.DB {
	t.Helper()
	opts := storage.Options{Path: filepath.Join(t.TempDir(), "homeserver.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if dsn := os.Getenv("HOMESERVER_TEST_POSTGRES"); dsn != "" {
		opts.Engine, opts.DSN = storage.Postgres, throwawayPostgres(t, dsn)
	}
	db, err := storage.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func throwawayPostgres(t *testing.T, dsn string) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "hs_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("dropping test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func TestServerKeysStore(t *testing.T) {
	ctx := context.Background()
	db := openServerKeysDB(t)
	pub := func() ed25519.PublicKey {
		p, _, _ := ed25519.GenerateKey(rand.Reader)
		return p
	}
	k1, k2, old := pub(), pub(), pub()
	resp1 := []byte(`{"server_name":"remote.test","valid_until_ts":1000}`)
	err := db.StoreServerKeys(ctx, []keys.StoredKey{
		{ServerName: "remote.test", KeyID: "ed25519:b", Key: k1, ValidUntilTS: 1000, FetchedTS: 10, KeyJSON: resp1},
		{ServerName: "remote.test", KeyID: "ed25519:a", Key: old, ValidUntilTS: 1000, ExpiredTS: 500, FetchedTS: 10, KeyJSON: resp1},
		{ServerName: "other.test", KeyID: "ed25519:b", Key: k2, ValidUntilTS: 7, FetchedTS: 1, KeyJSON: []byte(`{}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.StoreServerKeys(ctx, nil); err != nil {
		t.Fatal(err)
	}

	get := func(server string, ids ...string) []keys.StoredKey {
		t.Helper()
		rows, err := db.ServerKeys(ctx, server, ids)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	rows := get("remote.test")
	if len(rows) != 2 || rows[0].KeyID != "ed25519:a" || rows[1].KeyID != "ed25519:b" {
		t.Fatalf("all keys: %+v", rows)
	}
	a, b := rows[0], rows[1]
	if !a.Key.Equal(old) || a.ExpiredTS != 500 || a.ValidUntilTS != 1000 || a.FetchedTS != 10 || !bytes.Equal(a.KeyJSON, resp1) || a.ServerName != "remote.test" {
		t.Errorf("old key: %+v", a)
	}
	if !b.Key.Equal(k1) || b.ExpiredTS != 0 || b.ValidUntilTS != 1000 {
		t.Errorf("current key: %+v", b)
	}
	if rows := get("remote.test", "ed25519:b", "ed25519:nope"); len(rows) != 1 || rows[0].KeyID != "ed25519:b" {
		t.Errorf("by ID: %+v", rows)
	}
	if rows := get("nowhere.test"); len(rows) != 0 {
		t.Errorf("unknown server: %+v", rows)
	}

	store := func(k keys.StoredKey) {
		t.Helper()
		k.ServerName = "remote.test"
		if err := db.StoreServerKeys(ctx, []keys.StoredKey{k}); err != nil {
			t.Fatal(err)
		}
	}
	// An older response (a notary's cached one) does not replace a newer.
	store(keys.StoredKey{KeyID: "ed25519:b", Key: k2, ValidUntilTS: 900, KeyJSON: []byte(`{"older":1}`)})
	if r := get("remote.test", "ed25519:b")[0]; !r.Key.Equal(k1) || r.ValidUntilTS != 1000 {
		t.Errorf("older response replaced the newer: %+v", r)
	}
	// A newer one does, new public key and all (a reinstalled server
	// reusing its key ID).
	store(keys.StoredKey{KeyID: "ed25519:b", Key: k2, ValidUntilTS: 2000, FetchedTS: 20, KeyJSON: []byte(`{"newer":1}`)})
	if r := get("remote.test", "ed25519:b")[0]; !r.Key.Equal(k2) || r.ValidUntilTS != 2000 || r.FetchedTS != 20 || string(r.KeyJSON) != `{"newer":1}` {
		t.Errorf("newer response: %+v", r)
	}
	// News of expiry lands even from a response valid for less long...
	store(keys.StoredKey{KeyID: "ed25519:b", Key: k2, ValidUntilTS: 1500, ExpiredTS: 1200, KeyJSON: []byte(`{"expired":1}`)})
	if r := get("remote.test", "ed25519:b")[0]; r.ExpiredTS != 1200 || r.ValidUntilTS != 1500 {
		t.Errorf("expiry: %+v", r)
	}
	// ...and an older response listing the key as current does not undo it.
	store(keys.StoredKey{KeyID: "ed25519:b", Key: k2, ValidUntilTS: 1400, KeyJSON: []byte(`{"stale":1}`)})
	if r := get("remote.test", "ed25519:b")[0]; r.ExpiredTS != 1200 {
		t.Errorf("expiry undone: %+v", r)
	}
	// Other servers' keys are untouched.
	if rows := get("other.test"); len(rows) != 1 || !rows[0].Key.Equal(k2) || rows[0].ValidUntilTS != 7 {
		t.Errorf("other server: %+v", rows)
	}
}

// handlerFetcher routes federation requests to in-memory handlers.
type handlerFetcher map[string]http.Handler

func (f handlerFetcher) Do(ctx context.Context, method, destination, requestURI string, body any, out any) error {
	h, ok := f[destination]
	if !ok {
		return fmt.Errorf("%s is unreachable", destination)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	// A fresh chi routing context: ctx may be that of a routed request.
	ctx = context.WithValue(ctx, chi.RouteCtxKey, (*chi.Context)(nil))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, method, requestURI, rd))
	if rec.Code != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", destination, rec.Code)
	}
	return json.Unmarshal(rec.Body.Bytes(), out)
}

// The key service on the real database: fetch, store, look up again
// without fetching, and answer as a notary from what was stored.
func TestServerKeysService(t *testing.T) {
	ctx := context.Background()
	newKeys := func(name string, store keys.Store, f keys.Fetcher) (*keys.Keys, pdu.Key) {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		key := pdu.Key{ServerName: name, KeyID: "ed25519:a_1", Private: priv}
		oldPub, _, _ := ed25519.GenerateKey(rand.Reader)
		k, err := keys.New(keys.Options{ServerName: name, Key: key, Store: store, Fetcher: f,
			OldKeys: map[string]keys.OldKey{"ed25519:old": {Key: oldPub, ExpiredTS: 1}},
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return k, key
	}
	remote, remoteKey := newKeys("remote.test", openServerKeysDB(t), nil)
	fetcher := handlerFetcher{"remote.test": remote.Handler()}
	local, localKey := newKeys("local.test", openServerKeysDB(t), fetcher)

	pub, err := local.Lookup(ctx, "remote.test", "ed25519:a_1")
	if err != nil || !pub.Equal(remoteKey.Private.Public().(ed25519.PublicKey)) {
		t.Fatalf("lookup: %v", err)
	}
	delete(fetcher, "remote.test")
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:a_1"); err != nil {
		t.Fatalf("second lookup, remote gone: %v", err)
	}

	rec := httptest.NewRecorder()
	local.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/_matrix/key/v2/query",
		bytes.NewReader([]byte(`{"server_keys":{"remote.test":{"ed25519:a_1":{},"ed25519:old":{}}}}`))))
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("notary answer %d %s: %v", rec.Code, rec.Body, err)
	}
	if len(resp.ServerKeys) != 1 {
		t.Fatalf("notary answer: %s", rec.Body)
	}
	for _, signer := range []pdu.Key{remoteKey, localKey} {
		if err := pdu.VerifyJSON(resp.ServerKeys[0], signer.ServerName, signer.KeyID, signer.Private.Public().(ed25519.PublicKey)); err != nil {
			t.Errorf("signature of %s: %v", signer.ServerName, err)
		}
	}
}
