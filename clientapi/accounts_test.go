package clientapi_test

import (
	"net/http"
	"testing"

	"homeserver/internal/testserver"
)

// The acceptance path: register through the dummy flow, log in from
// a second device, list and delete devices, and find it all after a restart.
func TestAccountLifecycleSurvivesRestart(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	if alice.ID != "@alice:test.local" || alice.Token == "" || alice.DeviceID == "" {
		t.Fatalf("register: %+v", alice)
	}
	phone := s.Login("alice", "correct horse")
	if phone.DeviceID == alice.DeviceID {
		t.Fatal("second login reused the first device")
	}
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/devices", alice.Token, nil)
	if n := len(r.JSON["devices"].([]any)); n != 2 {
		t.Fatalf("%d devices, want 2: %s", n, r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/devices/"+phone.DeviceID, alice.Token, map[string]any{"display_name": "Phone"})

	s.Restart()

	who := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/account/whoami", phone.Token, nil)
	if who.String("user_id") != alice.ID || who.String("device_id") != phone.DeviceID {
		t.Fatalf("whoami after restart: %s", who.Body)
	}
	dev := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/devices/"+phone.DeviceID, alice.Token, nil)
	if dev.String("display_name") != "Phone" {
		t.Fatalf("device after restart: %s", dev.Body)
	}

	// Deleting the phone needs the password through user-interactive auth.
	path := "/_matrix/client/v3/devices/" + phone.DeviceID
	first := s.MustDo(http.StatusUnauthorized, "DELETE", path, alice.Token, nil)
	if first.String("session") == "" {
		t.Fatalf("no UIA session: %s", first.Body)
	}
	auth := map[string]any{
		"type": "m.login.password", "session": first.String("session"), "password": "wrong",
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"},
	}
	bad := s.MustDo(http.StatusUnauthorized, "DELETE", path, alice.Token, map[string]any{"auth": auth})
	if bad.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password: %s", bad.Body)
	}
	auth["password"] = "correct horse"
	s.MustDo(http.StatusOK, "DELETE", path, alice.Token, map[string]any{"auth": auth})

	gone := s.MustDo(http.StatusUnauthorized, "GET", "/_matrix/client/v3/account/whoami", phone.Token, nil)
	if gone.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("deleted device's token: %s", gone.Body)
	}
	s.Restart()
	r = s.MustDo(http.StatusOK, "GET", "/_matrix/client/r0/devices", alice.Token, nil)
	if n := len(r.JSON["devices"].([]any)); n != 1 {
		t.Fatalf("%d devices after delete and restart, want 1: %s", n, r.Body)
	}
}

// What a token resolves to may be kept between requests (SQLite): a
// token logged out, or logged out with all the others, is refused at
// once, however often it was used just before.
func TestTokenRefusedRightAfterLogout(t *testing.T) {
	s := testserver.Start(t, "")
	s.Register("alice", "pw")
	one, two, three := s.Login("alice", "pw"), s.Login("alice", "pw"), s.Login("alice", "pw")
	whoami := func(u testserver.User) *testserver.Response {
		return s.Do("GET", "/_matrix/client/v3/account/whoami", u.Token, nil)
	}
	for range 3 {
		for _, u := range []testserver.User{one, two, three} {
			if r := whoami(u); r.Status != http.StatusOK {
				t.Fatalf("whoami: %d %s", r.Status, r.Body)
			}
		}
	}
	s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/logout", one.Token, map[string]any{})
	if r := whoami(one); r.Status != http.StatusUnauthorized || r.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("a logged-out token: %d %s", r.Status, r.Body)
	}
	if r := whoami(two); r.Status != http.StatusOK {
		t.Fatalf("another device's token after one logout: %d %s", r.Status, r.Body)
	}
	s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/logout/all", three.Token, map[string]any{})
	for _, u := range []testserver.User{two, three} {
		if r := whoami(u); r.Status != http.StatusUnauthorized || r.Errcode() != "M_UNKNOWN_TOKEN" {
			t.Fatalf("a token after logout/all: %d %s", r.Status, r.Body)
		}
	}
}
