package accounts_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/ratelimit"
	"homeserver/storage"
)

// newEnvWith is newEnv with a configuration of the test's own.
func newEnvWith(t *testing.T, configure func(*accounts.Config)) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := storage.Open(context.Background(), storage.Options{Path: filepath.Join(t.TempDir(), "accounts.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	cfg := accounts.Config{ServerName: "example.org", BcryptCost: 4, RefreshLifetime: lifetime, Logger: log, Now: c.Now}
	configure(&cfg)
	return &env{svc: accounts.New(db, cfg), clock: c, db: db, ctx: context.Background()}
}

// A login for an account that does not exist, or has no password, still
// runs one bcrypt comparison at the configured cost, so that its answer
// takes as long as a wrong password's.
func TestPasswordCheckCostsTheSameForUnknownUsers(t *testing.T) {
	e := newEnv(t)
	e.register(t, "alice", "pw")
	if _, err := e.svc.Register(e.ctx, accounts.RegisterRequest{Localpart: "nopw", InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	var hashes []string
	e.svc.SetPasswordVerifier(func(hash, password string) bool {
		hashes = append(hashes, hash)
		return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
	})
	alice, err := e.svc.GetAccount(e.ctx, "@alice:example.org")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ user, password string }{
		{"alice", "wrong"}, {"nobody", "pw"}, {"nopw", ""}, {"nopw", "pw"},
	} {
		hashes = nil
		_, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: tc.user, Password: tc.password})
		wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")
		if len(hashes) != 1 {
			t.Fatalf("%s: %d comparisons, want 1", tc.user, len(hashes))
		}
		if cost, err := bcrypt.Cost([]byte(hashes[0])); err != nil || cost != 4 {
			t.Fatalf("%s: compared with a hash of cost %d (%v), want 4", tc.user, cost, err)
		}
		if (tc.user == "alice") != (hashes[0] == alice.PasswordHash) {
			t.Fatalf("%s: compared with the wrong hash", tc.user)
		}
	}
	hashes = nil
	if _, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw"}); err != nil || len(hashes) != 1 {
		t.Fatalf("right password: %v, %d comparisons", err, len(hashes))
	}
}

// Every wrong password counts against the same per-user limit: at /login
// and at the password stage of user-interactive auth, on any endpoint.
func TestFailedPasswordsShareOneLimit(t *testing.T) {
	e := newEnv(t)
	e.register(t, "alice", "pw")
	e.register(t, "bob", "pw")
	e.svc.LimitFailedPasswords(ratelimit.New(0.001, 3))
	alice := "@alice:example.org"
	uia := func(path, user, password string) error {
		req := accounts.UIARequest{Method: "POST", Path: path, UserID: alice,
			Flows: []accounts.Flow{{Stages: []string{accounts.StagePassword}}}}
		var ch *accounts.UIAChallenge
		if !errors.As(e.svc.CheckUIA(e.ctx, req), &ch) {
			t.Fatal("no challenge")
		}
		req.Auth = []byte(`{"type": "m.login.password", "session": "` + ch.Session + `", "user": "` + user + `", "password": "` + password + `"}`)
		return e.svc.CheckUIA(e.ctx, req)
	}
	wantChallenge(t, uia("/account/password", "alice", "wrong"), "M_FORBIDDEN")
	// Naming another user is a failed attempt on the requester's account,
	// refused outright even with that user's password.
	wantMX(t, uia("/delete_devices", "bob", "pw"), http.StatusForbidden, "M_FORBIDDEN")
	_, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "wrong"})
	wantMX(t, err, http.StatusForbidden, "M_FORBIDDEN")

	me := wantMX(t, uia("/account/deactivate", "alice", "pw"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if me.RetryAfter <= 0 {
		t.Errorf("no retry_after: %+v", me)
	}
	_, err = e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw"})
	wantMX(t, err, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if _, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "bob", Password: "pw"}); err != nil {
		t.Fatalf("another user: %v", err)
	}
}

// refresh_token_lifetime ends sessions idle for longer: each refresh gives
// a token that lives that long again, and access tokens never outlive
// their refresh token.
func TestRefreshTokenLifetime(t *testing.T) {
	e := newEnvWith(t, func(c *accounts.Config) { c.RefreshTokenLifetime = time.Hour })
	e.register(t, "alice", "pw")
	creds, err := e.svc.Login(e.ctx, accounts.LoginRequest{User: "alice", Password: "pw", RefreshToken: true})
	if err != nil || creds.ExpiresIn != lifetime {
		t.Fatalf("login: %+v, %v", creds, err)
	}
	for range 3 {
		e.clock.Advance(59 * time.Minute)
		if creds, err = e.svc.Refresh(e.ctx, creds.RefreshToken); err != nil {
			t.Fatalf("refresh within the lifetime: %v", err)
		}
	}
	e.clock.Advance(time.Hour)
	_, err = e.svc.Refresh(e.ctx, creds.RefreshToken)
	if me := wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN"); me.Extra["soft_logout"] != false {
		t.Fatalf("expired refresh token: %+v", me)
	}

	short := newEnvWith(t, func(c *accounts.Config) { c.RefreshTokenLifetime = 2 * time.Minute })
	short.register(t, "bob", "pw")
	creds, err = short.svc.Login(short.ctx, accounts.LoginRequest{User: "bob", Password: "pw", RefreshToken: true})
	if err != nil || creds.ExpiresIn != 2*time.Minute {
		t.Fatalf("access token outlives its refresh token: %+v, %v", creds, err)
	}
	short.clock.Advance(2 * time.Minute)
	_, err = short.svc.Authenticate(short.ctx, creds.AccessToken, "")
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	_, err = short.svc.Refresh(short.ctx, creds.RefreshToken)
	wantMX(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Unset, refresh tokens live until used.
	e = newEnv(t)
	e.register(t, "carol", "pw")
	creds, err = e.svc.Login(e.ctx, accounts.LoginRequest{User: "carol", Password: "pw", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(365 * 24 * time.Hour)
	if _, err := e.svc.Refresh(e.ctx, creds.RefreshToken); err != nil {
		t.Fatalf("refresh after a year without refresh_token_lifetime: %v", err)
	}
}

// Sessions expire after 48 hours and are deleted then, and a user keeps
// only the newest few; registration sessions wait for the caller's say.
func TestUIASessionsExpireAndAreBounded(t *testing.T) {
	e := newEnv(t)
	e.register(t, "alice", "pw")
	req := accounts.UIARequest{Method: "POST", Path: "/delete_devices", UserID: "@alice:example.org",
		Flows: []accounts.Flow{{Stages: []string{accounts.StagePassword}}}}
	open := func(r accounts.UIARequest) string {
		t.Helper()
		return wantChallenge(t, e.svc.CheckUIA(e.ctx, r), "").Session
	}
	old := open(req)
	e.clock.Advance(48*time.Hour + time.Millisecond)
	var sessions []string
	for range accounts.MaxUserUIASessions + 2 {
		sessions = append(sessions, open(req))
		e.clock.Advance(time.Millisecond)
	}
	for i, s := range append([]string{old}, sessions...) {
		_, err := e.db.GetUIASession(e.ctx, s)
		if gone := errors.Is(err, accounts.ErrNotFound); gone != (i <= 2) {
			t.Errorf("session %d: gone %v (%v)", i, gone, err)
		}
	}

	refused := mxhttp.LimitExceeded(time.Second)
	reg := accounts.UIARequest{Method: "POST", Path: "/register", Flows: []accounts.Flow{{Stages: []string{accounts.StageDummy}}},
		AllowNewSession: func() error { return refused }}
	if err := e.svc.CheckUIA(e.ctx, reg); err != refused {
		t.Fatalf("refused new session: %v", err)
	}
	reg.Auth = []byte(`{"type": "m.login.dummy"}`)
	if err := e.svc.CheckUIA(e.ctx, reg); err != refused {
		t.Fatalf("refused new session with auth: %v", err)
	}
}

// Shared-secret nonces are handed out only when the secret is set, live a
// minute and are bounded in number.
func TestSharedSecretNoncesBounded(t *testing.T) {
	e := newEnv(t)
	_, err := e.svc.SharedSecretNonce(e.ctx, "")
	wantMX(t, err, http.StatusBadRequest, "M_UNKNOWN")

	first, err := e.svc.SharedSecretNonce(e.ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute + time.Millisecond)
	var nonces []string
	for range accounts.MaxNonces + 1 {
		n, err := e.svc.SharedSecretNonce(e.ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		nonces = append(nonces, n)
		e.clock.Advance(time.Millisecond)
	}
	// The expired nonce is deleted, not merely refused, and the oldest live
	// one made room for the newest. Consuming with no age limit tells.
	for i, n := range []string{first, nonces[0], nonces[1], nonces[len(nonces)-1]} {
		ok, err := e.db.ConsumeNonce(e.ctx, n, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ok != (i >= 2) {
			t.Errorf("nonce %d: present %v", i, ok)
		}
	}
}
