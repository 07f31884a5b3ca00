package adminapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const (
	regTokensPath = "/_synapse/admin/v1/registration_tokens"
	regValidity   = "/_matrix/client/v1/register/m.login.registration_token/validity?token="
	regPath       = "/_matrix/client/v3/register"
)

// regTokenWantErr fails unless r is a Matrix error with this status and code.
func regTokenWantErr(t *testing.T, what string, r *testserver.Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.Errcode() != code {
		t.Fatalf("%s: got %d %s, want %d %s: %s", what, r.Status, r.Errcode(), status, code, r.Body)
	}
}

// regTokenMakeAdmin grants u server admin through the accounts service.
func regTokenMakeAdmin(t *testing.T, s *testserver.Server, u testserver.User) {
	t.Helper()
	if err := s.Srv.Accounts().SetAdmin(context.Background(), u.ID, true); err != nil {
		t.Fatal(err)
	}
}

// regTokenRegister registers localpart with a registration token in one
// new UIA session and returns the last answer and the session.
func regTokenRegister(t *testing.T, s *testserver.Server, localpart, token string, extra map[string]any) (*testserver.Response, string) {
	t.Helper()
	body := map[string]any{"username": localpart, "password": "pw"}
	for k, v := range extra {
		body[k] = v
	}
	session := s.MustDo(http.StatusUnauthorized, "POST", regPath, "", body).String("session")
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": token, "session": session}
	return s.Do("POST", regPath, "", body), session
}

func regTokenValid(t *testing.T, s *testserver.Server, token string) bool {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", regValidity+url.QueryEscape(token), "", nil)
	v, ok := r.JSON["valid"].(bool)
	if !ok {
		t.Fatalf("validity(%s): %s", token, r.Body)
	}
	return v
}

func regTokenNum(t *testing.T, r *testserver.Response, key string) float64 {
	t.Helper()
	v, ok := r.JSON[key].(float64)
	if !ok {
		t.Fatalf("%s is not a number: %s", key, r.Body)
	}
	return v
}

func regTokenNames(t *testing.T, r *testserver.Response) []string {
	t.Helper()
	list, ok := r.JSON["registration_tokens"].([]any)
	if !ok {
		t.Fatalf("no registration_tokens list: %s", r.Body)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.(map[string]any)["token"].(string))
	}
	return names
}

func TestAdminRegistrationTokensManage(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	regTokenMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	future := time.Now().Add(24 * time.Hour).UnixMilli()

	// A normal user gets 403 from every endpoint.
	for _, c := range []struct{ method, path string }{
		{"GET", regTokensPath}, {"POST", regTokensPath + "/new"}, {"GET", regTokensPath + "/abc"},
		{"PUT", regTokensPath + "/abc"}, {"DELETE", regTokensPath + "/abc"},
	} {
		regTokenWantErr(t, c.method+" as a user", s.Do(c.method, c.path, bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	}

	// Generated with the defaults.
	r := s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{})
	gen := r.String("token")
	if !regexp.MustCompile(`^[A-Za-z0-9._~-]{16}$`).MatchString(gen) {
		t.Fatalf("generated token %q", gen)
	}
	if r.JSON["uses_allowed"] != nil || r.JSON["expiry_time"] != nil || regTokenNum(t, r, "pending") != 0 || regTokenNum(t, r, "completed") != 0 {
		t.Fatalf("defaults: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{"length": 64}); len(r.String("token")) != 64 {
		t.Fatalf("length 64: %s", r.Body)
	}

	// Given.
	r = s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{
		"token": "Ab.9_~-x", "uses_allowed": 3, "expiry_time": future,
	})
	if r.String("token") != "Ab.9_~-x" || regTokenNum(t, r, "uses_allowed") != 3 || int64(regTokenNum(t, r, "expiry_time")) != future {
		t.Fatalf("create: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", regTokensPath+"/Ab.9_~-x", admin.Token, nil)
	if regTokenNum(t, r, "uses_allowed") != 3 || int64(regTokenNum(t, r, "expiry_time")) != future || regTokenNum(t, r, "completed") != 0 {
		t.Fatalf("read back: %s", r.Body)
	}

	// Malformed requests.
	for name, body := range map[string]any{
		"existing token":      map[string]any{"token": "Ab.9_~-x"},
		"bad character":       map[string]any{"token": "a b"},
		"slash":               map[string]any{"token": "a/b"},
		"too long":            map[string]any{"token": strings.Repeat("a", 65)},
		"empty token":         map[string]any{"token": ""},
		"token not a string":  map[string]any{"token": 5},
		"length 0":            map[string]any{"length": 0},
		"length 65":           map[string]any{"length": 65},
		"length not a number": map[string]any{"length": "3"},
		"negative uses":       map[string]any{"uses_allowed": -1},
		"fractional uses":     map[string]any{"uses_allowed": 1.5},
		"uses as a string":    map[string]any{"uses_allowed": "1"},
		"past expiry":         map[string]any{"expiry_time": 1000},
		"expiry as a string":  map[string]any{"expiry_time": "soon"},
	} {
		regTokenWantErr(t, "create: "+name, s.Do("POST", regTokensPath+"/new", admin.Token, body), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	regTokenWantErr(t, "create: not JSON", s.Do("POST", regTokensPath+"/new", admin.Token, "{nope"), http.StatusBadRequest, "M_NOT_JSON")

	// Update: a field left out is kept, null lifts the limit.
	r = s.MustDo(http.StatusOK, "PUT", regTokensPath+"/Ab.9_~-x", admin.Token, map[string]any{"uses_allowed": 5})
	if regTokenNum(t, r, "uses_allowed") != 5 || int64(regTokenNum(t, r, "expiry_time")) != future {
		t.Fatalf("update uses: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "PUT", regTokensPath+"/Ab.9_~-x", admin.Token, map[string]any{"expiry_time": nil})
	if r.JSON["expiry_time"] != nil || regTokenNum(t, r, "uses_allowed") != 5 {
		t.Fatalf("update expiry: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", regTokensPath+"/Ab.9_~-x", admin.Token, nil)
	if r.JSON["expiry_time"] != nil || regTokenNum(t, r, "uses_allowed") != 5 {
		t.Fatalf("update read back: %s", r.Body)
	}
	regTokenWantErr(t, "update: bad uses", s.Do("PUT", regTokensPath+"/Ab.9_~-x", admin.Token, map[string]any{"uses_allowed": "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
	regTokenWantErr(t, "update: past expiry", s.Do("PUT", regTokensPath+"/Ab.9_~-x", admin.Token, map[string]any{"expiry_time": 5}), http.StatusBadRequest, "M_INVALID_PARAM")
	regTokenWantErr(t, "update: not an object", s.Do("PUT", regTokensPath+"/Ab.9_~-x", admin.Token, "[]"), http.StatusBadRequest, "M_BAD_JSON")
	regTokenWantErr(t, "update: missing", s.Do("PUT", regTokensPath+"/nope", admin.Token, map[string]any{"uses_allowed": 1}), http.StatusNotFound, "M_NOT_FOUND")
	regTokenWantErr(t, "get: missing", s.Do("GET", regTokensPath+"/nope", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// List, and filter by validity: a token of 0 uses is invalid.
	s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{"token": "zero", "uses_allowed": 0})
	all := regTokenNames(t, s.MustDo(http.StatusOK, "GET", regTokensPath, admin.Token, nil))
	if len(all) != 4 || !strings.Contains(strings.Join(all, " "), gen) {
		t.Fatalf("list: %v", all)
	}
	if got := regTokenNames(t, s.MustDo(http.StatusOK, "GET", regTokensPath+"?valid=false", admin.Token, nil)); len(got) != 1 || got[0] != "zero" {
		t.Fatalf("valid=false: %v", got)
	}
	if got := regTokenNames(t, s.MustDo(http.StatusOK, "GET", regTokensPath+"?valid=true", admin.Token, nil)); len(got) != 3 || strings.Contains(strings.Join(got, " "), "zero") {
		t.Fatalf("valid=true: %v", got)
	}
	regTokenWantErr(t, "list: valid=maybe", s.Do("GET", regTokensPath+"?valid=maybe", admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// Delete.
	s.MustDo(http.StatusOK, "DELETE", regTokensPath+"/zero", admin.Token, nil)
	regTokenWantErr(t, "get: deleted", s.Do("GET", regTokensPath+"/zero", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	regTokenWantErr(t, "delete: deleted", s.Do("DELETE", regTokensPath+"/zero", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	if got := regTokenNames(t, s.MustDo(http.StatusOK, "GET", regTokensPath, admin.Token, nil)); len(got) != 3 {
		t.Fatalf("list after delete: %v", got)
	}
}

func TestAdminRegistrationTokensRegister(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "registration_requires_token: true\nregistration_tokens: [static-tok]\n")

	// The static tokens of the configuration still work.
	r, _ := regTokenRegister(t, s, "admin", "static-tok", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("register with the static token: %s", r.Body)
	}
	admin := testserver.User{ID: r.String("user_id"), Token: r.String("access_token")}
	regTokenMakeAdmin(t, s, admin)

	s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{"token": "once", "uses_allowed": 1})
	if !regTokenValid(t, s, "once") {
		t.Fatal("a new token of 1 use is not valid")
	}

	// The stage passes and the registration then fails: the session holds
	// the token, pending, and nobody else may use it meanwhile.
	r, aliceSession := regTokenRegister(t, s, "alice", "once", map[string]any{"device_id": strings.Repeat("d", 1000)})
	if r.Status != http.StatusBadRequest {
		t.Fatalf("register with an overlong device ID: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", regTokensPath+"/once", admin.Token, nil)
	if regTokenNum(t, r, "pending") != 1 || regTokenNum(t, r, "completed") != 0 {
		t.Fatalf("after the stage: %s", r.Body)
	}
	if regTokenValid(t, s, "once") {
		t.Fatal("a token whose one use is pending is valid")
	}
	r, _ = regTokenRegister(t, s, "bob", "once", nil)
	regTokenWantErr(t, "bob while alice holds the token", r, http.StatusUnauthorized, "M_UNAUTHORIZED")
	if r.JSON["flows"] == nil || r.String("session") == "" {
		t.Fatalf("a failed stage must answer the UIA challenge: %s", r.Body)
	}

	// Alice finishes in her session: the use is completed.
	r = s.MustDo(http.StatusOK, "POST", regPath, "", map[string]any{
		"username": "alice", "password": "pw",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "once", "session": aliceSession},
	})
	if r.String("user_id") != "@alice:test.local" {
		t.Fatalf("alice: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/account/whoami", r.String("access_token"), nil)
	r = s.MustDo(http.StatusOK, "GET", regTokensPath+"/once", admin.Token, nil)
	if regTokenNum(t, r, "pending") != 0 || regTokenNum(t, r, "completed") != 1 {
		t.Fatalf("after alice registered: %s", r.Body)
	}
	if regTokenValid(t, s, "once") {
		t.Fatal("a used-up token is valid")
	}
	if got := regTokenNames(t, s.MustDo(http.StatusOK, "GET", regTokensPath+"?valid=false", admin.Token, nil)); len(got) != 1 || got[0] != "once" {
		t.Fatalf("valid=false: %v", got)
	}

	// Used twice: refused.
	r, _ = regTokenRegister(t, s, "bob", "once", nil)
	regTokenWantErr(t, "second use", r, http.StatusUnauthorized, "M_UNAUTHORIZED")

	// One more use given by the admin: bob registers.
	s.MustDo(http.StatusOK, "PUT", regTokensPath+"/once", admin.Token, map[string]any{"uses_allowed": 2})
	if r, _ = regTokenRegister(t, s, "bob", "once", nil); r.String("user_id") != "@bob:test.local" {
		t.Fatalf("bob after the raise: %s", r.Body)
	}

	// An expired token is refused.
	expiry := time.Now().Add(1500 * time.Millisecond).UnixMilli()
	s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{"token": "brief", "expiry_time": expiry})
	if !regTokenValid(t, s, "brief") {
		t.Fatal("an unexpired token is not valid")
	}
	time.Sleep(time.Until(time.UnixMilli(expiry + 50)))
	if regTokenValid(t, s, "brief") {
		t.Fatal("an expired token is valid")
	}
	r, _ = regTokenRegister(t, s, "carol", "brief", nil)
	regTokenWantErr(t, "expired token", r, http.StatusUnauthorized, "M_UNAUTHORIZED")

	// A deleted token is refused; an unlimited one serves many.
	s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{"token": "many"})
	for _, u := range []string{"dave", "erin"} {
		if r, _ := regTokenRegister(t, s, u, "many", nil); r.Status != http.StatusOK {
			t.Fatalf("%s with an unlimited token: %s", u, r.Body)
		}
	}
	if r := s.MustDo(http.StatusOK, "GET", regTokensPath+"/many", admin.Token, nil); regTokenNum(t, r, "completed") != 2 {
		t.Fatalf("unlimited token: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "DELETE", regTokensPath+"/many", admin.Token, nil)
	if regTokenValid(t, s, "many") {
		t.Fatal("a deleted token is valid")
	}
	r, _ = regTokenRegister(t, s, "frank", "many", nil)
	regTokenWantErr(t, "deleted token", r, http.StatusUnauthorized, "M_UNAUTHORIZED")
	if !regTokenValid(t, s, "static-tok") {
		t.Fatal("the static token is no longer valid")
	}
}

// Concurrent registrations cannot together use a token more often than
// it allows.
func TestAdminRegistrationTokensConcurrent(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "registration_requires_token: true\nregistration_tokens: [static-tok]\n")
	r, _ := regTokenRegister(t, s, "admin", "static-tok", nil)
	admin := testserver.User{ID: r.String("user_id"), Token: r.String("access_token")}
	regTokenMakeAdmin(t, s, admin)
	s.MustDo(http.StatusOK, "POST", regTokensPath+"/new", admin.Token, map[string]any{"token": "twice", "uses_allowed": 2})

	const n = 8
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := map[string]any{"username": fmt.Sprintf("user%d", i), "password": "pw"}
			session := s.Do("POST", regPath, "", body).String("session")
			body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "twice", "session": session}
			statuses <- s.Do("POST", regPath, "", body).Status
		}()
	}
	wg.Wait()
	close(statuses)
	ok := 0
	for st := range statuses {
		switch st {
		case http.StatusOK:
			ok++
		case http.StatusUnauthorized:
		default:
			t.Fatalf("unexpected status %d", st)
		}
	}
	r = s.MustDo(http.StatusOK, "GET", regTokensPath+"/twice", admin.Token, nil)
	if ok != 2 || regTokenNum(t, r, "completed") != 2 || regTokenNum(t, r, "pending") != 0 {
		t.Fatalf("%d registrations succeeded with a token of 2 uses: %s", ok, r.Body)
	}
}
