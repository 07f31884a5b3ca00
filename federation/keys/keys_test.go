package keys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/pdu"
)

func TestServeOwnKeys(t *testing.T) {
	clk := newClock()
	oldPub, _, _ := ed25519.GenerateKey(nil)
	s := newServer(t, "local.test", clk, func(o *Options) {
		o.OldKeys = map[string]OldKey{"ed25519:old": {Key: oldPub, ExpiredTS: 1_600_000_000_000}}
		o.RefreshInterval = 2 * time.Hour
	})
	h := s.Handler()

	status, body := do(t, h, http.MethodGet, "/_matrix/key/v2/server", "")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var resp struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		OldVerifyKeys map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
		ValidUntilTS int64                        `json:"valid_until_ts"`
		Signatures   map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ServerName != "local.test" {
		t.Errorf("server_name %q", resp.ServerName)
	}
	if got := resp.VerifyKeys["ed25519:k1"].Key; got != base64.RawStdEncoding.EncodeToString(pubOf(s.key)) || len(resp.VerifyKeys) != 1 {
		t.Errorf("verify_keys %+v", resp.VerifyKeys)
	}
	if old := resp.OldVerifyKeys["ed25519:old"]; old.Key != base64.RawStdEncoding.EncodeToString(oldPub) || old.ExpiredTS != 1_600_000_000_000 {
		t.Errorf("old_verify_keys %+v", resp.OldVerifyKeys)
	}
	if want := clk.now().Add(2 * time.Hour).UnixMilli(); resp.ValidUntilTS != want {
		t.Errorf("valid_until_ts %d, want %d", resp.ValidUntilTS, want)
	}
	if sig := resp.Signatures["local.test"]["ed25519:k1"]; sig == "" || strings.HasSuffix(sig, "=") {
		t.Errorf("signature %q: want unpadded base64", sig)
	}
	if err := pdu.VerifyJSON(body, "local.test", "ed25519:k1", pubOf(s.key)); err != nil {
		t.Errorf("our response does not verify: %v", err)
	}
	if canon, err := pdu.CanonicalJSON(body); err != nil || !bytes.Equal(canon, body) {
		t.Errorf("response is not canonical JSON: %s", body)
	}
	// What we serve passes our own checks of other servers' responses.
	got, _, err := s.parseKeyResponse(body, "local.test")
	if err != nil || len(got) != 2 {
		t.Fatalf("self-check: %+v, %v", got, err)
	}

	// The deprecated form with a key ID answers the same.
	status, body2 := do(t, h, http.MethodGet, "/_matrix/key/v2/server/ed25519:whatever", "")
	if status != http.StatusOK || !bytes.Equal(body, body2) {
		t.Errorf("deprecated form: %d %s", status, body2)
	}
	if status, body := do(t, h, http.MethodPost, "/_matrix/key/v2/server", "{}"); status != http.StatusMethodNotAllowed || errcode(t, body) != "M_UNRECOGNIZED" {
		t.Errorf("POST: %d %s", status, body)
	}

	// After a while the response is signed again with a later validity.
	clk.advance(2 * time.Minute)
	_, body3 := do(t, h, http.MethodGet, "/_matrix/key/v2/server", "")
	if err := json.Unmarshal(body3, &resp); err != nil {
		t.Fatal(err)
	}
	if want := clk.now().Add(2 * time.Hour).UnixMilli(); resp.ValidUntilTS != want {
		t.Errorf("later valid_until_ts %d, want %d", resp.ValidUntilTS, want)
	}
}

func TestDefaultRefreshInterval(t *testing.T) {
	clk := newClock()
	s := newServer(t, "local.test", clk)
	body, err := s.OwnResponse()
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		ValidUntilTS int64           `json:"valid_until_ts"`
		Old          json.RawMessage `json:"old_verify_keys"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if want := clk.now().Add(24 * time.Hour).UnixMilli(); resp.ValidUntilTS != want {
		t.Errorf("valid_until_ts %d, want %d", resp.ValidUntilTS, want)
	}
	if string(resp.Old) != "{}" {
		t.Errorf("old_verify_keys %s, want {}", resp.Old)
	}
}

func TestOwnKeysAnsweredLocally(t *testing.T) {
	clk := newClock()
	oldPub, _, _ := ed25519.GenerateKey(nil)
	expired := clk.now().UnixMilli() - 1000
	s := newServer(t, "local.test", clk, func(o *Options) {
		o.OldKeys = map[string]OldKey{"ed25519:old": {Key: oldPub, ExpiredTS: expired}}
	})
	ctx := context.Background()
	if pub, err := s.Lookup(ctx, "local.test", "ed25519:k1"); err != nil || !pub.Equal(pubOf(s.key)) {
		t.Errorf("current key: %v", err)
	}
	if pub, err := s.VerifyKey(ctx, "local.test", "ed25519:old", expired-1); err != nil || !pub.Equal(oldPub) {
		t.Errorf("old key before expiry: %v", err)
	}
	if _, err := s.Lookup(ctx, "local.test", "ed25519:old"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("old key now: %v", err)
	}
	if _, err := s.Lookup(ctx, "local.test", "ed25519:nope"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	if n := s.net.count("local.test"); n != 0 {
		t.Errorf("%d fetches of our own keys", n)
	}
}

func TestNewValidates(t *testing.T) {
	clk := newClock()
	good := newKey(t, "local.test", "ed25519:k1")
	pub, _, _ := ed25519.GenerateKey(nil)
	for name, o := range map[string]Options{
		"no server name": {Key: good, Store: newMemStore()},
		"key of another": {ServerName: "other.test", Key: good, Store: newMemStore()},
		"bad key ID":     {ServerName: "local.test", Key: pdu.Key{ServerName: "local.test", KeyID: "rsa:1", Private: good.Private}, Store: newMemStore()},
		"short key":      {ServerName: "local.test", Key: pdu.Key{ServerName: "local.test", KeyID: "ed25519:1", Private: good.Private[:10]}, Store: newMemStore()},
		"no store":       {ServerName: "local.test", Key: good},
		"old = current":  {ServerName: "local.test", Key: good, Store: newMemStore(), OldKeys: map[string]OldKey{"ed25519:k1": {Key: pub}}},
		"unsigned notary": {ServerName: "local.test", Key: good, Store: newMemStore(),
			TrustedKeyServers: []TrustedKeyServer{{ServerName: "notary.test"}}},
		"bad notary key": {ServerName: "local.test", Key: good, Store: newMemStore(),
			TrustedKeyServers: []TrustedKeyServer{{ServerName: "notary.test", VerifyKeys: map[string]ed25519.PublicKey{"ed25519:a": pub[:5]}}}},
	} {
		o.Now = clk.now
		if _, err := New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFetchDirectAndCache(t *testing.T) {
	clk := newClock()
	ctx := context.Background()
	oldPub, _, _ := ed25519.GenerateKey(nil)
	expired := clk.now().UnixMilli() - 1000
	remote := newServer(t, "remote.test", clk, func(o *Options) {
		o.OldKeys = map[string]OldKey{"ed25519:old": {Key: oldPub, ExpiredTS: expired}}
	})
	local := newServer(t, "local.test", clk)
	local.net.route("remote.test", remote.Handler())

	pub, err := local.Lookup(ctx, "remote.test", "ed25519:k1")
	if err != nil || !pub.Equal(pubOf(remote.key)) {
		t.Fatalf("lookup: %v", err)
	}
	if n := local.net.count("remote.test"); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	rows, _ := local.store.ServerKeys(ctx, "remote.test", nil)
	if len(rows) != 2 {
		t.Fatalf("stored %+v", rows)
	}
	for _, r := range rows {
		if err := pdu.VerifyJSON(r.KeyJSON, "remote.test", "ed25519:k1", pubOf(remote.key)); err != nil {
			t.Errorf("stored response of %s: %v", r.KeyID, err)
		}
		switch r.KeyID {
		case "ed25519:k1":
			if r.ExpiredTS != 0 || r.ValidUntilTS != clk.now().Add(DefaultRefreshInterval).UnixMilli() {
				t.Errorf("current key stored as %+v", r)
			}
		case "ed25519:old":
			if r.ExpiredTS != expired || !r.Key.Equal(oldPub) {
				t.Errorf("old key stored as %+v", r)
			}
		}
	}

	// Cached: no second fetch, for either key.
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	if pub, err := local.VerifyKey(ctx, "remote.test", "ed25519:old", expired-1); err != nil || !pub.Equal(oldPub) {
		t.Errorf("old key before expiry: %v", err)
	}
	if n := local.net.count("remote.test"); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	// The old key is not valid for what is signed now; asking again does
	// not change that.
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:old"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("expired key now: %v", err)
	}
}

func TestExpiryAndRefetch(t *testing.T) {
	clk := newClock()
	ctx := context.Background()
	remote := newServer(t, "remote.test", clk, func(o *Options) { o.RefreshInterval = time.Hour })
	local := newServer(t, "local.test", clk)
	local.net.route("remote.test", remote.Handler())

	start := clk.now().UnixMilli()
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	clk.advance(30 * time.Minute)
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	if n := local.net.count("remote.test"); n != 1 {
		t.Fatalf("%d fetches within validity, want 1", n)
	}
	clk.advance(31 * time.Minute)
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	if n := local.net.count("remote.test"); n != 2 {
		t.Fatalf("%d fetches after expiry, want 2", n)
	}
	// An event from within the first validity needs no fetch.
	if _, err := local.VerifyKey(ctx, "remote.test", "ed25519:k1", start+1000); err != nil {
		t.Fatal(err)
	}
	if n := local.net.count("remote.test"); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}

	// A server that goes away leaves its key unusable once expired.
	local.net.route("remote.test", nil)
	clk.advance(2 * time.Hour)
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("expired key of an unreachable server: %v", err)
	}
}

func TestValidityCappedAtSevenDays(t *testing.T) {
	clk := newClock()
	ctx := context.Background()
	remote := newServer(t, "remote.test", clk, func(o *Options) { o.RefreshInterval = 365 * 24 * time.Hour })
	local := newServer(t, "local.test", clk)
	local.net.route("remote.test", remote.Handler())

	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	rows, _ := local.store.ServerKeys(ctx, "remote.test", nil)
	if want := clk.now().Add(7 * 24 * time.Hour).UnixMilli(); len(rows) != 1 || rows[0].ValidUntilTS != want {
		t.Fatalf("stored %+v, want valid until %d", rows, want)
	}
	clk.advance(8 * 24 * time.Hour)
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	if n := local.net.count("remote.test"); n != 2 {
		t.Errorf("%d fetches after 8 days, want 2", n)
	}
}

// respond serves a fixed body as remote.test's key response.
func respond(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeRaw(w, body) })
}

func TestForgedResponsesRejected(t *testing.T) {
	clk := newClock()
	real := newKey(t, "remote.test", "ed25519:k1")
	forger := newKey(t, "remote.test", "ed25519:k1")
	until := clk.now().Add(time.Hour).UnixMilli()
	unsigned := func(name string, pub ed25519.PublicKey) []byte {
		b, _ := json.Marshal(map[string]any{
			"server_name":    name,
			"verify_keys":    map[string]any{"ed25519:k1": map[string]string{"key": base64.RawStdEncoding.EncodeToString(pub)}},
			"valid_until_ts": until,
		})
		return b
	}
	sign := func(k pdu.Key, b []byte) []byte {
		out, err := pdu.SignJSON(k, b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	good := sign(real, unsigned("remote.test", pubOf(real)))
	tampered := bytes.Replace(good, []byte(`"valid_until_ts":`), []byte(`"valid_until_ts":9`), 1)
	evil := newKey(t, "evil.test", "ed25519:k1")
	otherKey := newKey(t, "remote.test", "ed25519:other")

	for name, body := range map[string][]byte{
		"signed by another key":   sign(forger, unsigned("remote.test", pubOf(real))),
		"altered after signing":   tampered,
		"unsigned":                unsigned("remote.test", pubOf(real)),
		"for another server":      sign(evil, unsigned("evil.test", pubOf(evil))),
		"signed by unlisted key":  sign(otherKey, unsigned("remote.test", pubOf(real))),
		"one of two sigs is bad":  sign(otherKey, sign(forger, unsigned("remote.test", pubOf(real)))),
		"not JSON":                []byte(`{"server_name":`),
		"no valid_until_ts":       sign(real, []byte(`{"server_name":"remote.test","verify_keys":{"ed25519:k1":{"key":"`+base64.RawStdEncoding.EncodeToString(pubOf(real))+`"}}}`)),
		"malformed old key":       sign(real, []byte(`{"server_name":"remote.test","valid_until_ts":1,"old_verify_keys":{"ed25519:o":{"key":"!!","expired_ts":1}},"verify_keys":{"ed25519:k1":{"key":"`+base64.RawStdEncoding.EncodeToString(pubOf(real))+`"}}}`)),
		"duplicate members":       []byte(`{"server_name":"remote.test","server_name":"remote.test"}`),
		"signatures of bad shape": []byte(`{"server_name":"remote.test","valid_until_ts":1,"verify_keys":{},"signatures":"x"}`),
	} {
		t.Run(name, func(t *testing.T) {
			local := newServer(t, "local.test", clk)
			local.net.route("remote.test", respond(body))
			if _, err := local.Lookup(context.Background(), "remote.test", "ed25519:k1"); !errors.Is(err, ErrKeyNotFound) {
				t.Errorf("accepted: %v", err)
			}
			if n := local.store.len(); n != 0 {
				t.Errorf("%d keys stored", n)
			}
		})
	}

	// The control: the genuine response is accepted.
	local := newServer(t, "local.test", clk)
	local.net.route("remote.test", respond(good))
	if pub, err := local.Lookup(context.Background(), "remote.test", "ed25519:k1"); err != nil || !pub.Equal(pubOf(real)) {
		t.Errorf("genuine response: %v", err)
	}
}

// notarySetup: remote.test is reachable from notary.test only; local.test
// trusts notary.test.
func notarySetup(t *testing.T, clk *clock, notaryKeys func(*server) map[string]ed25519.PublicKey) (local, notary, remote *server) {
	t.Helper()
	remote = newServer(t, "remote.test", clk)
	notary = newServer(t, "notary.test", clk)
	notary.net.route("remote.test", remote.Handler())
	local = newServer(t, "local.test", clk, func(o *Options) {
		o.TrustedKeyServers = []TrustedKeyServer{{ServerName: "notary.test", VerifyKeys: notaryKeys(notary)}}
	})
	local.net.route("notary.test", notary.Handler())
	return local, notary, remote
}

func TestNotaryFallback(t *testing.T) {
	clk := newClock()
	ctx := context.Background()
	local, notary, remote := notarySetup(t, clk, func(n *server) map[string]ed25519.PublicKey {
		return map[string]ed25519.PublicKey{"ed25519:k1": pubOf(n.key)}
	})
	pub, err := local.Lookup(ctx, "remote.test", "ed25519:k1")
	if err != nil || !pub.Equal(pubOf(remote.key)) {
		t.Fatalf("lookup through notary: %v", err)
	}
	if d, n := local.net.count("remote.test"), local.net.count("notary.test"); d != 1 || n != 1 {
		t.Errorf("direct %d, notary %d requests; want 1 and 1", d, n)
	}
	if n := notary.net.count("remote.test"); n != 1 {
		t.Errorf("notary fetched %d times, want 1", n)
	}
	rows, _ := local.store.ServerKeys(ctx, "remote.test", nil)
	if len(rows) != 1 {
		t.Fatalf("stored %+v", rows)
	}
	if err := pdu.VerifyJSON(rows[0].KeyJSON, "notary.test", "ed25519:k1", pubOf(notary.key)); err != nil {
		t.Errorf("stored response lacks the notary's signature: %v", err)
	}
	// Cached like a direct answer.
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	if n := local.net.count("notary.test"); n != 1 {
		t.Errorf("%d notary requests, want 1", n)
	}
}

func TestNotarySignatureRequired(t *testing.T) {
	clk := newClock()
	wrong, _, _ := ed25519.GenerateKey(nil)
	local, _, _ := notarySetup(t, clk, func(*server) map[string]ed25519.PublicKey {
		return map[string]ed25519.PublicKey{"ed25519:k1": wrong}
	})
	if _, err := local.Lookup(context.Background(), "remote.test", "ed25519:k1"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("accepted a notary answer with a bad signature: %v", err)
	}
	if n := local.store.len(); n != 0 {
		t.Errorf("%d keys stored", n)
	}
}

func TestNotaryAnswerMustBeSignedByOrigin(t *testing.T) {
	clk := newClock()
	notaryKey := newKey(t, "notary.test", "ed25519:n")
	real := newKey(t, "remote.test", "ed25519:k1")
	resp, _ := json.Marshal(map[string]any{
		"server_name":    "remote.test",
		"verify_keys":    map[string]any{"ed25519:k1": map[string]string{"key": base64.RawStdEncoding.EncodeToString(pubOf(real))}},
		"valid_until_ts": clk.now().Add(time.Hour).UnixMilli(),
	})
	originSigned, _ := pdu.SignJSON(real, resp)
	// The notary vouches for a response altered after the origin signed.
	altered := bytes.Replace(originSigned, []byte(`"valid_until_ts":`), []byte(`"valid_until_ts":9`), 1)
	for name, entry := range map[string][]byte{
		"not signed by origin": resp,
		"altered":              altered,
		"not signed by notary": originSigned,
	} {
		t.Run(name, func(t *testing.T) {
			if name != "not signed by notary" {
				var err error
				if entry, err = pdu.SignJSON(notaryKey, entry); err != nil {
					t.Fatal(err)
				}
			}
			local := newServer(t, "local.test", clk, func(o *Options) {
				o.TrustedKeyServers = []TrustedKeyServer{{ServerName: "notary.test", VerifyKeys: map[string]ed25519.PublicKey{"ed25519:n": pubOf(notaryKey)}}}
			})
			local.net.route("notary.test", respond(serverKeysBody([][]byte{entry})))
			if _, err := local.Lookup(context.Background(), "remote.test", "ed25519:k1"); !errors.Is(err, ErrKeyNotFound) {
				t.Errorf("accepted: %v", err)
			}
			if n := local.store.len(); n != 0 {
				t.Errorf("%d keys stored", n)
			}
		})
	}
}

func TestNegativeCache(t *testing.T) {
	clk := newClock()
	ctx := context.Background()
	local := newServer(t, "local.test", clk)
	for range 5 {
		if _, err := local.Lookup(ctx, "down.test", "ed25519:k1"); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("unreachable server: %v", err)
		}
	}
	if n := local.net.count("down.test"); n != 1 {
		t.Errorf("%d fetches within a minute, want 1", n)
	}
	clk.advance(61 * time.Second)
	if _, err := local.Lookup(ctx, "down.test", "ed25519:k1"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatal(err)
	}
	if n := local.net.count("down.test"); n != 2 {
		t.Errorf("%d fetches after a minute, want 2", n)
	}

	// An unknown key of a reachable server: one fetch, which also stores
	// the server's real key.
	remote := newServer(t, "remote.test", clk)
	local.net.route("remote.test", remote.Handler())
	for range 5 {
		if _, err := local.Lookup(ctx, "remote.test", "ed25519:forged"); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if _, err := local.Lookup(ctx, "remote.test", "ed25519:k1"); err != nil {
		t.Fatal(err)
	}
	if n := local.net.count("remote.test"); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	// Key IDs and server names that cannot be valid are never fetched.
	for _, q := range [][2]string{{"remote.test", "rsa:1"}, {"remote.test", "ed25519:"}, {"bad/name", "ed25519:k1"}, {"", "ed25519:k1"}} {
		if _, err := local.Lookup(ctx, q[0], q[1]); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("%v: %v", q, err)
		}
	}
	if n := local.net.count("remote.test") + local.net.count("bad/name"); n != 1 {
		t.Errorf("invalid lookups fetched")
	}
}

func TestConcurrentLookupsShareOneFetch(t *testing.T) {
	clk := newClock()
	remote := newServer(t, "remote.test", clk)
	local := newServer(t, "local.test", clk)
	local.net.route("remote.test", remote.Handler())
	release := make(chan struct{})
	local.net.hook = func(ctx context.Context, _, _ string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = local.Lookup(context.Background(), "remote.test", "ed25519:k1")
		})
	}
	// A caller that gives up does not cancel the fetch for the others.
	ctx, cancel := context.WithCancel(context.Background())
	quitter := make(chan error)
	go func() {
		_, err := local.Lookup(ctx, "remote.test", "ed25519:k1")
		quitter <- err
	}()
	waitFor(t, func() bool {
		local.mu.Lock()
		defer local.mu.Unlock()
		f := local.flights[flightKey{"remote.test", false}]
		return f != nil && f.waiters == n+1
	})
	cancel()
	if err := <-quitter; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled lookup: %v", err)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("lookup %d: %v", i, err)
		}
	}
	if c := local.net.count("remote.test"); c != 1 {
		t.Errorf("%d fetches for %d concurrent lookups, want 1", c, n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestValidServerName(t *testing.T) {
	for name, want := range map[string]bool{
		"example.org": true, "example.org:8448": true, "1.2.3.4": true, "[::1]": true, "[::1]:8448": true,
		"localhost": true, "": false, "a/b": false, "example.org:": false, "example.org:123456": false,
		"[::1": false, "[]": false, "[::1]x": false, "ex ample.org": false, ":80": false, "a:b": false,
		strings.Repeat("a", 256): false,
	} {
		if got := validServerName(name); got != want {
			t.Errorf("validServerName(%q) = %v", name, got)
		}
	}
}
