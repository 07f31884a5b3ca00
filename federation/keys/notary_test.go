package keys

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"homeserver/pdu"
)

// queryResult decodes a notary answer and checks every entry carries the
// notary's signature.
func queryResult(t *testing.T, notary *server, status int, body []byte) []map[string]json.RawMessage {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ServerKeys == nil {
		t.Fatalf("server_keys is not an array: %s", body)
	}
	var out []map[string]json.RawMessage
	for _, raw := range resp.ServerKeys {
		if err := pdu.VerifyJSON(raw, notary.serverName, notary.key.KeyID, pubOf(notary.key)); err != nil {
			t.Errorf("entry lacks the notary's signature: %v", err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["_raw"] = raw
		out = append(out, m)
	}
	return out
}

func serverNameOf(m map[string]json.RawMessage) string {
	var s string
	_ = json.Unmarshal(m["server_name"], &s)
	return s
}

func TestNotaryGet(t *testing.T) {
	clk := newClock()
	remote := newServer(t, "remote.test", clk)
	notary := newServer(t, "notary.test", clk)
	notary.net.route("remote.test", remote.Handler())
	h := notary.Handler()

	status, body := do(t, h, http.MethodGet, "/_matrix/key/v2/query/remote.test", "")
	got := queryResult(t, notary, status, body)
	if len(got) != 1 || serverNameOf(got[0]) != "remote.test" {
		t.Fatalf("answer %s", body)
	}
	if err := pdu.VerifyJSON(got[0]["_raw"], "remote.test", "ed25519:k1", pubOf(remote.key)); err != nil {
		t.Errorf("origin signature lost: %v", err)
	}
	if n := notary.net.count("remote.test"); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}

	// Fresh enough: answered from the store.
	status, body = do(t, h, http.MethodGet, "/_matrix/key/v2/query/remote.test/ed25519:k1", "")
	if got := queryResult(t, notary, status, body); len(got) != 1 {
		t.Fatalf("deprecated form: %s", body)
	}
	if n := notary.net.count("remote.test"); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}

	// minimum_valid_until_ts beyond what is stored refetches, though not
	// more than once a minute.
	later := clk.now().Add(48 * time.Hour).UnixMilli()
	target := fmt.Sprintf("/_matrix/key/v2/query/remote.test?minimum_valid_until_ts=%d", later)
	queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, target, ""))
	if n := notary.net.count("remote.test"); n != 1 {
		t.Errorf("%d fetches within a minute, want 1", n)
	}
	clk.advance(2 * time.Minute)
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, target, ""))
	if n := notary.net.count("remote.test"); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	var until int64
	_ = json.Unmarshal(got[0]["valid_until_ts"], &until)
	if want := clk.now().Add(DefaultRefreshInterval).UnixMilli(); until != want {
		t.Errorf("answer valid until %d, want the refetched %d", until, want)
	}

	// A server gone away: its last response is still given out, so that
	// old events stay verifiable.
	notary.net.route("remote.test", nil)
	clk.advance(3 * 24 * time.Hour)
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, "/_matrix/key/v2/query/remote.test", ""))
	if len(got) != 1 || notary.net.count("remote.test") != 3 {
		t.Errorf("unreachable server: %d entries after %d fetches", len(got), notary.net.count("remote.test"))
	}

	// Unknown, unreachable: an empty array.
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, "/_matrix/key/v2/query/nowhere.test", ""))
	if len(got) != 0 {
		t.Errorf("unknown server: %d entries", len(got))
	}
	// A key the server does not have.
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, "/_matrix/key/v2/query/remote.test/ed25519:nope", ""))
	if len(got) != 0 {
		t.Errorf("unknown key: %d entries", len(got))
	}
	// A name that cannot be a server's is not fetched.
	before := notary.net.count("bad_name!")
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, "/_matrix/key/v2/query/bad_name!", ""))
	if len(got) != 0 || notary.net.count("bad_name!") != before {
		t.Errorf("invalid server name: %d entries", len(got))
	}

	// Our own keys: our own response.
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodGet, "/_matrix/key/v2/query/notary.test", ""))
	if len(got) != 1 || serverNameOf(got[0]) != "notary.test" {
		t.Errorf("own keys: %+v", got)
	}

	status, body = do(t, h, http.MethodGet, "/_matrix/key/v2/query/remote.test?minimum_valid_until_ts=soon", "")
	if status != http.StatusBadRequest || errcode(t, body) != "M_INVALID_PARAM" {
		t.Errorf("bad minimum_valid_until_ts: %d %s", status, body)
	}
}

func mustDo(t *testing.T, h http.Handler, method, target, body string) []byte {
	t.Helper()
	status, b := do(t, h, method, target, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, target, status, b)
	}
	return b
}

func TestNotaryPost(t *testing.T) {
	clk := newClock()
	remote := newServer(t, "remote.test", clk)
	other := newServer(t, "other.test", clk, func(o *Options) { o.RefreshInterval = time.Hour })
	notary := newServer(t, "notary.test", clk)
	notary.net.route("remote.test", remote.Handler())
	notary.net.route("other.test", other.Handler())
	h := notary.Handler()

	body := `{"server_keys": {
		"remote.test": {"ed25519:k1": {"minimum_valid_until_ts": 0}},
		"other.test": {},
		"notary.test": {"ed25519:k1": {}},
		"nowhere.test": {}
	}}`
	got := queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodPost, "/_matrix/key/v2/query", body))
	names := map[string]int{}
	for _, m := range got {
		names[serverNameOf(m)]++
	}
	if len(got) != 3 || names["remote.test"] != 1 || names["other.test"] != 1 || names["notary.test"] != 1 {
		t.Errorf("answer for %v", names)
	}

	// other.test's response is valid for an hour: asking for two hours
	// (after the minute between refetches) fetches it again; remote.test's
	// is fresh enough and is not.
	clk.advance(2 * time.Minute)
	min := clk.now().Add(2 * time.Hour).UnixMilli()
	body = fmt.Sprintf(`{"server_keys": {"remote.test": {"ed25519:k1": {"minimum_valid_until_ts": %d}}, "other.test": {"ed25519:k1": {"minimum_valid_until_ts": %d}}}}`, min, min)
	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodPost, "/_matrix/key/v2/query", body))
	if len(got) != 2 {
		t.Errorf("%d entries", len(got))
	}
	if r, o := notary.net.count("remote.test"), notary.net.count("other.test"); r != 1 || o != 2 {
		t.Errorf("fetches: remote %d (want 1), other %d (want 2)", r, o)
	}

	got = queryResult(t, notary, http.StatusOK, mustDo(t, h, http.MethodPost, "/_matrix/key/v2/query", `{"server_keys": {}}`))
	if len(got) != 0 {
		t.Errorf("no servers: %d entries", len(got))
	}
}

func TestNotaryPostMalformed(t *testing.T) {
	clk := newClock()
	notary := newServer(t, "notary.test", clk)
	h := notary.Handler()
	many := make([]string, maxQueryServers+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"s%d.test": {}`, i)
	}
	manyKeys := make([]string, maxQueryKeyIDs+1)
	for i := range manyKeys {
		manyKeys[i] = fmt.Sprintf(`"ed25519:%d": {}`, i)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{"", http.StatusBadRequest, "M_NOT_JSON"},
		{"not json", http.StatusBadRequest, "M_NOT_JSON"},
		{`{"server_keys": `, http.StatusBadRequest, "M_NOT_JSON"},
		{`[]`, http.StatusBadRequest, "M_BAD_JSON"},
		{`{}`, http.StatusBadRequest, "M_BAD_JSON"},
		{`{"server_keys": null}`, http.StatusBadRequest, "M_BAD_JSON"},
		{`{"server_keys": []}`, http.StatusBadRequest, "M_BAD_JSON"},
		{`{"server_keys": {"a.test": []}}`, http.StatusBadRequest, "M_BAD_JSON"},
		{`{"server_keys": {"a.test": {"ed25519:k": {"minimum_valid_until_ts": "soon"}}}}`, http.StatusBadRequest, "M_BAD_JSON"},
		{`{"server_keys": {` + strings.Join(many, ",") + `}}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{`{"server_keys": {"a.test": {` + strings.Join(manyKeys, ",") + `}}}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{`{"server_keys": {}, "pad": "` + strings.Repeat("x", maxQueryBody) + `"}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	} {
		status, body := do(t, h, http.MethodPost, "/_matrix/key/v2/query", tc.body)
		if status != tc.status || errcode(t, body) != tc.code {
			name := tc.body
			if len(name) > 60 {
				name = name[:60] + "..."
			}
			t.Errorf("%s: %d %s, want %d %s", name, status, body, tc.status, tc.code)
		}
	}
	if n := len(notary.net.calls); n != 0 {
		t.Errorf("malformed queries fetched from %d servers", n)
	}
}

// The notary answers that a third server relays stay verifiable by it:
// local.test asks notary.test, which fetched from remote.test on demand.
func TestNotaryChainEndToEnd(t *testing.T) {
	clk := newClock()
	local, notary, remote := notarySetup(t, clk, func(n *server) map[string]ed25519.PublicKey {
		return map[string]ed25519.PublicKey{n.key.KeyID: pubOf(n.key)}
	})
	// local.test can reach remote.test, but it serves garbage.
	local.net.route("remote.test", respond([]byte(`{}`)))
	pub, err := local.VerifyKey(t.Context(), "remote.test", "ed25519:k1", clk.now().UnixMilli())
	if err != nil || !pub.Equal(pubOf(remote.key)) {
		t.Fatalf("lookup: %v", err)
	}
	if n := notary.store.len(); n != 1 {
		t.Errorf("notary stored %d keys", n)
	}
}
