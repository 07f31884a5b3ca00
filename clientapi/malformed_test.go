package clientapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"homeserver/accounts"
	"homeserver/internal/testserver"
	"homeserver/mxhttp"
)

// malformedCase is one request of TestMalformedInput and the exact answer
// the spec asks for.
type malformedCase struct {
	name   string
	method string
	path   string // from the server root, query included
	token  string // sent as "Authorization: Bearer <token>" when set
	auth   string // raw Authorization header; overrides token
	// body is nil (no body at all), a string (sent as is) or a
	// func(*testing.T) string (built when the case runs).
	body    any
	chunked bool // send the body without a Content-Length

	status  int
	errcode string // "" for a success or a bare user-interactive auth challenge
	uia     bool   // the answer is a user-interactive auth 401 (has flows)
	check   func(t *testing.T, r *malformedReply)
}

type malformedReply struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// lengthless hides the length of a reader so that the request goes out
// chunked, as a streaming client would send it.
type lengthless struct{ io.Reader }

func sendMalformed(t *testing.T, s *testserver.Server, c malformedCase) *malformedReply {
	t.Helper()
	var rd io.Reader
	switch b := c.body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case func(*testing.T) string:
		rd = strings.NewReader(b(t))
	default:
		t.Fatalf("unsupported body type %T", c.body)
	}
	if c.chunked {
		rd = lengthless{rd}
	}
	req, err := http.NewRequest(c.method, s.URL+c.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &malformedReply{status: resp.StatusCode, header: resp.Header, body: data}
	_ = json.Unmarshal(data, &r.json)
	return r
}

// checkMalformedReply asserts what holds for every answer of the client API:
// never a 500, always a JSON object with CORS headers, and a standard error
// body (or a user-interactive auth challenge) on failure.
func checkMalformedReply(t *testing.T, c malformedCase, r *malformedReply) {
	t.Helper()
	if r.status >= 500 {
		t.Errorf("server error %d: %s", r.status, r.body)
	}
	if r.status != c.status {
		t.Errorf("status %d, want %d: %s", r.status, c.status, r.body)
	}
	if mt, _, err := mime.ParseMediaType(r.header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Errorf("Content-Type %q, want application/json", r.header.Get("Content-Type"))
	}
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin %q, want *", got)
	}
	if r.json == nil {
		t.Fatalf("body is not a JSON object: %q", r.body)
	}
	code, hasCode := r.json["errcode"].(string)
	if c.uia {
		if flows, _ := r.json["flows"].([]any); len(flows) == 0 {
			t.Errorf("user-interactive auth answer without flows: %s", r.body)
		}
		if sess, _ := r.json["session"].(string); sess == "" {
			t.Errorf("user-interactive auth answer without session: %s", r.body)
		}
		if _, ok := r.json["params"].(map[string]any); !ok {
			t.Errorf("user-interactive auth answer without params: %s", r.body)
		}
	}
	switch {
	case c.errcode != "":
		if code != c.errcode {
			t.Errorf("errcode %q, want %s: %s", code, c.errcode, r.body)
		}
		if _, ok := r.json["error"].(string); !ok {
			t.Errorf("error response without a string error: %s", r.body)
		}
	case hasCode || r.json["errcode"] != nil:
		t.Errorf("unexpected errcode: %s", r.body)
	case r.status >= 300 && !c.uia:
		t.Errorf("failure without a standard error body: %s", r.body)
	}
	if code == "M_UNKNOWN_TOKEN" {
		if soft, ok := r.json["soft_logout"].(bool); !ok || soft {
			t.Errorf("M_UNKNOWN_TOKEN without soft_logout false: %s", r.body)
		}
	}
	if c.check != nil {
		c.check(t, r)
	}
}

const (
	mfV3      = "/_matrix/client/v3"
	mfR0      = "/_matrix/client/r0"
	mfV1      = "/_matrix/client/v1"
	mfAdmin   = "/_synapse/admin/v1/register"
	mfSecret  = "test-shared-secret" // registration_shared_secret of testserver.BaseConfig
	mfAlicePW = "alice-password"
	mfBobPW   = "bob-password"
)

// mfPasswordAuth is a complete m.login.password auth dict.
func mfPasswordAuth(user, password string) string {
	return fmt.Sprintf(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":%q},"password":%q}`, user, password)
}

// mfBodyShapes are the bodies every JSON endpoint must refuse the same way:
// absent or unparsable bodies are M_NOT_JSON, valid JSON that is not an
// object is M_BAD_JSON, more than 1 MiB is M_TOO_LARGE. Endpoints whose body
// is optional answer an absent one with absentStatus/absentCode/absentUIA.
func mfBodyShapes(prefix, method, path, token string, absentStatus int, absentCode string, absentUIA bool) []malformedCase {
	huge := `{"x":"` + strings.Repeat("a", mxhttp.DefaultBodyLimit) + `"}`
	c := func(name string, body any, status int, code string) malformedCase {
		return malformedCase{name: prefix + ": " + name, method: method, path: path, token: token, body: body, status: status, errcode: code}
	}
	absent := func(name string, body any) malformedCase {
		mc := c(name, body, absentStatus, absentCode)
		mc.uia = absentUIA
		return mc
	}
	chunkedHuge := c("huge body, chunked", huge, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	chunkedHuge.chunked = true
	return []malformedCase{
		absent("no body", nil),
		absent("empty body", ""),
		absent("whitespace body", " \r\n\t "),
		c("not JSON", `{not json`, http.StatusBadRequest, "M_NOT_JSON"),
		c("truncated JSON", `{"a":`, http.StatusBadRequest, "M_NOT_JSON"),
		c("trailing garbage", `{} x`, http.StatusBadRequest, "M_NOT_JSON"),
		c("two objects", `{}{}`, http.StatusBadRequest, "M_NOT_JSON"),
		c("array", `[]`, http.StatusBadRequest, "M_BAD_JSON"),
		c("string", `"str"`, http.StatusBadRequest, "M_BAD_JSON"),
		c("number", `1`, http.StatusBadRequest, "M_BAD_JSON"),
		c("null", `null`, http.StatusBadRequest, "M_BAD_JSON"),
		c("boolean", `true`, http.StatusBadRequest, "M_BAD_JSON"),
		c("huge body", huge, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"),
		chunkedHuge,
	}
}

// TestMalformedInput feeds malformed input to every endpoint of the client
// API and checks the exact status and errcode of each answer, then checks
// that none of it changed the accounts it touched.
func TestMalformedInput(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", mfAlicePW)
	bob := s.Register("bob", mfBobPW)
	aliceProfile := mfV3 + "/profile/" + alice.ID
	bobProfile := mfV3 + "/profile/" + bob.ID

	// Known state that the malformed requests must leave alone.
	s.MustDo(http.StatusOK, "PUT", mfV3+"/devices/"+alice.DeviceID, alice.Token, map[string]any{"display_name": "Laptop"})
	s.MustDo(http.StatusOK, "PUT", aliceProfile+"/displayname", alice.Token, map[string]any{"displayname": "Alice"})
	s.MustDo(http.StatusOK, "PUT", aliceProfile+"/avatar_url", alice.Token, map[string]any{"avatar_url": "mxc://test.local/avatar"})
	s.MustDo(http.StatusOK, "PUT", aliceProfile+"/org.example.colour", alice.Token, map[string]any{"org.example.colour": "blue"})
	devicesOf := func(tok string) map[string]any {
		t.Helper()
		out := map[string]any{}
		for _, d := range s.MustDo(http.StatusOK, "GET", mfV3+"/devices", tok, nil).JSON["devices"].([]any) {
			d := d.(map[string]any)
			out[d["device_id"].(string)] = d["display_name"]
		}
		return out
	}
	aliceDevices := devicesOf(alice.Token)
	aliceProfileBefore := s.MustDo(http.StatusOK, "GET", aliceProfile, "", nil).JSON
	bobProfileBefore := s.MustDo(http.StatusOK, "GET", bobProfile, "", nil).JSON
	// A second session of alice, logged out (with a junk body) by the table.
	spare := s.Login("alice", mfAlicePW)

	aliceAuth := mfPasswordAuth("alice", mfAlicePW)
	wrongAuth := mfPasswordAuth("alice", "wrong-password")
	bobAuth := mfPasswordAuth("bob", mfBobPW)
	long := strings.Repeat("a", 300)
	longUserID := "@" + long + ":test.local"

	nonce := func(t *testing.T) string {
		r := sendMalformed(t, s, malformedCase{method: "GET", path: mfAdmin})
		n, _ := r.json["nonce"].(string)
		if r.status != http.StatusOK || n == "" {
			t.Fatalf("no nonce: %d %s", r.status, r.body)
		}
		return n
	}
	// macBody is a shared-secret registration with a correct MAC.
	macBody := func(username, password string) func(*testing.T) string {
		return func(t *testing.T) string {
			n := nonce(t)
			mac := accounts.SharedSecretMAC(mfSecret, n, username, password, false, "")
			return fmt.Sprintf(`{"nonce":%q,"username":%q,"password":%q,"mac":%q}`, n, username, password, mac)
		}
	}
	var usedNonce string

	hasKey := func(key string, want any) func(t *testing.T, r *malformedReply) {
		return func(t *testing.T, r *malformedReply) {
			t.Helper()
			if got := r.json[key]; !reflect.DeepEqual(got, want) {
				t.Errorf("%s = %#v, want %#v: %s", key, got, want, r.body)
			}
		}
	}
	corsPreflight := func(t *testing.T, r *malformedReply) {
		t.Helper()
		if len(r.json) != 0 {
			t.Errorf("OPTIONS answered %s, want {}", r.body)
		}
		for h, want := range map[string][]string{
			"Access-Control-Allow-Methods": {"GET", "POST", "PUT", "DELETE", "OPTIONS"},
			"Access-Control-Allow-Headers": {"X-Requested-With", "Content-Type", "Authorization"},
		} {
			var got []string
			for v := range strings.SplitSeq(r.header.Get(h), ",") {
				got = append(got, strings.TrimSpace(v))
			}
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("%s %q lacks %s", h, r.header.Get(h), w)
				}
			}
		}
	}

	var cases []malformedCase
	add := func(cs ...malformedCase) { cases = append(cases, cs...) }

	// Routing: unknown endpoints, wrong methods, CORS pre-flight.
	add(
		malformedCase{name: "versions", method: "GET", path: "/_matrix/client/versions", status: 200},
		malformedCase{name: "versions: POST", method: "POST", path: "/_matrix/client/versions", body: `{not json`, status: 405, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "well-known", method: "GET", path: "/.well-known/matrix/client", status: 200,
			check: hasKey("m.homeserver", map[string]any{"base_url": "http://test.local/"})},
		malformedCase{name: "well-known: PUT", method: "PUT", path: "/.well-known/matrix/client", body: `{}`, status: 405, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "unknown endpoint", method: "GET", path: mfV3 + "/no/such/endpoint", status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "unknown endpoint with token", method: "POST", path: mfV3 + "/no_such_endpoint", token: alice.Token, body: `{not json`, status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "unknown version", method: "GET", path: "/_matrix/client/v4/login", status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "bare prefix", method: "GET", path: mfV3, status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "prefix with slash", method: "GET", path: mfV3 + "/", status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "trailing path segment", method: "GET", path: mfV3 + "/account/whoami/extra", token: alice.Token, status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "validity under v3", method: "GET", path: mfV3 + "/register/m.login.registration_token/validity?token=x", status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "empty device ID", method: "GET", path: mfV3 + "/devices/", token: alice.Token, status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "empty user ID", method: "GET", path: mfV3 + "/profile/", status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "empty profile key", method: "GET", path: aliceProfile + "/", status: 404, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "unknown admin endpoint", method: "GET", path: "/_synapse/admin/v1/nope", status: 404, errcode: "M_UNRECOGNIZED"},
	)
	for _, m := range []struct{ method, path string }{
		{"GET", mfV3 + "/register"},
		{"PUT", mfV3 + "/register?kind=guest"},
		{"POST", mfV3 + "/register/available?username=x"},
		{"GET", mfV3 + "/register/email/requestToken"},
		{"GET", mfV3 + "/register/msisdn/requestToken"},
		{"POST", mfV1 + "/register/m.login.registration_token/validity?token=x"},
		{"DELETE", mfV3 + "/login"},
		{"PATCH", mfR0 + "/login"},
		{"BREW", mfV3 + "/login"},
		{"GET", mfV3 + "/refresh"},
		{"GET", mfV3 + "/logout"},
		{"GET", mfV3 + "/logout/all"},
		{"POST", mfV3 + "/account/whoami"},
		{"GET", mfV3 + "/account/password"},
		{"GET", mfV3 + "/account/password/email/requestToken"},
		{"GET", mfV3 + "/account/deactivate"},
		{"DELETE", mfV3 + "/account/3pid"},
		{"GET", mfV3 + "/account/3pid/delete"},
		{"PUT", mfV3 + "/devices"},
		{"POST", mfV3 + "/devices/" + alice.DeviceID},
		{"GET", mfV3 + "/delete_devices"},
		{"POST", aliceProfile},
		{"POST", aliceProfile + "/displayname"},
		{"POST", mfV3 + "/capabilities"},
		{"DELETE", mfAdmin},
	} {
		// Method checks come before authentication: no token, junk body.
		add(malformedCase{name: "wrong method: " + m.method + " " + m.path, method: m.method, path: m.path,
			body: `{not json`, status: 405, errcode: "M_UNRECOGNIZED"})
	}
	for _, p := range []string{
		"/_matrix/client/versions", mfV3 + "/login", mfV3 + "/register", mfV3 + "/account/whoami", mfV3 + "/devices/" + alice.DeviceID,
		aliceProfile + "/displayname", mfV3 + "/delete_devices", mfV1 + "/register/m.login.registration_token/validity",
		mfAdmin, mfV3 + "/no/such/endpoint", "/.well-known/matrix/client",
	} {
		// Pre-flight never runs endpoint logic: no auth, body ignored.
		add(malformedCase{name: "OPTIONS " + p, method: "OPTIONS", path: p, body: `{not json`, status: 200, check: corsPreflight})
	}

	// Access tokens, on an endpoint that has no other input.
	whoami := mfV3 + "/account/whoami"
	isAlice := func(t *testing.T, r *malformedReply) {
		t.Helper()
		if r.json["user_id"] != alice.ID || r.json["device_id"] != alice.DeviceID {
			t.Errorf("whoami answered %s, want alice's device", r.body)
		}
	}
	add(
		malformedCase{name: "whoami", method: "GET", path: whoami, token: alice.Token, status: 200, check: isAlice},
		malformedCase{name: "whoami r0", method: "GET", path: mfR0 + "/account/whoami", token: alice.Token, status: 200, check: isAlice},
		malformedCase{name: "whoami api/v1", method: "GET", path: "/_matrix/client/api/v1/account/whoami", token: alice.Token, status: 200, check: isAlice},
		malformedCase{name: "whoami: no token", method: "GET", path: whoami, status: 401, errcode: "M_MISSING_TOKEN"},
		malformedCase{name: "whoami: unknown token", method: "GET", path: whoami, token: "not-a-token", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: huge token", method: "GET", path: whoami, token: strings.Repeat("x", 8000), status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: token of another server's shape", method: "GET", path: whoami, token: "syt_YWxpY2U_abcdefghijklmnopqrst_123456", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: Basic scheme", method: "GET", path: whoami, auth: "Basic YWxpY2U6cGFzc3dvcmQ=", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: other scheme with valid token", method: "GET", path: whoami, auth: "Token " + alice.Token, status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: Bearer without token", method: "GET", path: whoami, auth: "Bearer", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: bare token", method: "GET", path: whoami, auth: alice.Token, status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: token with junk after it", method: "GET", path: whoami, auth: "Bearer " + alice.Token + " junk", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: lower-case scheme", method: "GET", path: whoami, auth: "bearer " + alice.Token, status: 200, check: isAlice},
		malformedCase{name: "whoami: query token", method: "GET", path: whoami + "?access_token=" + alice.Token, status: 200, check: isAlice},
		malformedCase{name: "whoami: unknown query token", method: "GET", path: whoami + "?access_token=nope", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: empty query token", method: "GET", path: whoami + "?access_token=", status: 401, errcode: "M_MISSING_TOKEN"},
		malformedCase{name: "whoami: encoded junk query token", method: "GET", path: whoami + "?access_token=%00%FF%0A", status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "whoami: junk body ignored", method: "GET", path: whoami, token: alice.Token, body: `{not json`, status: 200, check: isAlice},
	)
	// Every authenticated endpoint refuses a missing, unknown or malformed
	// token before it looks at the body.
	for _, e := range []struct{ method, path string }{
		{"GET", mfV3 + "/capabilities"},
		{"POST", mfV3 + "/logout"},
		{"POST", mfV3 + "/logout/all"},
		{"POST", mfV3 + "/account/password"},
		{"POST", mfV3 + "/account/deactivate"},
		{"GET", mfV3 + "/account/3pid"},
		{"POST", mfV3 + "/account/3pid"},
		{"POST", mfV3 + "/account/3pid/add"},
		{"POST", mfV3 + "/account/3pid/bind"},
		{"POST", mfV3 + "/account/3pid/delete"},
		{"POST", mfV3 + "/account/3pid/unbind"},
		{"POST", mfV3 + "/account/3pid/email/requestToken"},
		{"POST", mfV3 + "/account/3pid/msisdn/requestToken"},
		{"GET", mfV3 + "/devices"},
		{"GET", mfV3 + "/devices/" + alice.DeviceID},
		{"PUT", mfV3 + "/devices/" + alice.DeviceID},
		{"DELETE", mfV3 + "/devices/" + alice.DeviceID},
		{"POST", mfV3 + "/delete_devices"},
		{"PUT", aliceProfile + "/displayname"},
		{"DELETE", aliceProfile + "/displayname"},
	} {
		n := e.method + " " + strings.TrimPrefix(e.path, mfV3)
		add(
			malformedCase{name: n + ": no token", method: e.method, path: e.path, body: `{not json`, status: 401, errcode: "M_MISSING_TOKEN"},
			malformedCase{name: n + ": unknown token", method: e.method, path: e.path, token: "nope", body: `{not json`, status: 401, errcode: "M_UNKNOWN_TOKEN"},
			malformedCase{name: n + ": malformed Authorization", method: e.method, path: e.path, auth: "Digest " + alice.Token, body: `{not json`, status: 401, errcode: "M_UNKNOWN_TOKEN"},
		)
	}
	add(
		malformedCase{name: "capabilities", method: "GET", path: mfV3 + "/capabilities", token: alice.Token, status: 200,
			check: func(t *testing.T, r *malformedReply) {
				if _, ok := r.json["capabilities"].(map[string]any)["m.room_versions"]; !ok {
					t.Errorf("capabilities without m.room_versions: %s", r.body)
				}
			}},
		malformedCase{name: "capabilities: query token", method: "GET", path: mfV3 + "/capabilities?access_token=" + alice.Token, status: 200},
	)

	// POST /register.
	reg := mfV3 + "/register"
	add(mfBodyShapes("register", "POST", reg, "", 400, "M_NOT_JSON", false)...)
	add(mfBodyShapes("register r0", "POST", mfR0+"/register", "", 400, "M_NOT_JSON", false)[:4]...)
	for _, b := range []struct{ name, body string }{
		{"username number", `{"username":5}`},
		{"username array", `{"username":["alice"]}`},
		{"username object", `{"username":{}}`},
		{"password boolean", `{"username":"newbie","password":true}`},
		{"password number", `{"password":12345}`},
		{"device_id number", `{"device_id":1}`},
		{"initial_device_display_name object", `{"initial_device_display_name":{}}`},
		{"inhibit_login string", `{"inhibit_login":"yes"}`},
		{"refresh_token string", `{"refresh_token":"true"}`},
		{"auth string", `{"username":"newbie","password":"pw","auth":"x"}`},
		{"auth array", `{"auth":[]}`},
		{"auth number", `{"auth":1}`},
		{"auth type number", `{"auth":{"type":5}}`},
		{"auth session array", `{"auth":{"type":"m.login.dummy","session":["x"]}}`},
	} {
		add(malformedCase{name: "register: " + b.name, method: "POST", path: reg, body: b.body, status: 400, errcode: "M_BAD_JSON"})
	}
	for _, b := range []struct{ name, username string }{
		{"space and bang", "bad name!"},
		{"non-ASCII", "é"},
		{"colon", "ali:ce"},
		{"at sign", "@alice"},
		{"leading underscore", "_reserved"},
		{"numeric", "12345"},
		{"too long", long},
	} {
		body, _ := json.Marshal(map[string]any{"username": b.username, "password": "pw"})
		add(malformedCase{name: "register: invalid username, " + b.name, method: "POST", path: reg, body: string(body), status: 400, errcode: "M_INVALID_USERNAME"})
	}
	add(
		malformedCase{name: "register: taken username", method: "POST", path: reg, body: `{"username":"alice","password":"pw"}`, status: 400, errcode: "M_USER_IN_USE"},
		malformedCase{name: "register: taken username, upper case", method: "POST", path: reg, body: `{"username":"ALICE","password":"pw"}`, status: 400, errcode: "M_USER_IN_USE"},
		malformedCase{name: "register: taken username with auth", method: "POST", path: reg, body: `{"username":"bob","password":"pw","auth":{"type":"m.login.dummy"}}`, status: 400, errcode: "M_USER_IN_USE"},
		malformedCase{name: "register: password too long", method: "POST", path: reg, body: `{"username":"newbie","password":"` + strings.Repeat("p", accounts.MaxPasswordLength+1) + `"}`, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "register: no auth", method: "POST", path: reg, body: `{"username":"newbie","password":"pw"}`, status: 401, uia: true},
		malformedCase{name: "register: empty object", method: "POST", path: reg, body: `{}`, status: 401, uia: true},
		// NUL can be stored in no PostgreSQL text column: refused at decoding.
		malformedCase{name: "register: NUL in username", method: "POST", path: reg, body: `{"username":"ali\u0000ce","password":"pw"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "register: NUL in device_id", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","device_id":"D\u0000"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "login: NUL in user", method: "POST", path: mfV3 + "/login", body: `{"type":"m.login.password","user":"al\u0000","password":"pw"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "login: NUL in device name", method: "POST", path: mfV3 + "/login", body: `{"type":"m.login.password","user":"alice","password":"pw","initial_device_display_name":"\u0000"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "register: null auth", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","auth":null}`, status: 401, uia: true},
		malformedCase{name: "register: empty auth", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","auth":{}}`, status: 401, uia: true},
		malformedCase{name: "register: unknown auth type", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","auth":{"type":"m.login.magic"}}`, status: 401, uia: true, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "register: auth type not offered", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","auth":{"type":"m.login.password","password":"pw"}}`, status: 401, uia: true, errcode: "M_UNRECOGNIZED"},
		malformedCase{name: "register: unknown session", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","auth":{"type":"m.login.dummy","session":"nosuchsession"}}`, status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "register: missing password", method: "POST", path: reg, body: `{"username":"newbie","auth":{"type":"m.login.dummy"}}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "register: empty password", method: "POST", path: reg, body: `{"username":"newbie","password":"","auth":{"type":"m.login.dummy"}}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "register: device_id too long", method: "POST", path: reg, body: `{"username":"newbie","password":"pw","device_id":"` + long + `","auth":{"type":"m.login.dummy"}}`, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "register: unknown kind", method: "POST", path: reg + "?kind=admin", body: `{"username":"newbie","password":"pw"}`, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "register: empty kind is user", method: "POST", path: reg + "?kind=", body: `{not json`, status: 400, errcode: "M_NOT_JSON"},
		malformedCase{name: "register: kind=user", method: "POST", path: reg + "?kind=user", body: `[]`, status: 400, errcode: "M_BAD_JSON"},
		// None of the refused registrations created the account.
		malformedCase{name: "register: nothing half-written", method: "GET", path: reg + "/available?username=newbie", status: 200, check: hasKey("available", true)},
	)
	guest := reg + "?kind=guest"
	add(mfBodyShapes("register guest", "POST", guest, "", 403, "M_GUEST_ACCESS_FORBIDDEN", false)...)
	add(
		// The spec says every field but initial_device_display_name MUST be
		// ignored for guests, so their types do not matter.
		malformedCase{name: "register guest: ignored fields of wrong types", method: "POST", path: guest, body: `{"username":5,"password":true,"auth":"x","device_id":[]}`, status: 403, errcode: "M_GUEST_ACCESS_FORBIDDEN"},
		malformedCase{name: "register guest: initial_device_display_name number", method: "POST", path: guest, body: `{"initial_device_display_name":5}`, status: 400, errcode: "M_BAD_JSON"},
	)

	// GET /register/available.
	avail := reg + "/available"
	add(
		malformedCase{name: "available: no username", method: "GET", path: avail, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "available: empty username", method: "GET", path: avail + "?username=", status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "available: space and bang", method: "GET", path: avail + "?username=bad%20name!", status: 400, errcode: "M_INVALID_USERNAME"},
		malformedCase{name: "available: non-ASCII", method: "GET", path: avail + "?username=%C3%A9", status: 400, errcode: "M_INVALID_USERNAME"},
		malformedCase{name: "available: NUL", method: "GET", path: avail + "?username=%00", status: 400, errcode: "M_INVALID_USERNAME"},
		malformedCase{name: "available: full user ID", method: "GET", path: avail + "?username=%40alice%3Atest.local", status: 400, errcode: "M_INVALID_USERNAME"},
		malformedCase{name: "available: too long", method: "GET", path: avail + "?username=" + long, status: 400, errcode: "M_INVALID_USERNAME"},
		malformedCase{name: "available: taken", method: "GET", path: avail + "?username=alice", status: 400, errcode: "M_USER_IN_USE"},
		malformedCase{name: "available: taken, upper case", method: "GET", path: avail + "?username=ALICE", status: 400, errcode: "M_USER_IN_USE"},
		malformedCase{name: "available: free", method: "GET", path: avail + "?username=free_name", status: 200, check: hasKey("available", true)},
	)

	// Third-party identifier validation is not supported: the answer is the
	// same whatever the body.
	for _, p := range []string{
		reg + "/email/requestToken", reg + "/msisdn/requestToken",
		mfV3 + "/account/password/email/requestToken", mfV3 + "/account/password/msisdn/requestToken",
	} {
		for _, b := range []any{nil, `{not json`, `[]`, `{"client_secret":5}`} {
			add(malformedCase{name: fmt.Sprintf("%s: body %v", strings.TrimPrefix(p, mfV3), b), method: "POST", path: p, body: b,
				status: 400, errcode: "M_THREEPID_MEDIUM_NOT_SUPPORTED"})
		}
	}

	// GET /_matrix/client/v1/register/m.login.registration_token/validity.
	validity := mfV1 + "/register/m.login.registration_token/validity"
	add(
		malformedCase{name: "token validity: no token", method: "GET", path: validity, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "token validity: empty token", method: "GET", path: validity + "?token=", status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "token validity: unknown token", method: "GET", path: validity + "?token=nope", status: 200, check: hasKey("valid", false)},
		malformedCase{name: "token validity: encoded junk", method: "GET", path: validity + "?token=%00%FF%22", status: 200, check: hasKey("valid", false)},
		malformedCase{name: "token validity: junk body ignored", method: "GET", path: validity + "?token=x", body: `{not json`, status: 200, check: hasKey("valid", false)},
	)

	// GET and POST /login.
	login := mfV3 + "/login"
	add(
		malformedCase{name: "login flows", method: "GET", path: login, status: 200,
			check: hasKey("flows", []any{map[string]any{"type": "m.login.password"}})},
		malformedCase{name: "login flows: junk query and body ignored", method: "GET", path: login + "?x=%00", body: `{not json`, status: 200},
	)
	add(mfBodyShapes("login", "POST", login, "", 400, "M_NOT_JSON", false)...)
	for _, b := range []struct{ name, body string }{
		{"type number", `{"type":5}`},
		{"identifier string", `{"type":"m.login.password","identifier":"alice","password":"x"}`},
		{"identifier type number", `{"type":"m.login.password","identifier":{"type":5},"password":"x"}`},
		{"identifier user number", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":5},"password":"x"}`},
		{"user number", `{"type":"m.login.password","user":5,"password":"x"}`},
		{"password boolean", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":true}`},
		{"device_id number", `{"type":"m.login.password","user":"alice","password":"x","device_id":5}`},
		{"initial_device_display_name array", `{"type":"m.login.password","user":"alice","password":"x","initial_device_display_name":[]}`},
		{"refresh_token string", `{"type":"m.login.password","user":"alice","password":"x","refresh_token":"yes"}`},
	} {
		add(malformedCase{name: "login: " + b.name, method: "POST", path: login, body: b.body, status: 400, errcode: "M_BAD_JSON"})
	}
	add(
		malformedCase{name: "login: empty object", method: "POST", path: login, body: `{}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "login: no identifier", method: "POST", path: login, body: `{"type":"m.login.password","password":"x"}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "login: identifier without user", method: "POST", path: login, body: `{"type":"m.login.password","identifier":{"type":"m.id.user"},"password":"x"}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "login: no password", method: "POST", path: login, body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "login: unknown type", method: "POST", path: login, body: `{"type":"m.login.magic","user":"alice","password":"x"}`, status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "login: type not offered", method: "POST", path: login, body: `{"type":"m.login.token","token":"x"}`, status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "login: unknown identifier type", method: "POST", path: login, body: `{"type":"m.login.password","identifier":{"type":"m.id.magic","user":"alice"},"password":"x"}`, status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "login: third-party identifier", method: "POST", path: login, body: `{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"a@b.c"},"password":"x"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: wrong password", method: "POST", path: login, body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: empty password", method: "POST", path: login, body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":""}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: password too long", method: "POST", path: login, body: `{"type":"m.login.password","user":"alice","password":"` + strings.Repeat("p", 600) + `"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: user ID without server", method: "POST", path: login, body: `{"type":"m.login.password","user":"@alice","password":"` + mfAlicePW + `"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: remote user ID", method: "POST", path: login, body: `{"type":"m.login.password","user":"@alice:elsewhere.example","password":"` + mfAlicePW + `"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: invalid localpart", method: "POST", path: login, body: `{"type":"m.login.password","user":"bad name!","password":"x"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: overlong user ID", method: "POST", path: login, body: `{"type":"m.login.password","user":"` + longUserID + `","password":"x"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "login: device_id too long", method: "POST", path: login, body: `{"type":"m.login.password","user":"alice","password":"` + mfAlicePW + `","device_id":"` + long + `"}`, status: 400, errcode: "M_INVALID_PARAM"},
	)

	// POST /refresh.
	refresh := mfV3 + "/refresh"
	add(mfBodyShapes("refresh", "POST", refresh, "", 400, "M_NOT_JSON", false)...)
	add(
		malformedCase{name: "refresh: empty object", method: "POST", path: refresh, body: `{}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "refresh: empty token", method: "POST", path: refresh, body: `{"refresh_token":""}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "refresh: token number", method: "POST", path: refresh, body: `{"refresh_token":5}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "refresh: unknown token", method: "POST", path: refresh, body: `{"refresh_token":"nope"}`, status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "refresh: access token is no refresh token", method: "POST", path: refresh, body: `{"refresh_token":"` + alice.Token + `"}`, status: 401, errcode: "M_UNKNOWN_TOKEN"},
	)

	// POST /account/password: the body is required.
	password := mfV3 + "/account/password"
	add(mfBodyShapes("password", "POST", password, alice.Token, 400, "M_NOT_JSON", false)...)
	for _, b := range []struct{ name, body string }{
		{"new_password number", `{"new_password":5}`},
		{"logout_devices string", `{"new_password":"x","logout_devices":"no"}`},
		{"auth string", `{"new_password":"x","auth":"x"}`},
		{"auth password number", `{"new_password":"x","auth":{"type":"m.login.password","password":5}}`},
		{"auth identifier string", `{"new_password":"x","auth":{"type":"m.login.password","identifier":"alice","password":"x"}}`},
	} {
		add(malformedCase{name: "password: " + b.name, method: "POST", path: password, token: alice.Token, body: b.body, status: 400, errcode: "M_BAD_JSON"})
	}
	add(
		malformedCase{name: "password: no auth", method: "POST", path: password, token: alice.Token, body: `{"new_password":"x"}`, status: 401, uia: true},
		malformedCase{name: "password: wrong password", method: "POST", path: password, token: alice.Token, body: `{"new_password":"x","auth":` + wrongAuth + `}`, status: 401, uia: true, errcode: "M_FORBIDDEN"},
		malformedCase{name: "password: another user's password", method: "POST", path: password, token: alice.Token, body: `{"new_password":"x","auth":` + bobAuth + `}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "password: missing new_password", method: "POST", path: password, token: alice.Token, body: `{"auth":` + aliceAuth + `}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "password: new_password too long", method: "POST", path: password, token: alice.Token, body: `{"new_password":"` + strings.Repeat("p", accounts.MaxPasswordLength+1) + `","auth":` + aliceAuth + `}`, status: 400, errcode: "M_INVALID_PARAM"},
	)

	// POST /account/deactivate: an absent body asks for the auth flows.
	deactivate := mfV3 + "/account/deactivate"
	add(mfBodyShapes("deactivate", "POST", deactivate, alice.Token, 401, "", true)...)
	for _, b := range []struct{ name, body string }{
		{"erase string", `{"erase":"yes"}`},
		{"id_server number", `{"id_server":5}`},
		{"auth string", `{"auth":"x"}`},
		{"auth type array", `{"auth":{"type":[]}}`},
	} {
		add(malformedCase{name: "deactivate: " + b.name, method: "POST", path: deactivate, token: alice.Token, body: b.body, status: 400, errcode: "M_BAD_JSON"})
	}
	add(
		malformedCase{name: "deactivate: empty object", method: "POST", path: deactivate, token: alice.Token, body: `{}`, status: 401, uia: true},
		malformedCase{name: "deactivate: wrong password", method: "POST", path: deactivate, token: alice.Token, body: `{"auth":` + wrongAuth + `}`, status: 401, uia: true, errcode: "M_FORBIDDEN"},
		malformedCase{name: "deactivate: another user's password", method: "POST", path: deactivate, token: alice.Token, body: `{"auth":` + bobAuth + `}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "deactivate: unknown auth type", method: "POST", path: deactivate, token: alice.Token, body: `{"auth":{"type":"m.login.dummy"}}`, status: 401, uia: true, errcode: "M_UNRECOGNIZED"},
	)

	// /account/3pid*.
	threepid := mfV3 + "/account/3pid"
	add(malformedCase{name: "3pid: list", method: "GET", path: threepid, token: alice.Token, body: `{not json`, status: 200, check: hasKey("threepids", []any{})})
	for _, p := range []string{threepid, threepid + "/add", threepid + "/bind", threepid + "/email/requestToken", threepid + "/msisdn/requestToken"} {
		for _, b := range []any{nil, `{not json`, `[]`, `{"sid":5}`} {
			add(malformedCase{name: fmt.Sprintf("POST %s: body %v", strings.TrimPrefix(p, mfV3), b), method: "POST", path: p, token: alice.Token, body: b,
				status: 400, errcode: "M_THREEPID_MEDIUM_NOT_SUPPORTED"})
		}
	}
	for _, p := range []string{threepid + "/delete", threepid + "/unbind"} {
		n := strings.TrimPrefix(p, mfV3)
		add(mfBodyShapes(n, "POST", p, alice.Token, 400, "M_NOT_JSON", false)...)
		add(
			malformedCase{name: n + ": empty object", method: "POST", path: p, token: alice.Token, body: `{}`, status: 400, errcode: "M_MISSING_PARAM"},
			malformedCase{name: n + ": no address", method: "POST", path: p, token: alice.Token, body: `{"medium":"email"}`, status: 400, errcode: "M_MISSING_PARAM"},
			malformedCase{name: n + ": no medium", method: "POST", path: p, token: alice.Token, body: `{"address":"a@b.c"}`, status: 400, errcode: "M_MISSING_PARAM"},
			malformedCase{name: n + ": medium number", method: "POST", path: p, token: alice.Token, body: `{"medium":5,"address":"a@b.c"}`, status: 400, errcode: "M_BAD_JSON"},
			malformedCase{name: n + ": address object", method: "POST", path: p, token: alice.Token, body: `{"medium":"email","address":{}}`, status: 400, errcode: "M_BAD_JSON"},
			malformedCase{name: n + ": id_server number", method: "POST", path: p, token: alice.Token, body: `{"medium":"email","address":"a@b.c","id_server":5}`, status: 400, errcode: "M_BAD_JSON"},
			malformedCase{name: n + ": unknown identifier", method: "POST", path: p, token: alice.Token, body: `{"medium":"email","address":"a@b.c"}`, status: 200,
				check: hasKey("id_server_unbind_result", "no-support")},
		)
	}

	// Devices.
	devices := mfV3 + "/devices"
	aliceDev := devices + "/" + alice.DeviceID
	add(
		malformedCase{name: "devices: list", method: "GET", path: devices, token: alice.Token, status: 200},
		malformedCase{name: "devices: get", method: "GET", path: aliceDev, token: alice.Token, status: 200, check: hasKey("display_name", "Laptop")},
		malformedCase{name: "devices: get, encoded ID", method: "GET", path: devices + "/%" + fmt.Sprintf("%02X", alice.DeviceID[0]) + alice.DeviceID[1:], token: alice.Token, status: 200, check: hasKey("device_id", alice.DeviceID)},
		malformedCase{name: "devices: get unknown", method: "GET", path: devices + "/NOSUCHDEVICE", token: alice.Token, status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "devices: get another user's", method: "GET", path: devices + "/" + bob.DeviceID, token: alice.Token, status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "devices: get overlong ID", method: "GET", path: devices + "/" + long, token: alice.Token, status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "devices: get, encoded slashes in ID", method: "GET", path: devices + "/%2F..%2F" + alice.DeviceID, token: alice.Token, status: 404, errcode: "M_NOT_FOUND"},
		// NUL and invalid UTF-8 can name no device (and no database stores NUL).
		malformedCase{name: "devices: get, NUL in ID", method: "GET", path: devices + "/%00%FF%2F..%2F", token: alice.Token, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "devices: put, NUL in ID", method: "PUT", path: devices + "/A%00", token: alice.Token, body: `{"display_name":"x"}`, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "devices: delete, invalid UTF-8 ID", method: "DELETE", path: devices + "/%FF", token: alice.Token, body: `{"auth":` + aliceAuth + `}`, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "unknown endpoint, NUL in path", method: "GET", path: mfV3 + "/no%00such", status: 400, errcode: "M_INVALID_PARAM"},
	)
	add(mfBodyShapes("devices put", "PUT", aliceDev, alice.Token, 400, "M_NOT_JSON", false)...)
	add(
		malformedCase{name: "devices put: display_name number", method: "PUT", path: aliceDev, token: alice.Token, body: `{"display_name":3}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "devices put: display_name array", method: "PUT", path: aliceDev, token: alice.Token, body: `{"display_name":["x"]}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "devices put: empty object changes nothing", method: "PUT", path: aliceDev, token: alice.Token, body: `{}`, status: 200},
		malformedCase{name: "devices put: unknown device", method: "PUT", path: devices + "/NOSUCHDEVICE", token: alice.Token, body: `{"display_name":"x"}`, status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "devices put: unknown device, empty object", method: "PUT", path: devices + "/NOSUCHDEVICE", token: alice.Token, body: `{}`, status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "devices put: another user's", method: "PUT", path: devices + "/" + bob.DeviceID, token: alice.Token, body: `{"display_name":"pwned"}`, status: 404, errcode: "M_NOT_FOUND"},
	)
	add(mfBodyShapes("devices delete", "DELETE", aliceDev, alice.Token, 401, "", true)...)
	add(
		malformedCase{name: "devices delete: auth string", method: "DELETE", path: aliceDev, token: alice.Token, body: `{"auth":"x"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "devices delete: auth session number", method: "DELETE", path: aliceDev, token: alice.Token, body: `{"auth":{"session":5}}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "devices delete: wrong password", method: "DELETE", path: aliceDev, token: alice.Token, body: `{"auth":` + wrongAuth + `}`, status: 401, uia: true, errcode: "M_FORBIDDEN"},
		malformedCase{name: "devices delete: another user's password", method: "DELETE", path: aliceDev, token: alice.Token, body: `{"auth":` + bobAuth + `}`, status: 403, errcode: "M_FORBIDDEN"},
		// The spec: 200 when the device "had been removed previously".
		malformedCase{name: "devices delete: unknown device", method: "DELETE", path: devices + "/NOSUCHDEVICE", token: alice.Token, body: `{"auth":` + aliceAuth + `}`, status: 200},
		malformedCase{name: "devices delete: another user's device", method: "DELETE", path: devices + "/" + bob.DeviceID, token: alice.Token, body: `{"auth":` + aliceAuth + `}`, status: 200},
	)
	delDevices := mfV3 + "/delete_devices"
	add(mfBodyShapes("delete_devices", "POST", delDevices, alice.Token, 400, "M_NOT_JSON", false)...)
	add(
		malformedCase{name: "delete_devices: devices string", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":"x"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "delete_devices: devices of numbers", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":[1,2]}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "delete_devices: devices object", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":{}}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "delete_devices: auth string", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":["` + alice.DeviceID + `"],"auth":"x"}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "delete_devices: no devices", method: "POST", path: delDevices, token: alice.Token, body: `{}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "delete_devices: null devices", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":null}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "delete_devices: no devices, with auth", method: "POST", path: delDevices, token: alice.Token, body: `{"auth":` + aliceAuth + `}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "delete_devices: no auth", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":["` + alice.DeviceID + `"]}`, status: 401, uia: true},
		malformedCase{name: "delete_devices: wrong password", method: "POST", path: delDevices, token: alice.Token, body: `{"devices":["` + alice.DeviceID + `"],"auth":` + wrongAuth + `}`, status: 401, uia: true, errcode: "M_FORBIDDEN"},
		malformedCase{name: "delete_devices: unknown and another user's devices", method: "POST", path: delDevices, token: alice.Token,
			body: `{"devices":["NOSUCHDEVICE","` + bob.DeviceID + `","` + long + `"],"auth":` + aliceAuth + `}`, status: 200},
		// Alice's deletions never reached bob's device.
		malformedCase{name: "devices: bob's device survived", method: "GET", path: devices + "/" + bob.DeviceID, token: bob.Token, status: 200,
			check: hasKey("device_id", bob.DeviceID)},
	)

	// Profiles: reading is unauthenticated, writing needs a token.
	add(
		malformedCase{name: "profile: get", method: "GET", path: aliceProfile, status: 200, check: hasKey("displayname", "Alice")},
		malformedCase{name: "profile: get, encoded user ID", method: "GET", path: mfV3 + "/profile/%40alice%3Atest.local", status: 200, check: hasKey("displayname", "Alice")},
		malformedCase{name: "profile: get field", method: "GET", path: aliceProfile + "/displayname", status: 200, check: hasKey("displayname", "Alice")},
		malformedCase{name: "profile: get field, encoded", method: "GET", path: mfV3 + "/profile/%40alice%3Atest.local/%64isplayname", status: 200, check: hasKey("displayname", "Alice")},
		malformedCase{name: "profile: get unset field", method: "GET", path: aliceProfile + "/org.example.unset", status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "profile: get invalid key", method: "GET", path: aliceProfile + "/Bad%20Key", status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "profile: get invalid UTF-8 key", method: "GET", path: aliceProfile + "/%FF", status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "profile: put NUL key", method: "PUT", path: aliceProfile + "/a%00", token: alice.Token, body: "{\"a\\u0000\":1}", status: 400, errcode: "M_INVALID_PARAM"},
		// Path parameters are decoded exactly once.
		malformedCase{name: "profile: get, double-encoded user ID", method: "GET", path: mfV3 + "/profile/%2540alice%3Atest.local", status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "profile: get, double-encoded sigil", method: "GET", path: mfV3 + "/profile/%2540alice:test.local", status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "profile: get unknown user", method: "GET", path: mfV3 + "/profile/@nobody:test.local", status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "profile: get unknown user's field", method: "GET", path: mfV3 + "/profile/@nobody:test.local/displayname", status: 404, errcode: "M_NOT_FOUND"},
		malformedCase{name: "profile: get remote user", method: "GET", path: mfV3 + "/profile/@alice:elsewhere.example", status: 404, errcode: "M_NOT_FOUND"},
	)
	for _, b := range []struct{ name, id string }{
		{"localpart only", "alice"},
		{"no server name", "@alice"},
		{"room ID", "!room:test.local"},
		{"missing sigil, encoded", "alice%3Atest.local"},
		{"over 255 bytes", longUserID},
		{"NUL", "%00"},
		{"encoded junk", "%FF%FE%0A"},
		{"encoded slash", "%2F..%2F"},
	} {
		add(
			malformedCase{name: "profile: get, bad user ID, " + b.name, method: "GET", path: mfV3 + "/profile/" + b.id, status: 400, errcode: "M_INVALID_PARAM"},
			malformedCase{name: "profile: get field, bad user ID, " + b.name, method: "GET", path: mfV3 + "/profile/" + b.id + "/displayname", status: 400, errcode: "M_INVALID_PARAM"},
			malformedCase{name: "profile: put, bad user ID, " + b.name, method: "PUT", path: mfV3 + "/profile/" + b.id + "/displayname", token: alice.Token, body: `{"displayname":"x"}`, status: 400, errcode: "M_INVALID_PARAM"},
			malformedCase{name: "profile: delete, bad user ID, " + b.name, method: "DELETE", path: mfV3 + "/profile/" + b.id + "/displayname", token: alice.Token, status: 400, errcode: "M_INVALID_PARAM"},
		)
	}
	add(mfBodyShapes("profile put", "PUT", aliceProfile+"/displayname", alice.Token, 400, "M_NOT_JSON", false)...)
	longKey := "org.example." + strings.Repeat("k", 250)
	add(
		malformedCase{name: "profile put: displayname number", method: "PUT", path: aliceProfile + "/displayname", token: alice.Token, body: `{"displayname":3}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "profile put: displayname object", method: "PUT", path: aliceProfile + "/displayname", token: alice.Token, body: `{"displayname":{"a":1}}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "profile put: avatar_url number", method: "PUT", path: aliceProfile + "/avatar_url", token: alice.Token, body: `{"avatar_url":5}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "profile put: m.tz number", method: "PUT", path: aliceProfile + "/m.tz", token: alice.Token, body: `{"m.tz":5}`, status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "profile put: empty object", method: "PUT", path: aliceProfile + "/displayname", token: alice.Token, body: `{}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "profile put: other key in body", method: "PUT", path: aliceProfile + "/displayname", token: alice.Token, body: `{"avatar_url":"mxc://test.local/x"}`, status: 400, errcode: "M_MISSING_PARAM"},
		malformedCase{name: "profile put: invalid key", method: "PUT", path: aliceProfile + "/Bad%20Key", token: alice.Token, body: `{"Bad Key":"x"}`, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "profile put: key too long", method: "PUT", path: aliceProfile + "/" + longKey, token: alice.Token, body: `{"` + longKey + `":"x"}`, status: 400, errcode: "M_KEY_TOO_LARGE"},
		malformedCase{name: "profile put: profile too large", method: "PUT", path: aliceProfile + "/org.example.big", token: alice.Token,
			body: `{"org.example.big":"` + strings.Repeat("b", 70*1024) + `"}`, status: 400, errcode: "M_PROFILE_TOO_LARGE"},
		malformedCase{name: "profile put: another user's", method: "PUT", path: bobProfile + "/displayname", token: alice.Token, body: `{"displayname":"pwned"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "profile put: unknown user", method: "PUT", path: mfV3 + "/profile/@nobody:test.local/displayname", token: alice.Token, body: `{"displayname":"x"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "profile put: remote user", method: "PUT", path: mfV3 + "/profile/@alice:elsewhere.example/displayname", token: alice.Token, body: `{"displayname":"x"}`, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "profile put: same value, encoded user ID", method: "PUT", path: mfV3 + "/profile/%40alice%3Atest.local/displayname", token: alice.Token, body: `{"displayname":"Alice"}`, status: 200},
		malformedCase{name: "profile delete: another user's", method: "DELETE", path: bobProfile + "/displayname", token: alice.Token, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "profile delete: invalid key", method: "DELETE", path: aliceProfile + "/Bad%20Key", token: alice.Token, status: 400, errcode: "M_INVALID_PARAM"},
		malformedCase{name: "profile delete: key too long", method: "DELETE", path: aliceProfile + "/" + longKey, token: alice.Token, status: 400, errcode: "M_KEY_TOO_LARGE"},
		// The spec: 200 when the field "doesn't exist"; the body is ignored.
		malformedCase{name: "profile delete: unset field, junk body", method: "DELETE", path: aliceProfile + "/org.example.unset", token: alice.Token, body: `{not json`, status: 200},
	)

	// Synapse's shared-secret registration.
	add(malformedCase{name: "admin register: nonce", method: "GET", path: mfAdmin, body: `{not json`, status: 200,
		check: func(t *testing.T, r *malformedReply) {
			if n, _ := r.json["nonce"].(string); n == "" {
				t.Errorf("no nonce: %s", r.body)
			}
		}})
	add(mfBodyShapes("admin register", "POST", mfAdmin, "", 400, "M_NOT_JSON", false)...)
	for _, b := range []struct{ name, body string }{
		{"nonce number", `{"nonce":5}`},
		{"username number", `{"nonce":"x","username":5}`},
		{"password boolean", `{"nonce":"x","username":"x","password":true}`},
		{"admin string", `{"nonce":"x","admin":"yes"}`},
		{"mac array", `{"nonce":"x","mac":[]}`},
		{"user_type number", `{"nonce":"x","user_type":1}`},
		// Synapse answers a missing field with M_BAD_JSON; so do we.
		{"empty object", `{}`},
	} {
		add(malformedCase{name: "admin register: " + b.name, method: "POST", path: mfAdmin, body: b.body, status: 400, errcode: "M_BAD_JSON"})
	}
	withNonce := func(fields string) func(*testing.T) string {
		return func(t *testing.T) string { return fmt.Sprintf(`{"nonce":%q%s}`, nonce(t), fields) }
	}
	add(
		malformedCase{name: "admin register: unknown nonce", method: "POST", path: mfAdmin, body: `{"nonce":"nope","username":"mallory","password":"pw","mac":"00"}`, status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "admin register: no username", method: "POST", path: mfAdmin, body: withNonce(`,"password":"pw","mac":"00"`), status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "admin register: no password", method: "POST", path: mfAdmin, body: withNonce(`,"username":"mallory","mac":"00"`), status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "admin register: no mac", method: "POST", path: mfAdmin, body: withNonce(`,"username":"mallory","password":"pw"`), status: 400, errcode: "M_BAD_JSON"},
		malformedCase{name: "admin register: unknown user_type", method: "POST", path: mfAdmin, body: withNonce(`,"username":"mallory","password":"pw","user_type":"god","mac":"00"`), status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "admin register: username too long", method: "POST", path: mfAdmin, body: withNonce(`,"username":"` + strings.Repeat("m", 600) + `","password":"pw","mac":"00"`), status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "admin register: wrong mac", method: "POST", path: mfAdmin, body: func(t *testing.T) string {
			usedNonce = nonce(t)
			return fmt.Sprintf(`{"nonce":%q,"username":"mallory","password":"pw","mac":"%s"}`, usedNonce, strings.Repeat("0", 40))
		}, status: 403, errcode: "M_FORBIDDEN"},
		malformedCase{name: "admin register: replayed nonce", method: "POST", path: mfAdmin, body: func(t *testing.T) string {
			mac := accounts.SharedSecretMAC(mfSecret, usedNonce, "mallory", "pw", false, "")
			return fmt.Sprintf(`{"nonce":%q,"username":"mallory","password":"pw","mac":%q}`, usedNonce, mac)
		}, status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "admin register: invalid username", method: "POST", path: mfAdmin, body: macBody("bad name!", "pw"), status: 400, errcode: "M_INVALID_USERNAME"},
		malformedCase{name: "admin register: taken username", method: "POST", path: mfAdmin, body: macBody("alice", "pw"), status: 400, errcode: "M_USER_IN_USE"},
		malformedCase{name: "admin register: password too long", method: "POST", path: mfAdmin, body: macBody("mallory", strings.Repeat("p", 600)), status: 400, errcode: "M_UNKNOWN"},
		malformedCase{name: "admin register: nothing half-written", method: "GET", path: avail + "?username=mallory", status: 200, check: hasKey("available", true)},
	)

	// Logging out with a junk body works (the endpoints take none); these run
	// last since they end sessions.
	add(
		malformedCase{name: "logout: junk body ignored", method: "POST", path: mfV3 + "/logout", token: spare.Token, body: `{not json`, status: 200},
		malformedCase{name: "logout: token is gone", method: "GET", path: whoami, token: spare.Token, status: 401, errcode: "M_UNKNOWN_TOKEN"},
		malformedCase{name: "logout all: junk body ignored", method: "POST", path: mfV3 + "/logout/all", token: bob.Token, body: `[]`, status: 200},
		malformedCase{name: "logout all: token is gone", method: "GET", path: whoami, token: bob.Token, status: 401, errcode: "M_UNKNOWN_TOKEN"},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkMalformedReply(t, c, sendMalformed(t, s, c))
		})
	}
	t.Logf("%d malformed-input cases", len(cases))

	// Nothing was lost or half-written.
	s.MustDo(http.StatusOK, "GET", whoami, alice.Token, nil)
	if got := devicesOf(alice.Token); !reflect.DeepEqual(got, aliceDevices) {
		t.Errorf("alice's devices changed: %v, want %v", got, aliceDevices)
	}
	if got := s.MustDo(http.StatusOK, "GET", aliceProfile, "", nil).JSON; !reflect.DeepEqual(got, aliceProfileBefore) {
		t.Errorf("alice's profile changed: %v, want %v", got, aliceProfileBefore)
	}
	if got := s.MustDo(http.StatusOK, "GET", bobProfile, "", nil).JSON; !reflect.DeepEqual(got, bobProfileBefore) {
		t.Errorf("bob's profile changed: %v, want %v", got, bobProfileBefore)
	}
	for _, name := range []string{"newbie", "mallory"} {
		if r := s.Do("GET", avail+"?username="+name, "", nil); r.Status != http.StatusOK {
			t.Errorf("%s was registered: %d %s", name, r.Status, r.Body)
		}
	}
	if u := s.Login("alice", mfAlicePW); u.ID != alice.ID {
		t.Errorf("alice logs in as %q", u.ID)
	}
	if u := s.Login("bob", mfBobPW); u.ID != bob.ID {
		t.Errorf("bob logs in as %q", u.ID)
	}
}
