package keys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/pdu"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.UnixMilli(1_700_000_000_000)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// memStore is a Store in memory with the semantics documented on Store.
type memStore struct {
	mu   sync.Mutex
	keys map[serverKey]StoredKey
}

func newMemStore() *memStore { return &memStore{keys: map[serverKey]StoredKey{}} }

func (m *memStore) StoreServerKeys(_ context.Context, ks []StoredKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range ks {
		id := serverKey{k.ServerName, k.KeyID}
		cur, ok := m.keys[id]
		if !ok || k.ValidUntilTS >= cur.ValidUntilTS || k.ExpiredTS != 0 && cur.ExpiredTS == 0 {
			k.KeyJSON = slices.Clone(k.KeyJSON)
			m.keys[id] = k
		}
	}
	return nil
}

func (m *memStore) ServerKeys(_ context.Context, serverName string, keyIDs []string) ([]StoredKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []StoredKey
	for id, k := range m.keys {
		if id.server == serverName && (len(keyIDs) == 0 || slices.Contains(keyIDs, id.keyID)) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b StoredKey) int { return strings.Compare(a.KeyID, b.KeyID) })
	return out, nil
}

func (m *memStore) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

// fakeNet is a Fetcher that hands requests to in-memory handlers by
// destination; a destination without one is unreachable.
type fakeNet struct {
	mu       sync.Mutex
	handlers map[string]http.Handler
	calls    map[string]int
	// hook, when set, runs before each request; an error fails it.
	hook func(ctx context.Context, destination, uri string) error
}

func newNet() *fakeNet {
	return &fakeNet{handlers: map[string]http.Handler{}, calls: map[string]int{}}
}

func (n *fakeNet) route(destination string, h http.Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h == nil {
		delete(n.handlers, destination)
		return
	}
	n.handlers[destination] = h
}

func (n *fakeNet) count(destination string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[destination]
}

func (n *fakeNet) Do(ctx context.Context, method, destination, requestURI string, body any, out any) error {
	n.mu.Lock()
	n.calls[destination]++
	h, hook := n.handlers[destination], n.hook
	n.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, destination, requestURI); err != nil {
			return err
		}
	}
	if h == nil {
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
	// The caller's context may be a request's that went through chi, whose
	// routing context a nested chi router would otherwise reuse.
	ctx = context.WithValue(ctx, chi.RouteCtxKey, (*chi.Context)(nil))
	req := httptest.NewRequestWithContext(ctx, method, requestURI, rd)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("%s %s on %s: HTTP %d: %s", method, requestURI, destination, rec.Code, rec.Body.String())
	}
	return json.Unmarshal(rec.Body.Bytes(), out)
}

func newKey(t *testing.T, server, id string) pdu.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pdu.Key{ServerName: server, KeyID: id, Private: priv}
}

func pubOf(k pdu.Key) ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// server is one homeserver's key service in a test.
type server struct {
	*Keys
	key   pdu.Key
	store *memStore
	net   *fakeNet
}

type serverOpt func(*Options)

func newServer(t *testing.T, name string, clk *clock, opts ...serverOpt) *server {
	t.Helper()
	s := &server{key: newKey(t, name, "ed25519:k1"), store: newMemStore(), net: newNet()}
	o := Options{ServerName: name, Key: s.key, Store: s.store, Fetcher: s.net, Now: clk.now, Logger: quietLog()}
	for _, f := range opts {
		f(&o)
	}
	k, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Keys = k
	return s
}

// get performs a request on h and returns status and body.
func do(t *testing.T, h http.Handler, method, target, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func errcode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errcode string `json:"errcode"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	return e.Errcode
}
