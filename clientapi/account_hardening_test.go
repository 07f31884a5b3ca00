package clientapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// Wrong passwords given to user-interactive auth count against
// rc_login.failed_attempts like those given to /login, on every endpoint
// that asks for one, and /login refuses too once they are spent.
func TestUIAPasswordRateLimit(t *testing.T) {
	t.Parallel()
	s := testserver.StartYAML(t, withConfig(t, "  failed_attempts: {per_second: 0, burst_count: 0}\n",
		"  failed_attempts: {per_second: 0.001, burst_count: 3}\n"))
	alice := s.Register("alice", "pw")
	s.Register("bob", "pw")
	// One body serves both endpoints: each ignores the other's field.
	uia := func(path, password string) *testserver.Response {
		body := map[string]any{"new_password": "new", "devices": []string{}}
		first := s.Do("POST", path, alice.Token, body)
		if first.Status != http.StatusUnauthorized {
			t.Fatalf("%s without auth: %d %s", path, first.Status, first.Body)
		}
		body["auth"] = map[string]any{
			"type": "m.login.password", "session": first.String("session"), "password": password,
			"identifier": map[string]any{"type": "m.id.user", "user": alice.ID},
		}
		return s.Do("POST", path, alice.Token, body)
	}
	for range 2 {
		wantErr(t, uia(v3+"/account/password", "wrong"), http.StatusUnauthorized, "M_FORBIDDEN")
	}
	wantErr(t, uia(v3+"/delete_devices", "wrong"), http.StatusUnauthorized, "M_FORBIDDEN")
	// Spent: even the right password is refused, here and at /login.
	wantErr(t, uia(v3+"/account/password", "pw"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	wantErr(t, uia(v3+"/delete_devices", "pw"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	wantErr(t, s.Do("POST", v3+"/login", "", passwordLogin("alice", "pw")), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	// The limit is per user.
	s.MustDo(http.StatusOK, "POST", v3+"/login", "", passwordLogin("bob", "pw"))
}

// Abandoned registration sessions count against rc_registration, so that
// an unauthenticated client cannot grow the session table without bound;
// completing a session already opened costs nothing more.
func TestRegistrationSessionsRateLimited(t *testing.T) {
	t.Parallel()
	s := testserver.StartYAML(t, withConfig(t, "rc_registration: {per_second: 0, burst_count: 0}\n",
		"rc_registration: {per_second: 0.001, burst_count: 2}\n"))
	open := func() string {
		r := s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", map[string]any{})
		return r.String("session")
	}
	first := open()
	open()
	wantErr(t, s.Do("POST", v3+"/register", "", map[string]any{}), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	// Auth without a session would open one.
	wantErr(t, s.Do("POST", v3+"/register", "", map[string]any{
		"username": "carol", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"},
	}), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	r := s.MustDo(http.StatusOK, "POST", v3+"/register", "", map[string]any{
		"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy", "session": first},
	})
	if r.String("user_id") != "@alice:test.local" {
		t.Fatalf("registration: %s", r.Body)
	}
}

// A /register body that is not UTF-8 is refused before user-interactive
// auth opens a session for it.
func TestRegisterInvalidUTF8(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	for _, body := range []string{`{"username": "a\xffb"}`, "{\"auth\": {\"type\": \"m.login.dummy\"}, \"password\": \"\xc3\x28\"}"} {
		wantErr(t, s.Do("POST", v3+"/register", "", body), http.StatusBadRequest, "M_NOT_JSON")
	}
}

// Values of the wrong JSON type are refused rather than stored.
func TestWrongJSONTypes(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	profile := v3 + "/profile/" + alice.ID
	for _, key := range []string{"displayname", "avatar_url", "m.tz"} {
		wantErr(t, s.Do("PUT", profile+"/"+key, alice.Token, map[string]any{key: nil}), http.StatusBadRequest, "M_BAD_JSON")
	}
	if r := s.MustDo(http.StatusOK, "GET", profile+"/displayname", "", nil); r.String("displayname") != "alice" {
		t.Fatalf("displayname after refused null: %s", r.Body)
	}

	room := s.CreateRoom(alice, nil)
	ev := s.SendText(alice, room, "hello")
	redact := v3 + "/rooms/" + room + "/redact/" + ev + "/"
	for i, reason := range []any{5, map[string]any{"a": 1}, []string{"x"}, true} {
		wantErr(t, s.Do("PUT", redact+string(rune('a'+i)), alice.Token, map[string]any{"reason": reason}),
			http.StatusBadRequest, "M_BAD_JSON")
	}
	s.MustDo(http.StatusOK, "PUT", redact+"ok", alice.Token, map[string]any{"reason": "spam"})

	filters := v3 + "/user/" + alice.ID + "/filter"
	for _, f := range []map[string]any{
		{"room": map[string]any{"timeline": map[string]any{"limit": -1}}},
		{"room": map[string]any{"state": map[string]any{"limit": -5}}},
		{"presence": map[string]any{"limit": -1}},
		{"account_data": map[string]any{"limit": -1}},
		{"room": map[string]any{"ephemeral": map[string]any{"limit": -1}}},
		{"room": map[string]any{"account_data": map[string]any{"limit": -1}}},
	} {
		wantErr(t, s.Do("POST", filters, alice.Token, f), http.StatusBadRequest, "M_BAD_JSON")
	}
	s.MustDo(http.StatusOK, "POST", filters, alice.Token, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 10}}})
}

// Behind a reverse proxy the client is the address the proxy appended,
// the last X-Forwarded-For hop; anything before it is the client's say.
func TestXForwardedForRightmostHop(t *testing.T) {
	t.Parallel()
	s := testserver.StartYAML(t, withConfig(t, "    type: http\n", "    type: http\n    x_forwarded: true\n"))
	s.Register("alice", "pw")
	login := func(fwd ...string) string {
		body, _ := json.Marshal(passwordLogin("alice", "pw"))
		req, err := http.NewRequest("POST", s.URL+v3+"/login", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fwd {
			req.Header.Add("X-Forwarded-For", f)
		}
		resp, err := s.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			AccessToken string `json:"access_token"`
			DeviceID    string `json:"device_id"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
			t.Fatalf("login: %d", resp.StatusCode)
		}
		d := s.MustDo(http.StatusOK, "GET", v3+"/devices/"+out.DeviceID, out.AccessToken, nil)
		return d.String("last_seen_ip")
	}
	for _, tc := range []struct {
		fwd  []string
		want string
	}{
		{[]string{"6.6.6.6, 203.0.113.7"}, "203.0.113.7"},
		{[]string{"6.6.6.6", "203.0.113.8"}, "203.0.113.8"},
		{[]string{"6.6.6.6,203.0.113.9 "}, "203.0.113.9"},
		{[]string{"198.51.100.1"}, "198.51.100.1"},
	} {
		if got := login(tc.fwd...); got != tc.want {
			t.Errorf("X-Forwarded-For %q: client %q, want %q", tc.fwd, got, tc.want)
		}
	}
}

// refresh_token_lifetime (Synapse's key) ends a session whose refresh
// token was not used in time, and caps its access token's lifetime.
func TestRefreshTokenLifetimeConfig(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "refresh_token_lifetime: 200ms\n")
	s.Register("alice", "pw")
	body := passwordLogin("alice", "pw")
	body["refresh_token"] = true
	login := s.MustDo(http.StatusOK, "POST", v3+"/login", "", body)
	if ms, _ := login.JSON["expires_in_ms"].(float64); ms != 200 {
		t.Fatalf("expires_in_ms: %s", login.Body)
	}
	time.Sleep(300 * time.Millisecond)
	r := s.Do("POST", v3+"/refresh", "", map[string]any{"refresh_token": login.String("refresh_token")})
	wantErr(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if r.JSON["soft_logout"] != false {
		t.Fatalf("expired refresh token: %s", r.Body)
	}
}
