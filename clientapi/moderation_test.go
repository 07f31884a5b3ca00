package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

func TestReportEventRoomUser(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	eve := s.Register("eve", "pw-eve")
	room := s.CreatePublicRoom(alice)
	s.Join(bob, room)
	ev := s.SendText(alice, room, "spam")
	evPath := testserver.RoomPath(room, "/report/"+url.PathEscape(ev))

	// Events: members report what they see, with or without reason and
	// the legacy score.
	s.MustDo(http.StatusOK, "POST", evPath, bob.Token, map[string]any{"reason": "spam", "score": -100})
	s.MustDo(http.StatusOK, "POST", evPath, bob.Token, map[string]any{})
	wantErr(t, s.Do("POST", evPath, bob.Token, map[string]any{"reason": 5}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("POST", evPath, bob.Token, map[string]any{"score": "bad"}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("POST", evPath, bob.Token, "not json"), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, s.Do("POST", evPath, bob.Token, map[string]any{"reason": strings.Repeat("x", 5000)}), http.StatusBadRequest, "M_INVALID_PARAM")
	// A non-member, an unknown event and an unknown room look alike.
	wantErr(t, s.Do("POST", evPath, eve.Token, map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", testserver.RoomPath(room, "/report/$nope"), bob.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", testserver.RoomPath("!nope:test.local", "/report/"+url.PathEscape(ev)), bob.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", evPath, "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	// An event of another room is not found through this one.
	other := s.CreateRoom(bob, map[string]any{})
	wantErr(t, s.Do("POST", testserver.RoomPath(other, "/report/"+url.PathEscape(ev)), bob.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")

	// Rooms: anyone may report a known room; reason is required.
	roomPath := testserver.RoomPath(room, "/report")
	s.MustDo(http.StatusOK, "POST", roomPath, eve.Token, map[string]any{"reason": ""})
	wantErr(t, s.Do("POST", roomPath, eve.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("POST", testserver.RoomPath("!nope:test.local", "/report"), eve.Token, map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")

	// Users: local ones must exist; other servers' are taken on trust.
	userPath := func(id string) string { return v3 + "/users/" + url.PathEscape(id) + "/report" }
	s.MustDo(http.StatusOK, "POST", userPath(alice.ID), eve.Token, map[string]any{"reason": "rude"})
	s.MustDo(http.StatusOK, "POST", userPath("@someone:elsewhere.example"), eve.Token, map[string]any{"reason": "rude"})
	wantErr(t, s.Do("POST", userPath("@ghost:test.local"), eve.Token, map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", userPath("not-a-user"), eve.Token, map[string]any{"reason": "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", userPath(alice.ID), eve.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
}

func TestWhois(t *testing.T) {
	s := testserver.Start(t, "")
	admin := dirAdmin(t, s, "boss")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	whois := func(id string) string { return v3 + "/admin/whois/" + url.PathEscape(id) }

	r := s.MustDo(http.StatusOK, "GET", whois(alice.ID), admin.Token, nil)
	devs, _ := r.JSON["devices"].(map[string]any)
	dev, _ := devs[alice.DeviceID].(map[string]any)
	sessions, _ := dev["sessions"].([]any)
	if r.String("user_id") != alice.ID || len(devs) != 1 || len(sessions) != 1 {
		t.Fatalf("whois: %s", r.Body)
	}
	conns, _ := sessions[0].(map[string]any)["connections"].([]any)
	if len(conns) != 1 || conns[0].(map[string]any)["ip"] == "" || conns[0].(map[string]any)["last_seen"] == nil {
		t.Fatalf("whois connections: %s", r.Body)
	}
	// Users may ask about themselves, not others.
	s.MustDo(http.StatusOK, "GET", whois(alice.ID), alice.Token, nil)
	wantErr(t, s.Do("GET", whois(alice.ID), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", whois("@x:elsewhere.example"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", whois("nobody"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", whois(alice.ID), "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestSuspendAdminAPIAndEffects(t *testing.T) {
	s := testserver.Start(t, "")
	admin := dirAdmin(t, s, "boss")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	path := func(id string) string { return v1 + "/admin/suspend/" + url.PathEscape(id) }

	// Authorisation first: a non-admin learns nothing, whatever the target.
	wantErr(t, s.Do("GET", path(alice.ID), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", path("@ghost:test.local"), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", path(alice.ID), bob.Token, "not json"), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", path("@ghost:test.local"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", path("@x:elsewhere.example"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", path(admin.ID), admin.Token, map[string]any{"suspended": true}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", path(alice.ID), admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("PUT", path(alice.ID), admin.Token, map[string]any{"suspended": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	other := dirAdmin(t, s, "boss2")
	wantErr(t, s.Do("GET", path(other.ID), admin.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	// Capabilities tell admins they may moderate, and no one else.
	caps := s.MustDo(http.StatusOK, "GET", v3+"/capabilities", admin.Token, nil).JSON["capabilities"].(map[string]any)
	if m, _ := caps["m.account_moderation"].(map[string]any); m["suspend"] != true || m["lock"] != true {
		t.Fatalf("admin capabilities: %v", caps)
	}
	caps = s.MustDo(http.StatusOK, "GET", v3+"/capabilities", alice.Token, nil).JSON["capabilities"].(map[string]any)
	if _, found := caps["m.account_moderation"]; found {
		t.Fatalf("user capabilities: %v", caps)
	}

	room := s.CreatePublicRoom(bob)
	s.Join(alice, room)
	own := s.SendText(alice, room, "mine")
	bobs := s.SendText(bob, room, "bob's")
	other2 := s.CreatePublicRoom(bob)

	if r := s.MustDo(http.StatusOK, "GET", path(alice.ID), admin.Token, nil); r.JSON["suspended"] != false {
		t.Fatalf("before: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "PUT", path(alice.ID), admin.Token, map[string]any{"suspended": true}); r.JSON["suspended"] != true {
		t.Fatalf("suspend: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", path(alice.ID), admin.Token, nil); r.JSON["suspended"] != true {
		t.Fatalf("after: %s", r.Body)
	}

	// A suspended user reads but does not act.
	s.MustDo(http.StatusOK, "GET", v3+"/sync?timeout=0", alice.Token, nil)
	s.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b"), alice.Token, nil)
	suspended := func(r *testserver.Response) { t.Helper(); wantErr(t, r, http.StatusForbidden, "M_USER_SUSPENDED") }
	suspended(s.Do("PUT", testserver.RoomPath(room, "/send/m.room.message/"+testserver.NextTxn()), alice.Token, map[string]any{"msgtype": "m.text", "body": "hi"}))
	suspended(s.Do("POST", v3+"/join/"+url.PathEscape(other2), alice.Token, map[string]any{}))
	suspended(s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{}))
	suspended(s.Do("POST", testserver.RoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": admin.ID}))
	suspended(s.Do("PUT", v3+"/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.Token, map[string]any{"displayname": "A"}))
	suspended(s.Do("PUT", testserver.RoomPath(room, "/state/m.room.topic"), alice.Token, map[string]any{"topic": "t"}))
	suspended(s.Do("PUT", testserver.RoomPath(room, "/redact/"+url.PathEscape(bobs)+"/"+testserver.NextTxn()), alice.Token, map[string]any{}))
	// Own redactions and leaving stay open.
	s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/redact/"+url.PathEscape(own)+"/"+testserver.NextTxn()), alice.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/leave"), alice.Token, map[string]any{})

	// Unsuspended, and the state survives restarts.
	s.MustDo(http.StatusOK, "PUT", path(alice.ID), admin.Token, map[string]any{"suspended": false})
	s.Restart()
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(other2), alice.Token, map[string]any{})
	if r := s.MustDo(http.StatusOK, "GET", path(alice.ID), admin.Token, nil); r.JSON["suspended"] != false {
		t.Fatalf("after restart: %s", r.Body)
	}
}

func TestLockAdminAPIAndEffects(t *testing.T) {
	s := testserver.Start(t, "")
	admin := dirAdmin(t, s, "boss")
	alice := s.Register("alice", "pw-alice")
	second := s.Login("alice", "pw-alice")
	path := func(id string) string { return v1 + "/admin/lock/" + url.PathEscape(id) }

	wantErr(t, s.Do("PUT", path(admin.ID), alice.Token, map[string]any{"locked": true}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", path(admin.ID), admin.Token, map[string]any{"locked": true}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", path("@ghost:test.local"), admin.Token, map[string]any{"locked": true}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("PUT", path(alice.ID), admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")

	if r := s.MustDo(http.StatusOK, "PUT", path(alice.ID), admin.Token, map[string]any{"locked": true}); r.JSON["locked"] != true {
		t.Fatalf("lock: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", path(alice.ID), admin.Token, nil); r.JSON["locked"] != true {
		t.Fatalf("get: %s", r.Body)
	}
	locked := func(r *testserver.Response) {
		t.Helper()
		wantErr(t, r, http.StatusUnauthorized, "M_USER_LOCKED")
		if r.JSON["soft_logout"] != true {
			t.Fatalf("no soft_logout: %s", r.Body)
		}
	}
	locked(s.Do("GET", v3+"/account/whoami", alice.Token, nil))
	locked(s.Do("GET", v3+"/sync?timeout=0", alice.Token, nil))
	locked(s.Do("GET", v3+"/capabilities", alice.Token, nil))
	// No new sessions while locked.
	locked(s.Do("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "pw-alice"}))
	// Logging out stays open.
	s.MustDo(http.StatusOK, "POST", v3+"/logout", second.Token, map[string]any{})

	// Unlocked, the kept session works again.
	s.MustDo(http.StatusOK, "PUT", path(alice.ID), admin.Token, map[string]any{"locked": false})
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", alice.Token, nil)
}

func TestTurnServer(t *testing.T) {
	// No TURN servers: an empty object, as Synapse.
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	if r := s.MustDo(http.StatusOK, "GET", v3+"/voip/turnServer", alice.Token, nil); len(r.JSON) != 0 {
		t.Fatalf("no turn: %s", r.Body)
	}
	wantErr(t, s.Do("GET", v3+"/voip/turnServer", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

	// Shared secret: coturn's time-limited credentials.
	s = testserver.Start(t, "allow_guest_access: true\nturn_uris: [\"turn:turn.example.org?transport=udp\"]\nturn_shared_secret: s3cret\nturn_user_lifetime: 2h\n")
	alice = s.Register("alice", "pw-alice")
	r := s.MustDo(http.StatusOK, "GET", v3+"/voip/turnServer", alice.Token, nil)
	user, pass := r.String("username"), r.String("password")
	expiry, id, _ := strings.Cut(user, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || id != alice.ID || exp < time.Now().Add(2*time.Hour-time.Minute).Unix() || exp > time.Now().Add(2*time.Hour+time.Minute).Unix() {
		t.Fatalf("username: %s", r.Body)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	if pass != base64.StdEncoding.EncodeToString(mac.Sum(nil)) || r.JSON["ttl"] != float64(7200) {
		t.Fatalf("credentials: %s", r.Body)
	}
	if uris, _ := r.JSON["uris"].([]any); len(uris) != 1 || uris[0] != "turn:turn.example.org?transport=udp" {
		t.Fatalf("uris: %s", r.Body)
	}
	guest := s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", map[string]any{}).String("access_token")
	s.MustDo(http.StatusOK, "GET", v3+"/voip/turnServer", guest, nil)

	// Fixed credentials, and guests refused when turn_allow_guests is off.
	s = testserver.Start(t, "allow_guest_access: true\nturn_uris: [\"turns:turn.example.org\"]\nturn_username: u\nturn_password: p\nturn_allow_guests: false\n")
	alice = s.Register("alice", "pw-alice")
	r = s.MustDo(http.StatusOK, "GET", v3+"/voip/turnServer", alice.Token, nil)
	if r.String("username") != "u" || r.String("password") != "p" || r.JSON["ttl"] != float64(3600) {
		t.Fatalf("fixed: %s", r.Body)
	}
	guest = s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", map[string]any{}).String("access_token")
	wantErr(t, s.Do("GET", v3+"/voip/turnServer", guest, nil), http.StatusForbidden, "M_FORBIDDEN")
}

func TestWellKnownSupport(t *testing.T) {
	s := testserver.Start(t, "")
	wantErr(t, s.Do("GET", "/.well-known/matrix/support", "", nil), http.StatusNotFound, "M_NOT_FOUND")

	s = testserver.Start(t, `admin_contact: "mailto:admin@example.org"
support_contacts:
  - matrix_id: "@security:example.org"
    role: m.role.security
support_page: https://example.org/help
`)
	r := s.MustDo(http.StatusOK, "GET", "/.well-known/matrix/support", "", nil)
	contacts, _ := r.JSON["contacts"].([]any)
	if len(contacts) != 2 || r.String("support_page") != "https://example.org/help" {
		t.Fatalf("support: %s", r.Body)
	}
	c0, c1 := contacts[0].(map[string]any), contacts[1].(map[string]any)
	if c0["email_address"] != "admin@example.org" || c0["role"] != "m.role.admin" || c0["matrix_id"] != nil ||
		c1["matrix_id"] != "@security:example.org" || c1["role"] != "m.role.security" || c1["email_address"] != nil {
		t.Fatalf("contacts: %s", r.Body)
	}
}

func TestAuthMetadataUnrecognized(t *testing.T) {
	s := testserver.Start(t, "")
	wantErr(t, s.Do("GET", v1+"/auth_metadata", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
}
