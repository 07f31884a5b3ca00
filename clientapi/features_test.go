package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"homeserver/internal/testserver"
)

const v3 = "/_matrix/client/v3"

// wantErr fails the test unless r is a Matrix error with this status and
// errcode.
func wantErr(t *testing.T, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("got %d %q, want %d %s: %s", r.Status, r.Errcode(), status, errcode, r.Body)
	}
}

// withConfig returns BaseConfig with the line (or block) old replaced by new.
func withConfig(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(testserver.BaseConfig, old) {
		t.Fatalf("BaseConfig has no %q", old)
	}
	return strings.Replace(testserver.BaseConfig, old, new, 1)
}

func passwordLogin(user, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
}

func passwordAuth(session, user, password string) map[string]any {
	a := passwordLogin(user, password)
	a["session"] = session
	return a
}

// flows extracts the stages of a UIA 401 body.
func flows(t *testing.T, r *testserver.Response) [][]string {
	t.Helper()
	var body struct {
		Flows []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("UIA body: %v: %s", err, r.Body)
	}
	out := [][]string{}
	for _, f := range body.Flows {
		out = append(out, f.Stages)
	}
	return out
}

func whoami(s *testserver.Server, token string) *testserver.Response {
	return s.Do("GET", v3+"/account/whoami", token, nil)
}

// wantLoggedOut checks that token is dead for good (not a soft logout).
func wantLoggedOut(t *testing.T, s *testserver.Server, token string) {
	t.Helper()
	r := whoami(s, token)
	wantErr(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if r.JSON["soft_logout"] == true {
		t.Fatalf("logged-out token reported as soft logout: %s", r.Body)
	}
}

func deviceCount(t *testing.T, s *testserver.Server, token string) int {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", v3+"/devices", token, nil)
	devs, _ := r.JSON["devices"].([]any)
	return len(devs)
}

func TestRegistrationUIA(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")

	body := map[string]any{
		"username": "alice", "password": "secret pw",
		"device_id": "LAPTOP", "initial_device_display_name": "Alice's laptop",
	}
	first := s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", body)
	if got := flows(t, first); !reflect.DeepEqual(got, [][]string{{"m.login.dummy"}}) {
		t.Fatalf("flows %v, want [[m.login.dummy]]: %s", got, first.Body)
	}
	if _, isObj := first.JSON["params"].(map[string]any); !isObj {
		t.Fatalf("params is not an object: %s", first.Body)
	}
	session := first.String("session")
	if session == "" {
		t.Fatalf("no session: %s", first.Body)
	}
	if first.Errcode() != "" {
		t.Fatalf("first challenge carries an error: %s", first.Body)
	}

	body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
	r := s.MustDo(http.StatusOK, "POST", v3+"/register", "", body)
	if r.String("user_id") != "@alice:test.local" || r.String("access_token") == "" || r.String("device_id") != "LAPTOP" {
		t.Fatalf("register: %s", r.Body)
	}
	token := r.String("access_token")
	who := s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", token, nil)
	if who.String("user_id") != "@alice:test.local" || who.String("device_id") != "LAPTOP" || who.JSON["is_guest"] != false {
		t.Fatalf("whoami: %s", who.Body)
	}
	dev := s.MustDo(http.StatusOK, "GET", v3+"/devices/LAPTOP", token, nil)
	if dev.String("display_name") != "Alice's laptop" {
		t.Fatalf("initial_device_display_name not honoured: %s", dev.Body)
	}

	// A taken name is refused before any user-interactive auth.
	taken := s.Do("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "x"})
	wantErr(t, taken, http.StatusBadRequest, "M_USER_IN_USE")
	takenUpper := s.Do("POST", v3+"/register", "", map[string]any{"username": "ALICE", "password": "x"})
	wantErr(t, takenUpper, http.StatusBadRequest, "M_USER_IN_USE")

	// Upper case is folded to lower case.
	bob := s.Register("Bob", "pw")
	if bob.ID != "@bob:test.local" {
		t.Fatalf("registered Bob as %q, want @bob:test.local", bob.ID)
	}
	s.Login("bob", "pw")

	// inhibit_login creates the account without a session.
	body = map[string]any{"username": "carol", "password": "pw", "inhibit_login": true}
	first = s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", body)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.String("session")}
	r = s.MustDo(http.StatusOK, "POST", v3+"/register", "", body)
	if r.String("user_id") != "@carol:test.local" {
		t.Fatalf("inhibit_login register: %s", r.Body)
	}
	for _, k := range []string{"access_token", "device_id", "refresh_token", "expires_in_ms"} {
		if _, has := r.JSON[k]; has {
			t.Errorf("inhibit_login response has %s: %s", k, r.Body)
		}
	}
	carol := s.Login("carol", "pw")
	if deviceCount(t, s, carol.Token) != 1 {
		t.Error("inhibit_login created a device")
	}

	// Without a username the server picks a valid one.
	body = map[string]any{"password": "pw"}
	first = s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", body)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.String("session")}
	r = s.MustDo(http.StatusOK, "POST", v3+"/register", "", body)
	if id := r.String("user_id"); !strings.HasPrefix(id, "@") || !strings.HasSuffix(id, ":test.local") || r.String("access_token") == "" {
		t.Fatalf("register without username: %s", r.Body)
	}

	// A completed session cannot be replayed to register someone else.
	body = map[string]any{"username": "dave", "password": "pw", "auth": map[string]any{"type": "m.login.dummy", "session": session}}
	wantErr(t, s.Do("POST", v3+"/register", "", body), http.StatusBadRequest, "M_UNKNOWN")
}

func TestRegisterAvailable(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	s.Register("alice", "pw")

	avail := func(name string) *testserver.Response {
		return s.Do("GET", v3+"/register/available?username="+url.QueryEscape(name), "", nil)
	}
	r := avail("bob")
	if r.Status != http.StatusOK || r.JSON["available"] != true {
		t.Fatalf("available(bob): %d %s", r.Status, r.Body)
	}
	wantErr(t, avail("alice"), http.StatusBadRequest, "M_USER_IN_USE")
	wantErr(t, avail("Alice"), http.StatusBadRequest, "M_USER_IN_USE")
	for _, bad := range []string{"a b", "caf\u00e9", "_bridge", "12345", "a:b", strings.Repeat("x", 300)} {
		wantErr(t, avail(bad), http.StatusBadRequest, "M_INVALID_USERNAME")
	}
	wantErr(t, s.Do("GET", v3+"/register/available", "", nil), http.StatusBadRequest, "M_MISSING_PARAM")

	// Invalid names are refused at registration too, before UIA.
	r = s.Do("POST", v3+"/register", "", map[string]any{"username": "a b", "password": "pw"})
	wantErr(t, r, http.StatusBadRequest, "M_INVALID_USERNAME")
}

func TestRegistrationDisabled(t *testing.T) {
	t.Parallel()
	s := testserver.StartYAML(t, withConfig(t, "enable_registration: true\n", "enable_registration: false\n"))
	r := s.Do("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "pw"})
	wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
	r = s.Do("POST", v3+"/register", "", map[string]any{
		"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"},
	})
	wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", v3+"/register/available?username=alice", "", nil), http.StatusForbidden, "M_FORBIDDEN")

	// The admin API still works.
	nonce := s.MustDo(http.StatusOK, "GET", "/_synapse/admin/v1/register", "", nil).String("nonce")
	s.MustDo(http.StatusOK, "POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce, "username": "admin", "password": "pw",
		"mac": synapseMAC("test-shared-secret", nonce, "admin", "pw", false, ""),
	})
}

func TestGuestRegistration(t *testing.T) {
	t.Parallel()
	t.Run("forbidden by default", func(t *testing.T) {
		t.Parallel()
		s := testserver.Start(t, "")
		r := s.Do("POST", v3+"/register?kind=guest", "", map[string]any{})
		wantErr(t, r, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	})
	t.Run("allowed", func(t *testing.T) {
		t.Parallel()
		s := testserver.Start(t, "allow_guest_access: true\n")
		// Everything but initial_device_display_name is ignored.
		r := s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", map[string]any{
			"username": "mallory", "device_id": "CHOSEN", "initial_device_display_name": "Guest phone",
		})
		tok := r.String("access_token")
		if tok == "" || r.String("user_id") == "@mallory:test.local" || r.String("device_id") == "CHOSEN" || r.String("device_id") == "" {
			t.Fatalf("guest register: %s", r.Body)
		}
		who := s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", tok, nil)
		if who.JSON["is_guest"] != true || who.String("user_id") != r.String("user_id") {
			t.Fatalf("guest whoami: %s", who.Body)
		}
		dev := s.MustDo(http.StatusOK, "GET", v3+"/devices/"+r.String("device_id"), tok, nil)
		if dev.String("display_name") != "Guest phone" {
			t.Fatalf("guest device: %s", dev.Body)
		}
		// A body is optional for guests.
		s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", nil)
	})
	t.Run("unknown kind", func(t *testing.T) {
		t.Parallel()
		s := testserver.Start(t, "")
		wantErr(t, s.Do("POST", v3+"/register?kind=robot", "", map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestRegistrationToken(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "registration_requires_token: true\nregistration_tokens: [abc]\n")

	body := map[string]any{"username": "alice", "password": "pw"}
	first := s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", body)
	if got := flows(t, first); !reflect.DeepEqual(got, [][]string{{"m.login.registration_token"}}) {
		t.Fatalf("flows %v, want [[m.login.registration_token]]", got)
	}
	session := first.String("session")

	// The dummy stage is not offered.
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
	r := s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", body)
	if r.Errcode() == "" {
		t.Fatalf("dummy stage accepted: %s", r.Body)
	}

	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": session}
	r = s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", body)
	if r.Errcode() == "" || r.String("session") != session {
		t.Fatalf("wrong token: want a 401 with an errcode and the same session: %s", r.Body)
	}
	if got := flows(t, r); !reflect.DeepEqual(got, [][]string{{"m.login.registration_token"}}) {
		t.Fatalf("flows after a failed stage: %v", got)
	}

	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "abc", "session": session}
	r = s.MustDo(http.StatusOK, "POST", v3+"/register", "", body)
	if r.String("user_id") != "@alice:test.local" || r.String("access_token") == "" {
		t.Fatalf("register with token: %s", r.Body)
	}

	const validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token="
	if r := s.MustDo(http.StatusOK, "GET", validity+"abc", "", nil); r.JSON["valid"] != true {
		t.Fatalf("validity(abc): %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", validity+"abd", "", nil); r.JSON["valid"] != false {
		t.Fatalf("validity(abd): %s", r.Body)
	}
	wantErr(t, s.Do("GET", strings.TrimSuffix(validity, "?token="), "", nil), http.StatusBadRequest, "M_MISSING_PARAM")
}

func TestUIASessionBinding(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")

	regSession := s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "",
		map[string]any{"username": "carol", "password": "pw"}).String("session")
	r := s.Do("POST", v3+"/delete_devices", alice.Token, map[string]any{
		"devices": []string{alice.DeviceID}, "auth": passwordAuth(regSession, "alice", "pw"),
	})
	wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")

	r = s.Do("POST", v3+"/delete_devices", alice.Token, map[string]any{
		"devices": []string{alice.DeviceID}, "auth": passwordAuth("nosuchsession", "alice", "pw"),
	})
	if r.Status != http.StatusBadRequest || r.Errcode() == "" {
		t.Fatalf("unknown session: %d %s", r.Status, r.Body)
	}

	// A session started by Bob is no use to Alice, even on the same endpoint.
	bobSession := s.MustDo(http.StatusUnauthorized, "POST", v3+"/delete_devices", bob.Token,
		map[string]any{"devices": []string{}}).String("session")
	r = s.Do("POST", v3+"/delete_devices", alice.Token, map[string]any{
		"devices": []string{alice.DeviceID}, "auth": passwordAuth(bobSession, "alice", "pw"),
	})
	wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")

	// Alice cannot authenticate as Bob with Bob's password: refused
	// outright, as Synapse does, since no retry could make Bob Alice.
	aliceSession := s.MustDo(http.StatusUnauthorized, "POST", v3+"/delete_devices", alice.Token,
		map[string]any{"devices": []string{}}).String("session")
	r = s.Do("POST", v3+"/delete_devices", alice.Token, map[string]any{
		"devices": []string{alice.DeviceID}, "auth": passwordAuth(aliceSession, "bob", "pw"),
	})
	wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", alice.Token, nil)

	// And with her own password it works, in the same session.
	phone := s.Login("alice", "pw")
	s.MustDo(http.StatusOK, "POST", v3+"/delete_devices", alice.Token, map[string]any{
		"devices": []string{phone.DeviceID}, "auth": passwordAuth(aliceSession, "@alice:test.local", "pw"),
	})
	wantLoggedOut(t, s, phone.Token)
}

func TestLogin(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")

	flowsResp := s.MustDo(http.StatusOK, "GET", v3+"/login", "", nil)
	var lf struct {
		Flows []struct {
			Type string `json:"type"`
		} `json:"flows"`
	}
	if err := json.Unmarshal(flowsResp.Body, &lf); err != nil || !slices.ContainsFunc(lf.Flows, func(f struct {
		Type string `json:"type"`
	}) bool {
		return f.Type == "m.login.password"
	}) {
		t.Fatalf("GET /login: %s", flowsResp.Body)
	}

	for name, body := range map[string]map[string]any{
		"localpart":       passwordLogin("alice", "pw"),
		"full user ID":    passwordLogin("@alice:test.local", "pw"),
		"upper case":      passwordLogin("ALICE", "pw"),
		"deprecated user": {"type": "m.login.password", "user": "alice", "password": "pw"},
	} {
		r := s.Do("POST", v3+"/login", "", body)
		if r.Status != http.StatusOK || r.String("user_id") != alice.ID || r.String("access_token") == "" || r.String("device_id") == "" {
			t.Fatalf("login by %s: %d %s", name, r.Status, r.Body)
		}
		if _, has := r.JSON["refresh_token"]; has {
			t.Errorf("login by %s without refresh_token: true returned one: %s", name, r.Body)
		}
		wk, _ := r.JSON["well_known"].(map[string]any)
		if hs, _ := wk["m.homeserver"].(map[string]any); hs["base_url"] != "http://test.local/" {
			t.Errorf("login by %s: well_known: %s", name, r.Body)
		}
		s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", r.String("access_token"), nil)
	}

	wrong := s.Do("POST", v3+"/login", "", passwordLogin("alice", "nope"))
	wantErr(t, wrong, http.StatusForbidden, "M_FORBIDDEN")
	unknown := s.Do("POST", v3+"/login", "", passwordLogin("nobody", "pw"))
	wantErr(t, unknown, http.StatusForbidden, "M_FORBIDDEN")
	if wrong.String("error") != unknown.String("error") {
		t.Errorf("wrong password (%q) and unknown user (%q) are told apart", wrong.String("error"), unknown.String("error"))
	}
	wantErr(t, s.Do("POST", v3+"/login", "", passwordLogin("@alice:elsewhere.example", "pw")), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", v3+"/login", "", map[string]any{"type": "m.login.fancy", "user": "alice", "password": "pw"}),
		http.StatusBadRequest, "M_UNKNOWN")
	wantErr(t, s.Do("POST", v3+"/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org"},
		"password":   "pw",
	}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "password": "pw"}),
		http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("POST", v3+"/login", "", "not json"), http.StatusBadRequest, "M_NOT_JSON")

	// Logging in again with a device ID keeps one device and ends its old session.
	before := deviceCount(t, s, alice.Token)
	again := passwordLogin("alice", "pw")
	again["device_id"] = alice.DeviceID
	r := s.MustDo(http.StatusOK, "POST", v3+"/login", "", again)
	if r.String("device_id") != alice.DeviceID {
		t.Fatalf("login with device_id %s got %s", alice.DeviceID, r.Body)
	}
	wantLoggedOut(t, s, alice.Token)
	if n := deviceCount(t, s, r.String("access_token")); n != before {
		t.Fatalf("%d devices after re-login on an existing device, want %d", n, before)
	}

	// A fresh device ID of the client's choosing is honoured.
	fresh := passwordLogin("alice", "pw")
	fresh["device_id"] = "MYPHONE"
	fresh["initial_device_display_name"] = "Phone"
	r = s.MustDo(http.StatusOK, "POST", v3+"/login", "", fresh)
	if r.String("device_id") != "MYPHONE" {
		t.Fatalf("login with new device_id: %s", r.Body)
	}
	if d := s.MustDo(http.StatusOK, "GET", v3+"/devices/MYPHONE", r.String("access_token"), nil); d.String("display_name") != "Phone" {
		t.Fatalf("device name: %s", d.Body)
	}
}

func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	s.Register("alice", "pw")

	body := passwordLogin("alice", "pw")
	body["refresh_token"] = true
	login := s.MustDo(http.StatusOK, "POST", v3+"/login", "", body)
	r1 := login.String("refresh_token")
	if r1 == "" || login.String("access_token") == "" {
		t.Fatalf("login with refresh_token: %s", login.Body)
	}
	if ms, _ := login.JSON["expires_in_ms"].(float64); ms <= 0 {
		t.Fatalf("expires_in_ms: %s", login.Body)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", login.String("access_token"), nil)

	refresh := func(tok string) *testserver.Response {
		return s.Do("POST", v3+"/refresh", "", map[string]any{"refresh_token": tok})
	}
	first := refresh(r1)
	if first.Status != http.StatusOK || first.String("access_token") == "" || first.String("refresh_token") == "" || first.String("refresh_token") == r1 {
		t.Fatalf("refresh: %d %s", first.Status, first.Body)
	}
	if ms, _ := first.JSON["expires_in_ms"].(float64); ms <= 0 {
		t.Fatalf("refresh expires_in_ms: %s", first.Body)
	}

	// The answer got lost: the old refresh token still works while the new
	// tokens have not been used.
	retry := refresh(r1)
	if retry.Status != http.StatusOK || retry.String("access_token") == first.String("access_token") {
		t.Fatalf("refresh retry with the old token: %d %s", retry.Status, retry.Body)
	}
	who := s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", retry.String("access_token"), nil)
	if who.String("device_id") != login.String("device_id") {
		t.Fatalf("refreshed token bound to another device: %s", who.Body)
	}
	// Using the new access token revokes the old refresh token.
	r := refresh(r1)
	wantErr(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Using the new refresh token also revokes its predecessor.
	r2 := retry.String("refresh_token")
	second := refresh(r2)
	if second.Status != http.StatusOK {
		t.Fatalf("second refresh: %s", second.Body)
	}
	third := refresh(second.String("refresh_token"))
	if third.Status != http.StatusOK {
		t.Fatalf("third refresh: %s", third.Body)
	}
	wantErr(t, refresh(r2), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", third.String("access_token"), nil)

	wantErr(t, refresh("bogus"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	wantErr(t, s.Do("POST", v3+"/refresh", "", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")

	// Logging out ends the refresh token too.
	s.MustDo(http.StatusOK, "POST", v3+"/logout", third.String("access_token"), map[string]any{})
	wantErr(t, refresh(third.String("refresh_token")), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Registration can ask for a refresh token as well.
	reg := map[string]any{"username": "bob", "password": "pw", "refresh_token": true}
	ch := s.MustDo(http.StatusUnauthorized, "POST", v3+"/register", "", reg)
	reg["auth"] = map[string]any{"type": "m.login.dummy", "session": ch.String("session")}
	rr := s.MustDo(http.StatusOK, "POST", v3+"/register", "", reg)
	if rr.String("refresh_token") == "" || rr.JSON["expires_in_ms"] == nil {
		t.Fatalf("register with refresh_token: %s", rr.Body)
	}
	if refresh(rr.String("refresh_token")).Status != http.StatusOK {
		t.Fatal("refresh token from registration refused")
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	phone := s.Login("alice", "pw")

	s.MustDo(http.StatusOK, "POST", v3+"/logout", phone.Token, map[string]any{})
	wantLoggedOut(t, s, phone.Token)
	devs := s.MustDo(http.StatusOK, "GET", v3+"/devices", alice.Token, nil)
	if list, _ := devs.JSON["devices"].([]any); len(list) != 1 || list[0].(map[string]any)["device_id"] != alice.DeviceID {
		t.Fatalf("devices after logout: %s", devs.Body)
	}
	wantErr(t, s.Do("POST", v3+"/logout", "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")

	tablet := s.Login("alice", "pw")
	laptop := s.Login("alice", "pw")
	bob := s.Register("bob", "pw")
	s.MustDo(http.StatusOK, "POST", v3+"/logout/all", tablet.Token, map[string]any{})
	for _, tok := range []string{alice.Token, tablet.Token, laptop.Token} {
		wantLoggedOut(t, s, tok)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", bob.Token, nil)
	again := s.Login("alice", "pw")
	if n := deviceCount(t, s, again.Token); n != 1 {
		t.Fatalf("%d devices after logout/all and a new login, want 1", n)
	}
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "old pw")
	phone := s.Login("alice", "old pw")
	tablet := s.Login("alice", "old pw")
	const path = v3 + "/account/password"

	first := s.MustDo(http.StatusUnauthorized, "POST", path, alice.Token, map[string]any{"new_password": "new pw"})
	if got := flows(t, first); !reflect.DeepEqual(got, [][]string{{"m.login.password"}}) {
		t.Fatalf("password change flows: %v", got)
	}
	session := first.String("session")
	r := s.MustDo(http.StatusUnauthorized, "POST", path, alice.Token, map[string]any{
		"new_password": "new pw", "auth": passwordAuth(session, "alice", "wrong"),
	})
	if r.Errcode() != "M_FORBIDDEN" || r.String("session") != session {
		t.Fatalf("wrong old password: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{
		"new_password": "new pw", "auth": passwordAuth(session, "alice", "old pw"),
	})
	// Other devices are logged out by default; the requesting one is kept.
	wantLoggedOut(t, s, phone.Token)
	wantLoggedOut(t, s, tablet.Token)
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", alice.Token, nil)
	if n := deviceCount(t, s, alice.Token); n != 1 {
		t.Fatalf("%d devices after password change, want 1", n)
	}
	wantErr(t, s.Do("POST", v3+"/login", "", passwordLogin("alice", "old pw")), http.StatusForbidden, "M_FORBIDDEN")
	laptop := s.Login("alice", "new pw")

	// logout_devices: false keeps the other sessions.
	first = s.MustDo(http.StatusUnauthorized, "POST", path, alice.Token, map[string]any{"new_password": "newer pw"})
	s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{
		"new_password": "newer pw", "logout_devices": false,
		"auth": passwordAuth(first.String("session"), "alice", "new pw"),
	})
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", laptop.Token, nil)
	if n := deviceCount(t, s, alice.Token); n != 2 {
		t.Fatalf("%d devices after password change without logout, want 2", n)
	}
	wantErr(t, s.Do("POST", v3+"/login", "", passwordLogin("alice", "new pw")), http.StatusForbidden, "M_FORBIDDEN")
	s.Login("alice", "newer pw")
}

func TestDeactivate(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	phone := s.Login("alice", "pw")
	const path = v3 + "/account/deactivate"

	first := s.MustDo(http.StatusUnauthorized, "POST", path, alice.Token, nil)
	if got := flows(t, first); !reflect.DeepEqual(got, [][]string{{"m.login.password"}}) {
		t.Fatalf("deactivate flows: %v", got)
	}
	r := s.MustDo(http.StatusUnauthorized, "POST", path, alice.Token, map[string]any{
		"auth": passwordAuth(first.String("session"), "alice", "wrong"),
	})
	if r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", alice.Token, nil)
	r = s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{
		"auth": passwordAuth(first.String("session"), "alice", "pw"),
	})
	if r.String("id_server_unbind_result") == "" {
		t.Errorf("deactivate response lacks id_server_unbind_result: %s", r.Body)
	}
	wantLoggedOut(t, s, alice.Token)
	wantLoggedOut(t, s, phone.Token)

	// login.yaml: M_USER_DEACTIVATED (403) for a deactivated user.
	wantErr(t, s.Do("POST", v3+"/login", "", passwordLogin("alice", "pw")), http.StatusForbidden, "M_USER_DEACTIVATED")
	wantErr(t, s.Do("GET", v3+"/register/available?username=alice", "", nil), http.StatusBadRequest, "M_USER_IN_USE")
	wantErr(t, s.Do("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "pw"}),
		http.StatusBadRequest, "M_USER_IN_USE")
}

func TestProfile(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	base := v3 + "/profile/" + alice.ID

	p := s.MustDo(http.StatusOK, "GET", base, "", nil)
	if p.String("displayname") != "alice" {
		t.Fatalf("default displayname: %s", p.Body)
	}
	if _, has := p.JSON["avatar_url"]; has {
		t.Fatalf("unset avatar_url present: %s", p.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", base+"/displayname", "", nil); r.String("displayname") != "alice" {
		t.Fatalf("GET displayname: %s", r.Body)
	}
	wantErr(t, s.Do("GET", base+"/avatar_url", "", nil), http.StatusNotFound, "M_NOT_FOUND")

	s.MustDo(http.StatusOK, "PUT", base+"/displayname", alice.Token, map[string]any{"displayname": "Alice Liddell"})
	if r := s.MustDo(http.StatusOK, "GET", base+"/displayname", "", nil); r.String("displayname") != "Alice Liddell" {
		t.Fatalf("displayname after PUT: %s", r.Body)
	}

	// Any URL is taken, as Synapse does; only the length is bounded.
	wantErr(t, s.Do("PUT", base+"/avatar_url", alice.Token, map[string]any{"avatar_url": "https://example.org/" + strings.Repeat("a", 1000)}),
		http.StatusBadRequest, "M_INVALID_PARAM")
	s.MustDo(http.StatusOK, "PUT", base+"/avatar_url", alice.Token, map[string]any{"avatar_url": "mxc://test.local/abcdef"})

	s.MustDo(http.StatusOK, "PUT", base+"/org.example.foo", alice.Token, map[string]any{"org.example.foo": map[string]any{"n": 1}})
	r := s.MustDo(http.StatusOK, "GET", base+"/org.example.foo", "", nil)
	if !reflect.DeepEqual(r.JSON, map[string]any{"org.example.foo": map[string]any{"n": float64(1)}}) {
		t.Fatalf("custom field: %s", r.Body)
	}
	p = s.MustDo(http.StatusOK, "GET", base, "", nil)
	want := map[string]any{
		"displayname": "Alice Liddell", "avatar_url": "mxc://test.local/abcdef",
		"org.example.foo": map[string]any{"n": float64(1)},
	}
	if !reflect.DeepEqual(p.JSON, want) {
		t.Fatalf("full profile: %s", p.Body)
	}

	for _, key := range []string{"Foo", "foo", "org.Example.foo", "org..foo", "1org.foo"} {
		wantErr(t, s.Do("PUT", base+"/"+key, alice.Token, map[string]any{key: "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	long := "org.example." + strings.Repeat("k", 250)
	wantErr(t, s.Do("PUT", base+"/"+long, alice.Token, map[string]any{long: "x"}), http.StatusBadRequest, "M_KEY_TOO_LARGE")
	wantErr(t, s.Do("PUT", base+"/displayname", alice.Token, map[string]any{"other": "x"}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("PUT", base+"/displayname", alice.Token, map[string]any{"displayname": 5}), http.StatusBadRequest, "M_BAD_JSON")

	wantErr(t, s.Do("PUT", base+"/displayname", bob.Token, map[string]any{"displayname": "Mallory"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("DELETE", base+"/displayname", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", base+"/displayname", "", map[string]any{"displayname": "Anon"}), http.StatusUnauthorized, "M_MISSING_TOKEN")

	wantErr(t, s.Do("GET", v3+"/profile/@nobody:test.local", "", nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", v3+"/profile/@nobody:test.local/displayname", "", nil), http.StatusNotFound, "M_NOT_FOUND")

	// The profile as a whole must stay under 64 KiB.
	wantErr(t, s.Do("PUT", base+"/org.example.big", alice.Token, map[string]any{"org.example.big": strings.Repeat("x", 70*1024)}),
		http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
	s.MustDo(http.StatusOK, "PUT", base+"/org.example.half", alice.Token, map[string]any{"org.example.half": strings.Repeat("x", 40*1024)})
	wantErr(t, s.Do("PUT", base+"/org.example.other", alice.Token, map[string]any{"org.example.other": strings.Repeat("y", 40*1024)}),
		http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
	s.MustDo(http.StatusOK, "DELETE", base+"/org.example.half", alice.Token, nil)
	s.MustDo(http.StatusOK, "PUT", base+"/org.example.other", alice.Token, map[string]any{"org.example.other": strings.Repeat("y", 40*1024)})

	// DELETE removes a field; deleting an absent one is fine.
	s.MustDo(http.StatusOK, "DELETE", base+"/displayname", alice.Token, nil)
	wantErr(t, s.Do("GET", base+"/displayname", "", nil), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "DELETE", base+"/displayname", alice.Token, nil)
	s.MustDo(http.StatusOK, "DELETE", base+"/org.example.foo", alice.Token, nil)
	wantErr(t, s.Do("GET", base+"/org.example.foo", "", nil), http.StatusNotFound, "M_NOT_FOUND")

	// Profiles survive a restart.
	s.Restart()
	if r := s.MustDo(http.StatusOK, "GET", base+"/avatar_url", "", nil); r.String("avatar_url") != "mxc://test.local/abcdef" {
		t.Fatalf("avatar_url after restart: %s", r.Body)
	}
}

// Clients percent-encode the user ID in the path (matrix-js-sdk uses
// encodeURIComponent), so "@alice:test.local" arrives as
// "%40alice%3Atest.local"; chi matches on the raw path then.
func TestEncodedPathParameters(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	enc := strings.NewReplacer("@", "%40", ":", "%3A").Replace(alice.ID)
	r := s.Do("GET", v3+"/profile/"+enc, "", nil)
	if r.Status != http.StatusOK || r.String("displayname") != "alice" {
		t.Fatalf("GET /profile/%s: %d %s", enc, r.Status, r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", v3+"/profile/"+enc+"/displayname", alice.Token, map[string]any{"displayname": "Encoded"})
	if r := s.MustDo(http.StatusOK, "GET", v3+"/profile/"+enc+"/displayname", "", nil); r.String("displayname") != "Encoded" {
		t.Fatalf("displayname: %s", r.Body)
	}

	// Device IDs are opaque and may need escaping too.
	body := passwordLogin("alice", "pw")
	body["device_id"] = "my/dev:1"
	dev := s.MustDo(http.StatusOK, "POST", v3+"/login", "", body)
	const encDev = "my%2Fdev%3A1"
	if r := s.MustDo(http.StatusOK, "GET", v3+"/devices/"+encDev, alice.Token, nil); r.String("device_id") != "my/dev:1" {
		t.Fatalf("GET device: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", v3+"/devices/"+encDev, alice.Token, map[string]any{"display_name": "Slashed"})
	ch := s.MustDo(http.StatusUnauthorized, "DELETE", v3+"/devices/"+encDev, alice.Token, nil)
	s.MustDo(http.StatusOK, "DELETE", v3+"/devices/"+encDev, alice.Token, map[string]any{
		"auth": passwordAuth(ch.String("session"), "alice", "pw"),
	})
	wantLoggedOut(t, s, dev.String("access_token"))
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")

	wantErr(t, s.Do("GET", v3+"/capabilities", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	wantErr(t, s.Do("GET", v3+"/capabilities", "not-a-token", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	var caps struct {
		Capabilities struct {
			ChangePassword *struct {
				Enabled bool `json:"enabled"`
			} `json:"m.change_password"`
			RoomVersions *struct {
				Default   string            `json:"default"`
				Available map[string]string `json:"available"`
			} `json:"m.room_versions"`
		} `json:"capabilities"`
	}
	r := s.MustDo(http.StatusOK, "GET", v3+"/capabilities", alice.Token, nil)
	if err := json.Unmarshal(r.Body, &caps); err != nil {
		t.Fatal(err)
	}
	c := caps.Capabilities
	if c.ChangePassword == nil || !c.ChangePassword.Enabled {
		t.Errorf("m.change_password: %s", r.Body)
	}
	if c.RoomVersions == nil || c.RoomVersions.Default != "10" || c.RoomVersions.Available["10"] != "stable" {
		t.Errorf("m.room_versions: %s", r.Body)
	}

	var versions struct {
		Versions []string `json:"versions"`
	}
	r = s.MustDo(http.StatusOK, "GET", "/_matrix/client/versions", "", nil)
	if err := json.Unmarshal(r.Body, &versions); err != nil {
		t.Fatal(err)
	}
	var v1 int
	for _, v := range versions.Versions {
		if strings.HasPrefix(v, "v1.") {
			v1++
		}
	}
	if v1 == 0 || !slices.Contains(versions.Versions, "v1.1") {
		t.Errorf("versions: %s", r.Body)
	}

	r = s.MustDo(http.StatusOK, "GET", "/.well-known/matrix/client", "", nil)
	hs, _ := r.JSON["m.homeserver"].(map[string]any)
	if hs["base_url"] != "http://test.local/" {
		t.Errorf("well-known: %s", r.Body)
	}
}

// synapseMAC computes the mac of Synapse's shared-secret registration as its
// admin API documentation describes it: HMAC-SHA1 keyed with the shared
// secret over nonce, username, password and "admin" or "notadmin" (then the
// user type, if any), NUL-separated, as lowercase hex.
func synapseMAC(secret, nonce, user, password string, admin bool, userType string) string {
	parts := []string{nonce, user, password, "notadmin"}
	if admin {
		parts[3] = "admin"
	}
	if userType != "" {
		parts = append(parts, userType)
	}
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}

func TestSharedSecretRegistration(t *testing.T) {
	t.Parallel()
	const admin = "/_synapse/admin/v1/register"
	s := testserver.Start(t, "")
	nonce := func() string {
		n := s.MustDo(http.StatusOK, "GET", admin, "", nil).String("nonce")
		if n == "" {
			t.Fatal("no nonce")
		}
		return n
	}

	n := nonce()
	r := s.MustDo(http.StatusOK, "POST", admin, "", map[string]any{
		"nonce": n, "username": "sam", "password": "pw", "admin": false,
		"mac": synapseMAC("test-shared-secret", n, "sam", "pw", false, ""),
	})
	if r.String("user_id") != "@sam:test.local" || r.String("access_token") == "" {
		t.Fatalf("shared-secret registration: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", r.String("access_token"), nil)
	s.Login("sam", "pw")

	// The nonce is single-use.
	wantErr(t, s.Do("POST", admin, "", map[string]any{
		"nonce": n, "username": "sam2", "password": "pw",
		"mac": synapseMAC("test-shared-secret", n, "sam2", "pw", false, ""),
	}), http.StatusBadRequest, "M_UNKNOWN")

	n = nonce()
	wantErr(t, s.Do("POST", admin, "", map[string]any{
		"nonce": n, "username": "eve", "password": "pw",
		"mac": synapseMAC("wrong-secret", n, "eve", "pw", false, ""),
	}), http.StatusForbidden, "M_FORBIDDEN")
	// A mac for "notadmin" does not register an admin.
	n = nonce()
	wantErr(t, s.Do("POST", admin, "", map[string]any{
		"nonce": n, "username": "eve", "password": "pw", "admin": true,
		"mac": synapseMAC("test-shared-secret", n, "eve", "pw", false, ""),
	}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", v3+"/register/available?username=eve", "", nil), http.StatusOK, "")

	n = nonce()
	r = s.MustDo(http.StatusOK, "POST", admin, "", map[string]any{
		"nonce": n, "username": "root", "password": "pw", "admin": true, "user_type": "bot",
		"mac": synapseMAC("test-shared-secret", n, "root", "pw", true, "bot"),
	})
	if r.String("user_id") != "@root:test.local" {
		t.Fatalf("admin registration: %s", r.Body)
	}
	n = nonce()
	wantErr(t, s.Do("POST", admin, "", map[string]any{
		"nonce": n, "username": "sam", "password": "pw",
		"mac": synapseMAC("test-shared-secret", n, "sam", "pw", false, ""),
	}), http.StatusBadRequest, "M_USER_IN_USE")

	t.Run("not configured", func(t *testing.T) {
		t.Parallel()
		s := testserver.StartYAML(t, withConfig(t, "registration_shared_secret: test-shared-secret\n", ""))
		// No nonce is handed out (and stored) for a registration that
		// cannot happen.
		wantErr(t, s.Do("GET", admin, "", nil), http.StatusBadRequest, "M_UNKNOWN")
		r := s.Do("POST", admin, "", map[string]any{
			"nonce": "n", "username": "sam", "password": "pw",
			"mac": synapseMAC("", "n", "sam", "pw", false, ""),
		})
		wantErr(t, r, http.StatusBadRequest, "M_UNKNOWN")
	})
}

func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	yaml := withConfig(t, "  address: {per_second: 0, burst_count: 0}\n", "  address: {per_second: 0.001, burst_count: 2}\n")
	s := testserver.StartYAML(t, yaml)
	s.Register("alice", "pw")
	s.Login("alice", "pw")
	s.Login("alice", "pw")
	r := s.Do("POST", v3+"/login", "", passwordLogin("alice", "pw"))
	wantErr(t, r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if ms, _ := r.JSON["retry_after_ms"].(float64); ms <= 0 {
		t.Errorf("retry_after_ms: %s", r.Body)
	}
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs <= 0 {
		t.Errorf("Retry-After header %q", r.Header.Get("Retry-After"))
	}
	// Other endpoints are not affected.
	s.Register("bob", "pw")
}
