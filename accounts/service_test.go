package accounts_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/storage"
)

// clock is a manually advanced time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const lifetime = 10 * time.Minute

type env struct {
	svc   *accounts.Service
	clock *clock
	db    *storage.DB
	ctx   context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := storage.Open(context.Background(), storage.Options{Path: filepath.Join(t.TempDir(), "accounts.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	svc := accounts.New(db, accounts.Config{
		ServerName: "example.org", BcryptCost: 4, RefreshLifetime: lifetime, Logger: log, Now: c.Now,
	})
	return &env{svc: svc, clock: c, db: db, ctx: context.Background()}
}

func (e *env) register(t *testing.T, localpart, password string) accounts.Credentials {
	t.Helper()
	c, err := e.svc.Register(e.ctx, accounts.RegisterRequest{Localpart: localpart, Password: password, IP: "192.0.2.1"})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	return c
}

// wantMX fails unless err is a Matrix error with this status and errcode.
func wantMX(t *testing.T, err error, status int, code string) *mxhttp.Error {
	t.Helper()
	var me *mxhttp.Error
	if !errors.As(err, &me) {
		t.Fatalf("got %v, want a Matrix error %d %s", err, status, code)
	}
	if me.Status != status || me.Code != code {
		t.Fatalf("got %d %s (%s), want %d %s", me.Status, me.Code, me.Message, status, code)
	}
	return me
}

// wantChallenge fails unless err is a UIA 401 with this errcode ("" for none).
func wantChallenge(t *testing.T, err error, code string) *accounts.UIAChallenge {
	t.Helper()
	var ch *accounts.UIAChallenge
	if !errors.As(err, &ch) {
		t.Fatalf("got %v, want a UIA challenge", err)
	}
	if ch.StatusCode() != http.StatusUnauthorized || ch.ErrCode != code {
		t.Fatalf("challenge %d %q, want 401 %q", ch.StatusCode(), ch.ErrCode, code)
	}
	return ch
}

func softLogout(me *mxhttp.Error) any { return me.Extra["soft_logout"] }

func TestAccessTokenExpiryIsSoftLogout(t *testing.T) {
	e := newEnv(t)
	e.register(t, "alice", "pw")
	creds, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if creds.RefreshToken == "" || creds.ExpiresIn != lifetime {
		t.Fatalf("login credentials: %+v", creds)
	}
	plain, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if plain.RefreshToken != "" || plain.ExpiresIn != 0 {
		t.Fatalf("login without refresh: %+v", plain)
	}

	if _, err := e.svc.Authenticate(e.ctx, creds.AccessToken, ""); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	e.clock.Advance(lifetime - time.Millisecond)
	if _, err := e.svc.Authenticate(e.ctx, creds.AccessToken, ""); err != nil {
		t.Fatalf("token just before expiry: %v", err)
	}
	e.clock.Advance(time.Millisecond)
	_, err = e.svc.Authenticate(e.ctx, creds.AccessToken, "")
	if me := wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN"); softLogout(me) != true {
		t.Fatalf("expired token: soft_logout = %v, want true", softLogout(me))
	}

	// The refresh token still works after the access token expired.
	next, err := e.svc.Refresh(e.ctx, creds.RefreshToken)
	if err != nil {
		t.Fatalf("refresh after expiry: %v", err)
	}
	if next.UserID != creds.UserID || next.DeviceID != creds.DeviceID || next.ExpiresIn != lifetime {
		t.Fatalf("refreshed credentials: %+v (was %+v)", next, creds)
	}
	r, err := e.svc.Authenticate(e.ctx, next.AccessToken, "")
	if err != nil || r.UserID != "@alice:example.org" || r.DeviceID != creds.DeviceID {
		t.Fatalf("refreshed token: %+v, %v", r, err)
	}
	e.clock.Advance(lifetime)
	_, err = e.svc.Authenticate(e.ctx, next.AccessToken, "")
	if me := wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN"); softLogout(me) != true {
		t.Fatal("refreshed token did not expire softly")
	}

	// Tokens issued without a refresh token do not expire.
	e.clock.Advance(365 * 24 * time.Hour)
	if _, err := e.svc.Authenticate(e.ctx, plain.AccessToken, ""); err != nil {
		t.Fatalf("non-expiring token after a year: %v", err)
	}

	// An unknown token is a hard logout.
	_, err = e.svc.Authenticate(e.ctx, "no-such-token", "")
	if me := wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN"); softLogout(me) != false {
		t.Fatalf("unknown token: soft_logout = %v, want false", softLogout(me))
	}
}

func TestRefreshRotation(t *testing.T) {
	e := newEnv(t)
	e.register(t, "alice", "pw")
	login, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.svc.Refresh(e.ctx, login.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// The client never saw first: it retries with the old refresh token.
	retry, err := e.svc.Refresh(e.ctx, login.RefreshToken)
	if err != nil {
		t.Fatalf("retry with the old refresh token: %v", err)
	}
	// The abandoned rotation is void.
	if _, err := e.svc.Authenticate(e.ctx, first.AccessToken, ""); err == nil {
		t.Error("access token of an abandoned rotation still works")
	}
	if _, err := e.svc.Refresh(e.ctx, first.RefreshToken); err == nil {
		t.Error("refresh token of an abandoned rotation still works")
	}
	// Using the new access token revokes the old refresh token.
	if _, err := e.svc.Authenticate(e.ctx, retry.AccessToken, ""); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Refresh(e.ctx, login.RefreshToken)
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// So does using the new refresh token.
	second, err := e.svc.Refresh(e.ctx, retry.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Refresh(e.ctx, second.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Refresh(e.ctx, retry.RefreshToken)
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Logging in again on the device ends its refresh chain.
	again, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw", DeviceID: login.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	if again.DeviceID != login.DeviceID {
		t.Fatalf("device %s, want %s", again.DeviceID, login.DeviceID)
	}
	_, err = e.svc.Refresh(e.ctx, second.RefreshToken)
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

func TestUIA(t *testing.T) {
	e := newEnv(t)
	e.register(t, "alice", "pw")
	e.register(t, "bob", "pw")
	alice := "@alice:example.org"
	pwFlows := []accounts.Flow{{Stages: []string{accounts.StagePassword}}}
	req := func(auth any) accounts.UIARequest {
		r := accounts.UIARequest{Method: "POST", Path: "/_matrix/client/v3/delete_devices", UserID: alice, Flows: pwFlows}
		if auth != nil {
			b, err := json.Marshal(auth)
			if err != nil {
				t.Fatal(err)
			}
			r.Auth = b
		}
		return r
	}
	pw := func(session, user, password string) map[string]any {
		return map[string]any{
			"type": "m.login.password", "session": session, "password": password,
			"identifier": map[string]any{"type": "m.id.user", "user": user},
		}
	}

	ch := wantChallenge(t, e.svc.CheckUIA(e.ctx, req(nil)), "")
	if ch.Session == "" || ch.Params == nil || len(ch.Flows) != 1 || ch.Completed != nil {
		t.Fatalf("first challenge: %+v", ch)
	}
	body, _ := json.Marshal(ch)
	var decoded map[string]any
	if err := json.Unmarshal(body, &decoded); err != nil {
		t.Fatal(err)
	}
	if _, ok := decoded["params"].(map[string]any); !ok {
		t.Fatalf("params must be an object: %s", body)
	}
	if _, has := decoded["errcode"]; has {
		t.Fatalf("first challenge has an errcode: %s", body)
	}
	s := ch.Session

	// The session is bound to method, path and user.
	for name, r := range map[string]accounts.UIARequest{
		"method": {Method: "DELETE", Path: "/_matrix/client/v3/delete_devices", UserID: alice},
		"path":   {Method: "POST", Path: "/_matrix/client/v3/account/password", UserID: alice},
		"user":   {Method: "POST", Path: "/_matrix/client/v3/delete_devices", UserID: "@bob:example.org"},
	} {
		r.Flows = pwFlows
		r.Auth, _ = json.Marshal(pw(s, "bob", "pw"))
		wantMX(t, e.svc.CheckUIA(e.ctx, r), http.StatusForbidden, "M_FORBIDDEN")
		_ = name
	}
	wantMX(t, e.svc.CheckUIA(e.ctx, req(pw("nope", "alice", "pw"))), http.StatusBadRequest, "M_UNKNOWN")
	wantMX(t, e.svc.CheckUIA(e.ctx, req("a string")), http.StatusBadRequest, "M_BAD_JSON")

	ch = wantChallenge(t, e.svc.CheckUIA(e.ctx, req(pw(s, "alice", "wrong"))), "M_FORBIDDEN")
	if ch.Session != s {
		t.Fatalf("failed stage changed the session: %+v", ch)
	}
	// Another user's valid password cannot ever complete the stage.
	wantMX(t, e.svc.CheckUIA(e.ctx, req(pw(s, "bob", "pw"))), http.StatusForbidden, "M_FORBIDDEN")
	wantMX(t, e.svc.CheckUIA(e.ctx, req(pw(s, "@bob:example.org", "pw"))), http.StatusForbidden, "M_FORBIDDEN")
	wantChallenge(t, e.svc.CheckUIA(e.ctx, req(pw(s, "bob", "wrong"))), "M_FORBIDDEN")
	wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.dummy", "session": s})), "M_UNRECOGNIZED")
	wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{
		"type": "m.login.password", "session": s, "password": "pw",
		"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"},
	})), "M_UNKNOWN")
	// A retry with only the session re-asks without error.
	wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{"session": s})), "")

	if err := e.svc.CheckUIA(e.ctx, req(pw(s, "@alice:example.org", "pw"))); err != nil {
		t.Fatalf("correct password: %v", err)
	}
	// A completed session is spent.
	wantMX(t, e.svc.CheckUIA(e.ctx, req(pw(s, "alice", "pw"))), http.StatusBadRequest, "M_UNKNOWN")

	// The deprecated top-level user field is understood.
	s = wantChallenge(t, e.svc.CheckUIA(e.ctx, req(nil)), "").Session
	if err := e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.password", "session": s, "user": "alice", "password": "pw"})); err != nil {
		t.Fatalf("deprecated user field: %v", err)
	}
}

func TestUIAMultiStage(t *testing.T) {
	e := newEnv(t)
	flows := []accounts.Flow{{Stages: []string{accounts.StageDummy, accounts.StageRegistrationToken}}}
	req := func(auth map[string]any) accounts.UIARequest {
		r := accounts.UIARequest{Method: "POST", Path: "/register", Flows: flows, RegistrationTokens: []string{"tok1", "tok2"}}
		if auth != nil {
			r.Auth, _ = json.Marshal(auth)
		}
		return r
	}
	s := wantChallenge(t, e.svc.CheckUIA(e.ctx, req(nil)), "").Session
	ch := wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.dummy", "session": s})), "")
	if len(ch.Completed) != 1 || ch.Completed[0] != accounts.StageDummy {
		t.Fatalf("completed %v after the first stage", ch.Completed)
	}
	ch = wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.registration_token", "token": "bad", "session": s})), "M_UNAUTHORIZED")
	if len(ch.Completed) != 1 {
		t.Fatalf("completed %v after a failed stage", ch.Completed)
	}
	wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.registration_token", "token": "", "session": s})), "M_UNAUTHORIZED")
	// Repeating a completed stage neither fails nor completes the flow.
	ch = wantChallenge(t, e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.dummy", "session": s})), "")
	if len(ch.Completed) != 1 {
		t.Fatalf("completed %v after repeating a stage", ch.Completed)
	}
	if err := e.svc.CheckUIA(e.ctx, req(map[string]any{"type": "m.login.registration_token", "token": "tok2", "session": s})); err != nil {
		t.Fatalf("second stage: %v", err)
	}

	if !accounts.ValidRegistrationToken([]string{"tok1"}, "tok1") || accounts.ValidRegistrationToken([]string{"tok1"}, "tok") ||
		accounts.ValidRegistrationToken([]string{""}, "") || accounts.ValidRegistrationToken(nil, "x") {
		t.Error("ValidRegistrationToken")
	}
}

func TestUIASessionsExpire(t *testing.T) {
	e := newEnv(t)
	flows := []accounts.Flow{{Stages: []string{accounts.StageDummy}}}
	req := accounts.UIARequest{Method: "POST", Path: "/register", Flows: flows}
	s := wantChallenge(t, e.svc.CheckUIA(e.ctx, req), "").Session
	e.clock.Advance(48*time.Hour + time.Second)
	req.Auth, _ = json.Marshal(map[string]any{"type": "m.login.dummy", "session": s})
	wantMX(t, e.svc.CheckUIA(e.ctx, req), http.StatusBadRequest, "M_UNKNOWN")
}

// mac is Synapse's shared-secret registration MAC, written out from its
// documentation rather than with the package's helper.
func mac(secret, nonce, user, password, adminFlag string, extra ...string) string {
	h := hmac.New(sha1.New, []byte(secret))
	h.Write([]byte(strings.Join(append([]string{nonce, user, password, adminFlag}, extra...), "\x00")))
	return hex.EncodeToString(h.Sum(nil))
}

func TestSharedSecretRegistration(t *testing.T) {
	e := newEnv(t)
	const secret = "s3cret"
	if got, want := accounts.SharedSecretMAC(secret, "n", "u", "p", false, ""), mac(secret, "n", "u", "p", "notadmin"); got != want {
		t.Fatalf("SharedSecretMAC = %s, want %s", got, want)
	}
	if got, want := accounts.SharedSecretMAC(secret, "n", "u", "p", true, "bot"), mac(secret, "n", "u", "p", "admin", "bot"); got != want {
		t.Fatalf("SharedSecretMAC with user type = %s, want %s", got, want)
	}

	str := func(s string) *string { return &s }
	request := func(nonce, user, password string, admin bool, m string) accounts.SharedSecretRequest {
		return accounts.SharedSecretRequest{Nonce: str(nonce), Username: str(user), Password: str(password), Admin: admin, MAC: str(m)}
	}
	nonce := func() string {
		n, err := e.svc.SharedSecretNonce(e.ctx, secret)
		if err != nil || len(n) < 32 {
			t.Fatalf("nonce %q, %v", n, err)
		}
		return n
	}

	n := nonce()
	creds, err := e.svc.SharedSecretRegister(e.ctx, secret, request(n, "Root", "pw", true, mac(secret, n, "Root", "pw", "admin")), "")
	if err != nil {
		t.Fatal(err)
	}
	if creds.UserID != "@root:example.org" || creds.AccessToken == "" {
		t.Fatalf("credentials: %+v", creds)
	}
	acc, err := e.svc.GetAccount(e.ctx, creds.UserID)
	if err != nil || !acc.IsAdmin {
		t.Fatalf("account: %+v, %v", acc, err)
	}
	r, err := e.svc.Authenticate(e.ctx, creds.AccessToken, "")
	if err != nil || !r.IsAdmin {
		t.Fatalf("requester: %+v, %v", r, err)
	}
	p, err := e.svc.GetProfile(e.ctx, creds.UserID)
	if err != nil || string(p["displayname"]) != `"root"` {
		t.Fatalf("profile: %v, %v", p, err)
	}

	_, err = e.svc.SharedSecretRegister(e.ctx, secret, request(n, "other", "pw", false, mac(secret, n, "other", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusBadRequest, "M_UNKNOWN")

	n = nonce()
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, request(n, "eve", "pw", true, mac(secret, n, "eve", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")
	// A failed attempt spends the nonce.
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, request(n, "eve", "pw", false, mac(secret, n, "eve", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusBadRequest, "M_UNKNOWN")

	// Nonces live for a minute.
	n = nonce()
	e.clock.Advance(time.Minute)
	if _, err := e.svc.SharedSecretRegister(e.ctx, secret, request(n, "sam", "pw", false, mac(secret, n, "sam", "pw", "notadmin")), ""); err != nil {
		t.Fatalf("nonce at 60s: %v", err)
	}
	n = nonce()
	e.clock.Advance(time.Minute + time.Millisecond)
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, request(n, "tom", "pw", false, mac(secret, n, "tom", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusBadRequest, "M_UNKNOWN")

	n = nonce()
	bad := request(n, "bot1", "pw", false, mac(secret, n, "bot1", "pw", "notadmin", "robot"))
	bad.UserType = str("robot")
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, bad, "")
	wantMX(t, err, http.StatusBadRequest, "M_UNKNOWN")

	// An empty username is refused rather than replaced by a random one.
	n = nonce()
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, request(n, "", "pw", false, mac(secret, n, "", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusBadRequest, "M_INVALID_USERNAME")
	n = nonce()
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, request(n, "_x", "pw", false, mac(secret, n, "_x", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusBadRequest, "M_INVALID_USERNAME")

	n = nonce()
	_, err = e.svc.SharedSecretRegister(e.ctx, "", request(n, "x", "pw", false, mac("", n, "x", "pw", "notadmin")), "")
	wantMX(t, err, http.StatusBadRequest, "M_UNKNOWN")
	_, err = e.svc.SharedSecretRegister(e.ctx, secret, accounts.SharedSecretRequest{Username: str("x")}, "")
	wantMX(t, err, http.StatusBadRequest, "M_BAD_JSON")
}

func TestLocalparts(t *testing.T) {
	e := newEnv(t)
	for _, ok := range []string{"alice", "a.b_c=d-e/f+g", "0x", strings.Repeat("a", 255-len("@:example.org"))} {
		if err := e.svc.ValidateLocalpart(ok, false); err != nil {
			t.Errorf("ValidateLocalpart(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Alice", "a b", "a:b", "@a", "_bridge", "123", "é", strings.Repeat("a", 256-len("@:example.org"))} {
		wantMX(t, e.svc.ValidateLocalpart(bad, false), http.StatusBadRequest, "M_INVALID_USERNAME")
	}
	if err := e.svc.ValidateLocalpart("_bridge_alice", true); err != nil {
		t.Errorf("reserved localpart for an application service: %v", err)
	}

	for in, want := range map[string]string{
		"alice": "@alice:example.org", "ALICE": "@alice:example.org",
		"@Alice:example.org": "@alice:example.org", "@alice:example.org": "@alice:example.org",
	} {
		if got, err := e.svc.ResolveUser(in); err != nil || got != want {
			t.Errorf("ResolveUser(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := e.svc.ResolveUser("@alice:example.com")
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = e.svc.ResolveUser("@alice:notexample.org")
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = e.svc.ResolveUser("")
	wantMX(t, err, http.StatusBadRequest, "M_MISSING_PARAM")

	if e.svc.Localpart("@bob:example.org") != "bob" || e.svc.Localpart("@bob:example.com") != "" || e.svc.IsLocal("bob:example.org") {
		t.Error("Localpart/IsLocal")
	}

	e.register(t, "alice", "pw")
	wantMX(t, e.svc.CheckAvailable(e.ctx, "alice"), http.StatusBadRequest, "M_USER_IN_USE")
	if err := e.svc.CheckAvailable(e.ctx, "bob"); err != nil {
		t.Errorf("CheckAvailable(bob) = %v", err)
	}
	_, err = e.svc.Register(e.ctx, accounts.RegisterRequest{Localpart: "alice", Password: "x"})
	wantMX(t, err, http.StatusBadRequest, "M_USER_IN_USE")
	_, err = e.svc.Register(e.ctx, accounts.RegisterRequest{Localpart: "_x", Password: "x"})
	wantMX(t, err, http.StatusBadRequest, "M_INVALID_USERNAME")

	guest, err := e.svc.Register(e.ctx, accounts.RegisterRequest{Guest: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Authenticate(e.ctx, guest.AccessToken, "")
	if err != nil || !r.IsGuest || strings.Trim(e.svc.Localpart(r.UserID), "0123456789") != "" {
		t.Fatalf("guest: %+v, %v", r, err)
	}
}

func TestPasswords(t *testing.T) {
	e := newEnv(t)
	// bcrypt alone would ignore everything after byte 72.
	long := strings.Repeat("p", 100)
	e.register(t, "alice", long+"1")
	if _, err := e.svc.CheckPassword(e.ctx, "@alice:example.org", long+"1"); err != nil {
		t.Fatalf("long password: %v", err)
	}
	_, err := e.svc.CheckPassword(e.ctx, "@alice:example.org", long+"2")
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = e.svc.CheckPassword(e.ctx, "@alice:example.org", long[:72])
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")

	_, err = e.svc.Register(e.ctx, accounts.RegisterRequest{Localpart: "bob", Password: strings.Repeat("x", accounts.MaxPasswordLength+1)})
	wantMX(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: strings.Repeat("x", accounts.MaxPasswordLength+1)})
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")

	// Wrong password and unknown user read the same.
	_, errWrong := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "nope"})
	_, errUnknown := e.svc.Login(e.ctx, accounts.LoginRequest{User: "nobody", Password: "nope"})
	if wantMX(t, errWrong, http.StatusForbidden, "M_FORBIDDEN").Message != wantMX(t, errUnknown, http.StatusForbidden, "M_FORBIDDEN").Message {
		t.Error("wrong password and unknown user are told apart")
	}

	// An account registered without a password cannot log in with an empty one.
	if _, err := e.svc.Register(e.ctx, accounts.RegisterRequest{Localpart: "nopw"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Login(e.ctx, accounts.LoginRequest{User: "nopw", Password: ""})
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")
}

func TestChangePasswordAndDeactivate(t *testing.T) {
	e := newEnv(t)
	main := e.register(t, "alice", "old")
	other, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "old", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	wantMX(t, e.svc.ChangePassword(e.ctx, main.UserID, "", main.DeviceID, true), http.StatusBadRequest, "M_MISSING_PARAM")
	if err := e.svc.ChangePassword(e.ctx, main.UserID, "new", main.DeviceID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(e.ctx, main.AccessToken, ""); err != nil {
		t.Fatalf("requesting device logged out: %v", err)
	}
	_, err = e.svc.Authenticate(e.ctx, other.AccessToken, "")
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	_, err = e.svc.Refresh(e.ctx, other.RefreshToken)
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	_, err = e.svc.CheckPassword(e.ctx, main.UserID, "old")
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")

	if err := e.svc.Deactivate(e.ctx, main.UserID); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, main.AccessToken, "")
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	_, err = e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "new"})
	wantMX(t, err, http.StatusForbidden, "M_USER_DEACTIVATED")
	wantMX(t, e.svc.CheckAvailable(e.ctx, "alice"), http.StatusBadRequest, "M_USER_IN_USE")
	devs, err := e.svc.ListDevices(e.ctx, main.UserID)
	if err != nil || len(devs) != 0 {
		t.Fatalf("devices after deactivation: %+v, %v", devs, err)
	}
}

func TestDevices(t *testing.T) {
	e := newEnv(t)
	reg, err := e.svc.Register(e.ctx, accounts.RegisterRequest{
		Localpart: "alice", Password: "pw", DeviceID: "DESK", DeviceDisplayName: "Desktop", IP: "192.0.2.1",
	})
	if err != nil || reg.DeviceID != "DESK" {
		t.Fatalf("register: %+v, %v", reg, err)
	}
	created := e.clock.Now().UnixMilli()

	// Last seen is written at most every TouchInterval.
	e.clock.Advance(accounts.TouchInterval)
	if _, err := e.svc.Authenticate(e.ctx, reg.AccessToken, "192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	d, err := e.svc.GetDevice(e.ctx, reg.UserID, "DESK")
	if err != nil || d.LastSeenIP != "192.0.2.1" || d.LastSeenTS != created {
		t.Fatalf("device touched too early: %+v, %v", d, err)
	}
	e.clock.Advance(time.Millisecond)
	if _, err := e.svc.Authenticate(e.ctx, reg.AccessToken, "192.0.2.3"); err != nil {
		t.Fatal(err)
	}
	d, _ = e.svc.GetDevice(e.ctx, reg.UserID, "DESK")
	if d.LastSeenIP != "192.0.2.3" || d.LastSeenTS != e.clock.Now().UnixMilli() || d.CreatedTS != created {
		t.Fatalf("device after touch: %+v", d)
	}

	// Logging in on the same device keeps its name and replaces its token.
	again, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw", DeviceID: "DESK"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(e.ctx, reg.AccessToken, "")
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	d, _ = e.svc.GetDevice(e.ctx, reg.UserID, "DESK")
	if d.DisplayName != "Desktop" || d.CreatedTS != created {
		t.Fatalf("device after re-login: %+v", d)
	}
	devs, _ := e.svc.ListDevices(e.ctx, reg.UserID)
	if len(devs) != 1 {
		t.Fatalf("%d devices, want 1", len(devs))
	}

	wantMX(t, e.svc.RenameDevice(e.ctx, reg.UserID, "NOPE", "x"), http.StatusNotFound, "M_NOT_FOUND")
	_, err = e.svc.GetDevice(e.ctx, reg.UserID, "NOPE")
	wantMX(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = e.svc.StartSession(e.ctx, reg.UserID, strings.Repeat("D", accounts.MaxDeviceIDLength+1), "", "", false)
	wantMX(t, err, http.StatusBadRequest, "M_INVALID_PARAM")

	r, err := e.svc.Authenticate(e.ctx, again.AccessToken, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Logout(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	if devs, _ := e.svc.ListDevices(e.ctx, reg.UserID); len(devs) != 0 {
		t.Fatalf("devices after logout: %+v", devs)
	}
}

func TestProfileFields(t *testing.T) {
	e := newEnv(t)
	alice := e.register(t, "alice", "pw")
	e.register(t, "bob", "pw")
	me := &accounts.Requester{UserID: alice.UserID}
	set := func(r *accounts.Requester, user, key, value string) error {
		var v json.RawMessage
		if value != "" {
			v = json.RawMessage(value)
		}
		return e.svc.SetProfileField(e.ctx, r, user, key, v)
	}

	p, err := e.svc.GetProfile(e.ctx, alice.UserID)
	if err != nil || len(p) != 1 || string(p["displayname"]) != `"alice"` {
		t.Fatalf("default profile: %v, %v", p, err)
	}
	_, err = e.svc.GetProfile(e.ctx, "@nobody:example.org")
	wantMX(t, err, http.StatusNotFound, "M_NOT_FOUND")

	wantMX(t, set(me, alice.UserID, "org."+strings.Repeat("k", 252), `1`), http.StatusBadRequest, "M_KEY_TOO_LARGE")
	wantMX(t, set(me, alice.UserID, "Org.example", `1`), http.StatusBadRequest, "M_INVALID_PARAM")
	wantMX(t, set(me, alice.UserID, "displayname", `{"a":1}`), http.StatusBadRequest, "M_BAD_JSON")
	wantMX(t, set(me, alice.UserID, "displayname", `"`+strings.Repeat("n", accounts.MaxDisplayName+1)+`"`), http.StatusBadRequest, "M_INVALID_PARAM")
	wantMX(t, set(me, alice.UserID, "avatar_url", `"`+strings.Repeat("u", 1001)+`"`), http.StatusBadRequest, "M_INVALID_PARAM")
	wantMX(t, set(me, alice.UserID, "m.tz", `5`), http.StatusBadRequest, "M_BAD_JSON")
	wantMX(t, set(me, "@bob:example.org", "displayname", `"x"`), http.StatusForbidden, "M_FORBIDDEN")
	wantMX(t, set(me, "@bob:example.org", "org.example.k", ""), http.StatusForbidden, "M_FORBIDDEN")

	for key, value := range map[string]string{
		"avatar_url": `"mxc://example.org/a"`, "m.tz": `"Europe/Paris"`,
		"org.example.obj": `{"x":[1,2]}`, "org.example.null": `null`,
	} {
		if err := set(me, alice.UserID, key, value); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
	}
	p, _ = e.svc.GetProfile(e.ctx, alice.UserID)
	if string(p["avatar_url"]) != `"mxc://example.org/a"` || string(p["m.tz"]) != `"Europe/Paris"` ||
		string(p["org.example.obj"]) != `{"x":[1,2]}` || string(p["org.example.null"]) != "null" {
		t.Fatalf("profile: %v", p)
	}
	if err := set(me, alice.UserID, "org.example.obj", ""); err != nil {
		t.Fatal(err)
	}
	if err := set(me, alice.UserID, "avatar_url", ""); err != nil {
		t.Fatal(err)
	}
	p, _ = e.svc.GetProfile(e.ctx, alice.UserID)
	if _, has := p["org.example.obj"]; has {
		t.Fatalf("deleted field still there: %v", p)
	}
	if _, has := p["avatar_url"]; has {
		t.Fatalf("deleted avatar_url still there: %v", p)
	}

	// Admins may edit other local users' profiles, nobody a remote one's.
	admin := &accounts.Requester{UserID: "@root:example.org", IsAdmin: true}
	if err := set(admin, "@bob:example.org", "displayname", `"Robert"`); err != nil {
		t.Fatalf("admin edit: %v", err)
	}
	wantMX(t, set(admin, "@bob:example.com", "displayname", `"x"`), http.StatusForbidden, "M_FORBIDDEN")
	wantMX(t, set(admin, "@nobody:example.org", "displayname", `"x"`), http.StatusNotFound, "M_NOT_FOUND")

	// 64 KiB for the whole profile, as serialised.
	big := `"` + strings.Repeat("b", 64*1024-200) + `"`
	if err := set(me, alice.UserID, "org.example.big", big); err != nil {
		t.Fatalf("profile just under the limit: %v", err)
	}
	wantMX(t, set(me, alice.UserID, "org.example.more", `"`+strings.Repeat("m", 300)+`"`), http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
	// Shrinking an oversized field is always possible.
	if err := set(me, alice.UserID, "org.example.big", `"small"`); err != nil {
		t.Fatal(err)
	}
}
