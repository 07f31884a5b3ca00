package adminapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const (
	usersAdminV1 = "/_synapse/admin/v1"
	usersAdminV2 = "/_synapse/admin/v2"
	usersClient  = "/_matrix/client/v3"
)

// usersRegisterAdmin registers a server admin through shared-secret
// registration, as an admin's tools do.
func usersRegisterAdmin(t *testing.T, s *testserver.Server, localpart string) testserver.User {
	t.Helper()
	nonce := s.MustDo(http.StatusOK, "GET", usersAdminV1+"/register", "", nil).String("nonce")
	m := hmac.New(sha1.New, []byte("test-shared-secret"))
	m.Write([]byte(strings.Join([]string{nonce, localpart, "pw", "admin"}, "\x00")))
	r := s.MustDo(http.StatusOK, "POST", usersAdminV1+"/register", "", map[string]any{
		"nonce": nonce, "username": localpart, "password": "pw", "admin": true, "mac": hex.EncodeToString(m.Sum(nil)),
	})
	return testserver.User{ID: r.String("user_id"), Token: r.String("access_token"), DeviceID: r.String("device_id"), Password: "pw"}
}

// usersWantErr checks an error answer's status and errcode.
func usersWantErr(t *testing.T, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Body, status, errcode)
	}
}

func usersPath(version, userID, rest string) string {
	return version + "/users/" + url.PathEscape(userID) + rest
}

// usersNames lists the names of a user list answer.
func usersNames(r *testserver.Response) []string {
	var names []string
	for _, u := range r.JSON["users"].([]any) {
		names = append(names, u.(map[string]any)["name"].(string))
	}
	return names
}

func usersSetup(t *testing.T) (*testserver.Server, testserver.User, testserver.User) {
	t.Helper()
	s := testserver.Start(t, "")
	return s, usersRegisterAdmin(t, s, "admin"), s.Register("alice", "alicepw")
}

// TestAdminUsersForbidden: every endpoint of the file is for server admins
// only.
func TestAdminUsersForbidden(t *testing.T) {
	t.Parallel()
	s, _, alice := usersSetup(t)
	bob := "@bob:test.local"
	for _, c := range []struct{ method, path string }{
		{"GET", usersAdminV2 + "/users"},
		{"GET", "/_synapse/admin/v3/users"},
		{"GET", usersPath(usersAdminV2, bob, "")},
		{"PUT", usersPath(usersAdminV2, bob, "")},
		{"POST", usersAdminV1 + "/deactivate/" + bob},
		{"POST", usersAdminV1 + "/reset_password/" + bob},
		{"GET", usersAdminV1 + "/whois/" + bob},
		{"GET", usersPath(usersAdminV1, bob, "/admin")},
		{"PUT", usersPath(usersAdminV1, alice.ID, "/admin")},
		{"GET", usersPath(usersAdminV1, bob, "/joined_rooms")},
		{"GET", usersPath(usersAdminV2, bob, "/devices")},
		{"POST", usersPath(usersAdminV2, bob, "/devices")},
		{"GET", usersPath(usersAdminV2, bob, "/devices/D")},
		{"PUT", usersPath(usersAdminV2, bob, "/devices/D")},
		{"DELETE", usersPath(usersAdminV2, bob, "/devices/D")},
		{"POST", usersPath(usersAdminV2, bob, "/delete_devices")},
		{"POST", usersPath(usersAdminV1, bob, "/login")},
		{"POST", usersPath(usersAdminV1, bob, "/shadow_ban")},
		{"DELETE", usersPath(usersAdminV1, bob, "/shadow_ban")},
		{"GET", usersPath(usersAdminV1, bob, "/override_ratelimit")},
		{"POST", usersPath(usersAdminV1, bob, "/override_ratelimit")},
		{"DELETE", usersPath(usersAdminV1, bob, "/override_ratelimit")},
		{"GET", usersAdminV1 + "/username_available?username=x"},
		{"GET", usersPath(usersAdminV1, bob, "/accountdata")},
		{"PUT", usersAdminV1 + "/suspend/" + bob},
	} {
		usersWantErr(t, s.Do(c.method, c.path, alice.Token, map[string]any{"admin": true}), http.StatusForbidden, "M_FORBIDDEN")
		usersWantErr(t, s.Do(c.method, c.path, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	}
}

func TestAdminUsersList(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	bob := s.Register("bob", "bobpw")
	s.MustDo(http.StatusOK, "PUT", usersClient+"/profile/"+bob.ID+"/displayname", bob.Token, map[string]any{"displayname": "bobby tables"})
	list := func(version, query string) *testserver.Response {
		t.Helper()
		return s.MustDo(http.StatusOK, "GET", "/_synapse/admin/"+version+"/users"+query, admin.Token, nil)
	}

	r := list("v2", "")
	if got := usersNames(r); strings.Join(got, ",") != "@admin:test.local,@alice:test.local,@bob:test.local" {
		t.Fatalf("users %v", got)
	}
	if r.JSON["total"] != float64(3) || r.JSON["next_token"] != nil {
		t.Fatalf("total/next_token: %s", r.Body)
	}
	first := r.JSON["users"].([]any)[2].(map[string]any)
	for _, k := range []string{"name", "is_guest", "admin", "user_type", "deactivated", "erased", "shadow_banned", "displayname", "avatar_url", "creation_ts", "locked"} {
		if _, ok := first[k]; !ok {
			t.Errorf("entry lacks %s: %v", k, first)
		}
	}
	if first["displayname"] != "bobby tables" || first["admin"] != false {
		t.Errorf("bob: %v", first)
	}
	// creation_ts is in milliseconds in the list.
	if ts := first["creation_ts"].(float64); ts < float64(time.Now().Add(-time.Hour).UnixMilli()) {
		t.Errorf("creation_ts %v is not in ms", ts)
	}

	// Pagination.
	r = list("v2", "?limit=2")
	if len(usersNames(r)) != 2 || r.String("next_token") != "2" || r.JSON["total"] != float64(3) {
		t.Fatalf("page 1: %s", r.Body)
	}
	r = list("v2", "?limit=2&from=2")
	if got := usersNames(r); len(got) != 1 || got[0] != bob.ID || r.JSON["next_token"] != nil {
		t.Fatalf("page 2: %s", r.Body)
	}

	// Filters.
	if got := usersNames(list("v2", "?name=bobby")); len(got) != 1 || got[0] != bob.ID {
		t.Errorf("name=bobby: %v", got)
	}
	if got := usersNames(list("v2", "?name=ALI")); len(got) != 1 || got[0] != alice.ID {
		t.Errorf("name=ALI: %v", got)
	}
	if got := usersNames(list("v2", "?user_id=ice")); len(got) != 1 || got[0] != alice.ID {
		t.Errorf("user_id=ice: %v", got)
	}
	if got := usersNames(list("v2", "?user_id=%25")); len(got) != 0 {
		t.Errorf("user_id=%%: %v (LIKE wildcards must be literal)", got)
	}
	if got := usersNames(list("v2", "?admins=true")); len(got) != 1 || got[0] != admin.ID {
		t.Errorf("admins=true: %v", got)
	}
	if got := usersNames(list("v2", "?admins=false")); len(got) != 2 {
		t.Errorf("admins=false: %v", got)
	}

	// Order.
	if got := usersNames(list("v2", "?dir=b")); got[0] != bob.ID || got[2] != admin.ID {
		t.Errorf("dir=b: %v", got)
	}
	if got := usersNames(list("v2", "?order_by=creation_ts&dir=b")); got[0] != bob.ID || got[2] != admin.ID {
		t.Errorf("creation_ts backwards: %v", got)
	}
	if got := usersNames(list("v2", "?order_by=admin&dir=b")); got[0] != admin.ID {
		t.Errorf("admin backwards: %v", got)
	}
	if got := usersNames(list("v2", "?order_by=displayname")); got[0] != admin.ID || got[1] != alice.ID || got[2] != bob.ID {
		t.Errorf("displayname: %v", got)
	}

	// User types.
	s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, bob.ID, ""), admin.Token, map[string]any{"user_type": "bot"})
	if got := usersNames(list("v2", "?not_user_type=bot")); len(got) != 2 || got[1] != alice.ID {
		t.Errorf("not_user_type=bot: %v", got)
	}
	if got := usersNames(list("v2", "?not_user_type=")); len(got) != 1 || got[0] != bob.ID {
		t.Errorf("not_user_type=: %v", got)
	}
	if got := usersNames(list("v2", "?order_by=user_type")); got[0] != bob.ID {
		t.Errorf("order_by=user_type (nulls last): %v", got)
	}

	// v2 hides deactivated users unless deactivated=true; v3 filters on it.
	s.MustDo(http.StatusOK, "POST", usersAdminV1+"/deactivate/"+bob.ID, admin.Token, nil)
	if got := usersNames(list("v2", "")); len(got) != 2 {
		t.Errorf("v2 default after deactivation: %v", got)
	}
	if got := usersNames(list("v2", "?deactivated=true")); len(got) != 3 {
		t.Errorf("v2 deactivated=true: %v", got)
	}
	if got := usersNames(list("v3", "")); len(got) != 3 {
		t.Errorf("v3 default: %v", got)
	}
	if got := usersNames(list("v3", "?deactivated=true")); len(got) != 1 || got[0] != bob.ID {
		t.Errorf("v3 deactivated=true: %v", got)
	}
	if got := usersNames(list("v3", "?deactivated=false")); len(got) != 2 {
		t.Errorf("v3 deactivated=false: %v", got)
	}

	// Locked users are left out unless locked=true.
	s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, alice.ID, ""), admin.Token, map[string]any{"locked": true})
	if got := usersNames(list("v2", "")); len(got) != 1 {
		t.Errorf("locked hidden: %v", got)
	}
	if got := usersNames(list("v2", "?locked=true")); len(got) != 2 {
		t.Errorf("locked=true: %v", got)
	}

	for _, q := range []string{"?from=-1", "?limit=-5", "?limit=abc", "?order_by=password", "?dir=x", "?guests=maybe", "?deactivated=1"} {
		usersWantErr(t, s.Do("GET", usersAdminV2+"/users"+q, admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
}

func TestAdminUsersGetPut(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	carol := "@carol:test.local"

	usersWantErr(t, s.Do("GET", usersPath(usersAdminV2, carol, ""), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV2, "@x:elsewhere.org", ""), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV2, "carol", ""), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// Creation.
	r := s.MustDo(http.StatusCreated, "PUT", usersPath(usersAdminV2, carol, ""), admin.Token, map[string]any{
		"password": "carolpw", "displayname": "Carol", "avatar_url": "mxc://test.local/abc", "user_type": "bot",
	})
	if r.String("name") != carol || r.String("displayname") != "Carol" || r.String("avatar_url") != "mxc://test.local/abc" ||
		r.String("user_type") != "bot" || r.JSON["admin"] != false || r.JSON["deactivated"] != false {
		t.Fatalf("created: %s", r.Body)
	}
	for _, k := range []string{"threepids", "external_ids", "creation_ts", "appservice_id", "last_seen_ts", "erased", "shadow_banned", "locked", "suspended", "is_guest"} {
		if _, ok := r.JSON[k]; !ok {
			t.Errorf("details lack %s", k)
		}
	}
	// creation_ts is in seconds in the details, as in Synapse.
	if ts := r.JSON["creation_ts"].(float64); ts > float64(time.Now().Add(time.Hour).Unix()) {
		t.Errorf("creation_ts %v is not in seconds", ts)
	}
	c := s.Login("carol", "carolpw")
	p := s.MustDo(http.StatusOK, "GET", usersClient+"/profile/"+carol, "", nil)
	if p.String("displayname") != "Carol" || p.String("avatar_url") != "mxc://test.local/abc" {
		t.Fatalf("profile: %s", p.Body)
	}

	// Modification: profile, kept sessions, admin, user type.
	roomID := s.CreateRoom(c, nil)
	r = s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, carol, ""), admin.Token, map[string]any{
		"displayname": "Caroline", "avatar_url": "", "password": "newpw", "logout_devices": false, "admin": true, "user_type": nil,
	})
	if r.String("displayname") != "Caroline" || r.JSON["avatar_url"] != nil || r.JSON["admin"] != true || r.JSON["user_type"] != nil {
		t.Fatalf("modified: %s", r.Body)
	}
	member := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/state/m.room.member/"+carol), c.Token, nil)
	if member.String("displayname") != "Caroline" {
		t.Errorf("member event not updated: %s", member.Body)
	}
	s.MustDo(http.StatusOK, "GET", usersClient+"/account/whoami", c.Token, nil)
	s.Login("carol", "newpw")
	// A new password logs every device out by default.
	s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, carol, ""), admin.Token, map[string]any{"password": "newer"})
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", c.Token, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Lock, deactivation and reactivation.
	a2 := s.Login("alice", "alicepw")
	s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, alice.ID, ""), admin.Token, map[string]any{"locked": true})
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", a2.Token, nil), http.StatusUnauthorized, "M_USER_LOCKED")
	r = s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, alice.ID, ""), admin.Token, map[string]any{"locked": false, "deactivated": true})
	if r.JSON["deactivated"] != true || r.JSON["locked"] != false {
		t.Fatalf("deactivated: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", a2.Token, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	r = s.MustDo(http.StatusOK, "PUT", usersPath(usersAdminV2, alice.ID, ""), admin.Token, map[string]any{"deactivated": false, "password": "back"})
	if r.JSON["deactivated"] != false {
		t.Fatalf("reactivated: %s", r.Body)
	}
	s.Login("alice", "back")

	// Malformed input.
	put := func(id string, body any) *testserver.Response {
		return s.Do("PUT", usersPath(usersAdminV2, id, ""), admin.Token, body)
	}
	usersWantErr(t, put(carol, map[string]any{"admin": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, put(carol, map[string]any{"user_type": "alien"}), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, put(carol, map[string]any{"deactivated": true, "locked": true}), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, put(carol, map[string]any{"logout_devices": "no"}), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, put(carol, map[string]any{"password": 5}), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, put(carol, map[string]any{"displayname": 5}), http.StatusBadRequest, "M_INVALID_PARAM")
	usersWantErr(t, put(carol, "not json"), http.StatusBadRequest, "M_NOT_JSON")
	usersWantErr(t, put("@Bad!:test.local", map[string]any{}), http.StatusBadRequest, "M_INVALID_USERNAME")
	usersWantErr(t, put("@x:elsewhere.org", map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, put(admin.ID, map[string]any{"admin": false}), http.StatusBadRequest, "M_UNKNOWN")
	if _, found := s.Do("GET", usersPath(usersAdminV2, "@Bad!:test.local", ""), admin.Token, nil).JSON["name"]; found {
		t.Error("an invalid user was created")
	}
}

func TestAdminUsersDeactivate(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	roomID := s.CreateRoom(admin, map[string]any{"preset": "public_chat"})
	s.Join(alice, roomID)
	s.MustDo(http.StatusOK, "PUT", usersClient+"/profile/"+alice.ID+"/displayname", alice.Token, map[string]any{"displayname": "Alice A"})
	s.SendText(alice, roomID, "before deactivation")
	s.MustDo(http.StatusOK, "POST", usersClient+"/pushers/set", alice.Token, map[string]any{
		"kind": "http", "app_id": "org.example", "pushkey": "k", "app_display_name": "x", "device_display_name": "y",
		"lang": "en", "data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"}})

	usersWantErr(t, s.Do("POST", usersAdminV1+"/deactivate/@nobody:test.local", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("POST", usersAdminV1+"/deactivate/@x:elsewhere.org", admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, s.Do("POST", usersAdminV1+"/deactivate/"+alice.ID, admin.Token, map[string]any{"erase": "yes"}), http.StatusBadRequest, "M_BAD_JSON")

	r := s.MustDo(http.StatusOK, "POST", usersAdminV1+"/deactivate/"+alice.ID, admin.Token, map[string]any{"erase": true})
	if r.String("id_server_unbind_result") != "no-support" {
		t.Errorf("answer: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", alice.Token, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	d := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV2, alice.ID, ""), admin.Token, nil)
	if d.JSON["deactivated"] != true || d.JSON["erased"] != true || d.JSON["displayname"] != nil {
		t.Errorf("details: %s", d.Body)
	}
	jr := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV1, alice.ID, "/joined_rooms"), admin.Token, nil)
	if jr.JSON["total"] != float64(0) {
		t.Errorf("still in rooms: %s", jr.Body)
	}
	m := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/state/m.room.member/"+alice.ID), admin.Token, nil)
	if m.String("membership") != "leave" {
		t.Errorf("membership: %s", m.Body)
	}
	// What should go is gone from the database; what she said stays, for
	// the others in the room.
	db := roomDB(t, s)
	for _, q := range []string{
		`SELECT COUNT(*) FROM devices WHERE user_id = $1`,
		`SELECT COUNT(*) FROM access_tokens WHERE user_id = $1`,
		`SELECT COUNT(*) FROM pushers WHERE user_id = $1`,
	} {
		if n := roomCount(t, db, q, alice.ID); n != 0 {
			t.Errorf("%s: %d rows left", q, n)
		}
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM events WHERE sender = $1 AND type = 'm.room.message'`, alice.ID); n != 1 {
		t.Errorf("alice's messages: %d, want 1", n)
	}
	msgs := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/messages?dir=b&limit=20"), admin.Token, nil)
	if !strings.Contains(string(msgs.Body), "before deactivation") {
		t.Errorf("alice's message is gone from the room: %s", msgs.Body)
	}
	// Without erase, no erasure; an empty body is accepted.
	bob := s.Register("bob", "bobpw")
	s.MustDo(http.StatusOK, "POST", usersAdminV1+"/deactivate/"+bob.ID, admin.Token, nil)
	if d := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV2, bob.ID, ""), admin.Token, nil); d.JSON["erased"] != false || d.JSON["deactivated"] != true {
		t.Errorf("bob: %s", d.Body)
	}
}

func TestAdminUsersResetPassword(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	path := usersAdminV1 + "/reset_password/" + alice.ID
	usersWantErr(t, s.Do("POST", path, admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	usersWantErr(t, s.Do("POST", path, admin.Token, map[string]any{"new_password": 1}), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, s.Do("POST", usersAdminV1+"/reset_password/@nobody:test.local", admin.Token, map[string]any{"new_password": "x"}), http.StatusNotFound, "M_NOT_FOUND")

	s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{"new_password": "one", "logout_devices": false})
	s.MustDo(http.StatusOK, "GET", usersClient+"/account/whoami", alice.Token, nil)
	a2 := s.Login("alice", "one")
	s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{"new_password": "two"})
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", a2.Token, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	s.Login("alice", "two")
}

func TestAdminUsersWhois(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	got := s.MustDo(http.StatusOK, "GET", usersAdminV1+"/whois/"+alice.ID, admin.Token, nil)
	want := s.MustDo(http.StatusOK, "GET", usersClient+"/admin/whois/"+alice.ID, admin.Token, nil)
	if string(got.Body) != string(want.Body) {
		t.Errorf("admin whois %s, client whois %s", got.Body, want.Body)
	}
	if _, ok := got.JSON["devices"].(map[string]any)[alice.DeviceID]; !ok || got.String("user_id") != alice.ID {
		t.Errorf("whois: %s", got.Body)
	}
	// As in Synapse, a user the server does not know has no sessions.
	if r := s.MustDo(http.StatusOK, "GET", usersAdminV1+"/whois/@nobody:test.local", admin.Token, nil); len(r.JSON["devices"].(map[string]any)) != 0 {
		t.Errorf("unknown user: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", usersAdminV1+"/whois/@x:elsewhere.org", admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, s.Do("GET", usersAdminV1+"/whois/nobody", admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestAdminUsersServerAdmin(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	path := usersPath(usersAdminV1, alice.ID, "/admin")
	if r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil); r.JSON["admin"] != false {
		t.Fatalf("admin: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", usersAdminV2+"/users", alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "PUT", path, admin.Token, map[string]any{"admin": true})
	if r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil); r.JSON["admin"] != true {
		t.Fatalf("admin: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "GET", usersAdminV2+"/users", alice.Token, nil)
	s.MustDo(http.StatusOK, "PUT", path, alice.Token, map[string]any{"admin": true})
	usersWantErr(t, s.Do("PUT", path, alice.Token, map[string]any{"admin": false}), http.StatusBadRequest, "M_UNKNOWN")
	s.MustDo(http.StatusOK, "PUT", path, admin.Token, map[string]any{"admin": false})
	usersWantErr(t, s.Do("GET", usersAdminV2+"/users", alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	usersWantErr(t, s.Do("PUT", path, admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	usersWantErr(t, s.Do("PUT", path, admin.Token, map[string]any{"admin": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV1, "@nobody:test.local", "/admin"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("PUT", usersPath(usersAdminV1, "@nobody:test.local", "/admin"), admin.Token, map[string]any{"admin": true}), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV1, "@x:elsewhere.org", "/admin"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminUsersJoinedRooms(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	roomID := s.CreateRoom(alice, nil)
	r := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV1, alice.ID, "/joined_rooms"), admin.Token, nil)
	if rooms := r.JSON["joined_rooms"].([]any); len(rooms) != 1 || rooms[0] != roomID || r.JSON["total"] != float64(1) {
		t.Fatalf("joined_rooms: %s", r.Body)
	}
	// As in Synapse, a user the server does not know is in no room.
	r = s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV1, "@nobody:test.local", "/joined_rooms"), admin.Token, nil)
	if r.JSON["total"] != float64(0) || len(r.JSON["joined_rooms"].([]any)) != 0 {
		t.Fatalf("unknown user: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV1, "nobody", "/joined_rooms"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestAdminUsersDevices(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	a2 := s.Login("alice", "alicepw")
	devices := usersPath(usersAdminV2, alice.ID, "/devices")

	r := s.MustDo(http.StatusOK, "GET", devices, admin.Token, nil)
	if r.JSON["total"] != float64(2) {
		t.Fatalf("devices: %s", r.Body)
	}
	for _, d := range r.JSON["devices"].([]any) {
		if d.(map[string]any)["user_id"] != alice.ID {
			t.Errorf("device: %v", d)
		}
	}
	one := devices + "/" + alice.DeviceID
	if r := s.MustDo(http.StatusOK, "GET", one, admin.Token, nil); r.String("device_id") != alice.DeviceID || r.String("user_id") != alice.ID {
		t.Errorf("device: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", one, admin.Token, map[string]any{"display_name": "renamed"})
	if r := s.MustDo(http.StatusOK, "GET", usersClient+"/devices/"+alice.DeviceID, alice.Token, nil); r.String("display_name") != "renamed" {
		t.Errorf("client sees %s", r.Body)
	}
	usersWantErr(t, s.Do("PUT", one, admin.Token, map[string]any{"display_name": 5}), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, s.Do("GET", devices+"/NOSUCH", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("PUT", devices+"/NOSUCH", admin.Token, map[string]any{"display_name": "x"}), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV2, "@nobody:test.local", "/devices"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV2, "@x:elsewhere.org", "/devices"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")

	// Creation, then deletion one by one and in bulk.
	s.MustDo(http.StatusOK, "POST", devices, admin.Token, map[string]any{"device_id": "MADEBYADMIN"})
	s.MustDo(http.StatusOK, "GET", devices+"/MADEBYADMIN", admin.Token, nil)
	usersWantErr(t, s.Do("POST", devices, admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	s.MustDo(http.StatusOK, "DELETE", one, admin.Token, nil)
	s.MustDo(http.StatusOK, "DELETE", devices+"/NOSUCH", admin.Token, nil)
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", alice.Token, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	s.MustDo(http.StatusOK, "GET", usersClient+"/account/whoami", a2.Token, nil)
	del := usersPath(usersAdminV2, alice.ID, "/delete_devices")
	usersWantErr(t, s.Do("POST", del, admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	usersWantErr(t, s.Do("POST", del, admin.Token, map[string]any{"devices": "x"}), http.StatusBadRequest, "M_BAD_JSON")
	s.MustDo(http.StatusOK, "POST", del, admin.Token, map[string]any{"devices": []string{a2.DeviceID, "MADEBYADMIN"}})
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", a2.Token, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if r := s.MustDo(http.StatusOK, "GET", devices, admin.Token, nil); r.JSON["total"] != float64(0) {
		t.Errorf("devices left: %s", r.Body)
	}
}

func TestAdminUsersLoginAs(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	path := usersPath(usersAdminV1, alice.ID, "/login")
	tok := s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{}).String("access_token")
	if who := s.MustDo(http.StatusOK, "GET", usersClient+"/account/whoami", tok, nil); who.String("user_id") != alice.ID {
		t.Fatalf("whoami: %s", who.Body)
	}
	// An empty body works too; a token valid until a past time does not.
	s.MustDo(http.StatusOK, "POST", path, admin.Token, nil)
	past := s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{"valid_until_ms": time.Now().Add(-time.Minute).UnixMilli()}).String("access_token")
	usersWantErr(t, s.Do("GET", usersClient+"/account/whoami", past, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	future := s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{"valid_until_ms": time.Now().Add(time.Hour).UnixMilli()}).String("access_token")
	s.MustDo(http.StatusOK, "GET", usersClient+"/account/whoami", future, nil)

	usersWantErr(t, s.Do("POST", path, admin.Token, map[string]any{"valid_until_ms": "soon"}), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, s.Do("POST", usersPath(usersAdminV1, admin.ID, "/login"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	usersWantErr(t, s.Do("POST", usersPath(usersAdminV1, "@nobody:test.local", "/login"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("POST", usersPath(usersAdminV1, "@x:elsewhere.org", "/login"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminUsersShadowBan(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	bob := s.Register("bob", "bobpw")
	carol := s.Register("carol", "carolpw")
	roomID := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, roomID)
	ban := usersPath(usersAdminV1, bob.ID, "/shadow_ban")

	s.MustDo(http.StatusOK, "POST", ban, admin.Token, nil)
	if d := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV2, bob.ID, ""), admin.Token, nil); d.JSON["shadow_banned"] != true {
		t.Fatalf("details: %s", d.Body)
	}
	hidden := s.SendText(bob, roomID, "nobody sees this")
	if !strings.HasPrefix(hidden, "$") {
		t.Fatalf("event_id %q", hidden)
	}
	state := s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(roomID, "/state/m.room.topic"), bob.Token, map[string]any{"topic": "hidden"}).String("event_id")
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(roomID, "/invite"), bob.Token, map[string]any{"user_id": carol.ID})
	// Malformed requests are still refused.
	usersWantErr(t, s.Do("PUT", testserver.RoomPath(roomID, "/send/m.room.message/"+testserver.NextTxn()), bob.Token, "[]"), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, s.Do("POST", testserver.RoomPath(roomID, "/invite"), bob.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")

	usersWantErr(t, s.Do("GET", testserver.RoomPath(roomID, "/event/"+url.PathEscape(hidden)), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("GET", testserver.RoomPath(roomID, "/event/"+url.PathEscape(state)), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	if r := s.Do("GET", testserver.RoomPath(roomID, "/state/m.room.topic"), alice.Token, nil); r.String("topic") == "hidden" {
		t.Error("the topic changed")
	}
	if r := s.Do("GET", testserver.RoomPath(roomID, "/state/m.room.member/"+carol.ID), alice.Token, nil); r.Status == http.StatusOK {
		t.Errorf("carol was invited: %s", r.Body)
	}
	// Their joins and leaves go through.
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(roomID, "/leave"), bob.Token, map[string]any{})
	s.Join(bob, roomID)

	s.MustDo(http.StatusOK, "DELETE", ban, admin.Token, nil)
	seen := s.SendText(bob, roomID, "visible")
	s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/event/"+url.PathEscape(seen)), alice.Token, nil)
	if d := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV2, bob.ID, ""), admin.Token, nil); d.JSON["shadow_banned"] != false {
		t.Fatalf("details: %s", d.Body)
	}

	usersWantErr(t, s.Do("POST", usersPath(usersAdminV1, "@nobody:test.local", "/shadow_ban"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("DELETE", usersPath(usersAdminV1, "@x:elsewhere.org", "/shadow_ban"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminUsersRateLimitOverride(t *testing.T) {
	t.Parallel()
	yaml := strings.Replace(testserver.BaseConfig, "rc_message: {per_second: 0, burst_count: 0}", "rc_message: {per_second: 0.001, burst_count: 2}", 1)
	s := testserver.StartYAML(t, yaml)
	admin := usersRegisterAdmin(t, s, "admin")
	alice := s.Register("alice", "alicepw")
	roomID := s.CreateRoom(alice, nil)
	send := func() *testserver.Response {
		return s.Do("PUT", testserver.RoomPath(roomID, "/send/m.room.message/"+testserver.NextTxn()), alice.Token, map[string]any{"msgtype": "m.text", "body": "hi"})
	}
	path := usersPath(usersAdminV1, alice.ID, "/override_ratelimit")

	if r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil); len(r.JSON) != 0 {
		t.Fatalf("no override: %s", r.Body)
	}
	for range 2 {
		if r := send(); r.Status != http.StatusOK {
			t.Fatalf("send: %s", r.Body)
		}
	}
	usersWantErr(t, send(), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")

	// 0/0 lifts the limit.
	r := s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{"messages_per_second": 0, "burst_count": 0})
	if r.JSON["messages_per_second"] != float64(0) || r.JSON["burst_count"] != float64(0) {
		t.Fatalf("set: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil); r.JSON["messages_per_second"] != float64(0) || r.JSON["burst_count"] != float64(0) {
		t.Fatalf("get: %s", r.Body)
	}
	for range 5 {
		if r := send(); r.Status != http.StatusOK {
			t.Fatalf("send with the limit lifted: %s", r.Body)
		}
	}
	// Another override replaces rc_message.
	s.MustDo(http.StatusOK, "POST", path, admin.Token, map[string]any{"messages_per_second": 1, "burst_count": 4})
	ok := 0
	for range 6 {
		if send().Status == http.StatusOK {
			ok++
		}
	}
	if ok < 4 || ok > 5 {
		t.Errorf("%d of 6 sends passed an override of burst 4", ok)
	}
	// Without the override, rc_message is back.
	s.MustDo(http.StatusOK, "DELETE", path, admin.Token, nil)
	if r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil); len(r.JSON) != 0 {
		t.Fatalf("deleted: %s", r.Body)
	}
	usersWantErr(t, send(), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")

	usersWantErr(t, s.Do("POST", path, admin.Token, map[string]any{"messages_per_second": -1}), http.StatusBadRequest, "M_INVALID_PARAM")
	usersWantErr(t, s.Do("POST", path, admin.Token, map[string]any{"burst_count": "many"}), http.StatusBadRequest, "M_INVALID_PARAM")
	usersWantErr(t, s.Do("POST", path, admin.Token, map[string]any{"burst_count": 1.5}), http.StatusBadRequest, "M_INVALID_PARAM")
	nobody := usersPath(usersAdminV1, "@nobody:test.local", "/override_ratelimit")
	for _, m := range []string{"GET", "POST", "DELETE"} {
		usersWantErr(t, s.Do(m, nobody, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
		usersWantErr(t, s.Do(m, usersPath(usersAdminV1, "@x:elsewhere.org", "/override_ratelimit"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	}
}

func TestAdminUsersUsernameAvailable(t *testing.T) {
	t.Parallel()
	yaml := strings.Replace(testserver.BaseConfig, "enable_registration: true", "enable_registration: false", 1)
	s := testserver.StartYAML(t, yaml)
	admin := usersRegisterAdmin(t, s, "admin")
	avail := usersAdminV1 + "/username_available?username="
	if r := s.MustDo(http.StatusOK, "GET", avail+"newname", admin.Token, nil); r.JSON["available"] != true {
		t.Fatalf("available: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", avail+"admin", admin.Token, nil), http.StatusBadRequest, "M_USER_IN_USE")
	usersWantErr(t, s.Do("GET", avail+"bad%21name", admin.Token, nil), http.StatusBadRequest, "M_INVALID_USERNAME")
	usersWantErr(t, s.Do("GET", usersAdminV1+"/username_available", admin.Token, nil), http.StatusBadRequest, "M_MISSING_PARAM")
}

func TestAdminUsersAccountData(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	roomID := s.CreateRoom(alice, nil)
	s.MustDo(http.StatusOK, "PUT", usersClient+"/user/"+alice.ID+"/account_data/org.example.global", alice.Token, map[string]any{"a": 1})
	s.MustDo(http.StatusOK, "PUT", usersClient+"/user/"+alice.ID+"/rooms/"+url.PathEscape(roomID)+"/account_data/org.example.room", alice.Token, map[string]any{"b": 2})

	r := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV1, alice.ID, "/accountdata"), admin.Token, nil)
	var got struct {
		AccountData struct {
			Global map[string]json.RawMessage            `json:"global"`
			Rooms  map[string]map[string]json.RawMessage `json:"rooms"`
		} `json:"account_data"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.AccountData.Global["org.example.global"]) != `{"a":1}` || string(got.AccountData.Rooms[roomID]["org.example.room"]) != `{"b":2}` {
		t.Fatalf("account data: %s", r.Body)
	}
	// Someone without any has two empty objects.
	bob := s.Register("bob", "bobpw")
	if r := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV1, bob.ID, "/accountdata"), admin.Token, nil); !strings.Contains(string(r.Body), `"rooms":{}`) {
		t.Errorf("bob: %s", r.Body)
	}
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV1, "@nobody:test.local", "/accountdata"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("GET", usersPath(usersAdminV1, "@x:elsewhere.org", "/accountdata"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminUsersSuspend(t *testing.T) {
	t.Parallel()
	s, admin, alice := usersSetup(t)
	roomID := s.CreateRoom(alice, nil)
	path := usersAdminV1 + "/suspend/" + alice.ID
	r := s.MustDo(http.StatusOK, "PUT", path, admin.Token, map[string]any{"suspend": true})
	if r.JSON["user_"+alice.ID+"_suspended"] != true {
		t.Fatalf("answer: %s", r.Body)
	}
	usersWantErr(t, s.Do("PUT", testserver.RoomPath(roomID, "/send/m.room.message/"+testserver.NextTxn()), alice.Token, map[string]any{"body": "x"}),
		http.StatusForbidden, "M_USER_SUSPENDED")
	if d := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV2, alice.ID, ""), admin.Token, nil); d.JSON["suspended"] != true {
		t.Errorf("details: %s", d.Body)
	}
	s.MustDo(http.StatusOK, "PUT", path, admin.Token, map[string]any{"suspend": false})
	s.SendText(alice, roomID, "back")

	usersWantErr(t, s.Do("PUT", path, admin.Token, map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, s.Do("PUT", path, admin.Token, map[string]any{"suspend": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	usersWantErr(t, s.Do("PUT", usersAdminV1+"/suspend/@nobody:test.local", admin.Token, map[string]any{"suspend": true}), http.StatusNotFound, "M_NOT_FOUND")
	usersWantErr(t, s.Do("PUT", usersAdminV1+"/suspend/@x:elsewhere.org", admin.Token, map[string]any{"suspend": true}), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminUsersListGuests(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "allow_guest_access: true\n")
	admin := usersRegisterAdmin(t, s, "admin")
	guest := s.MustDo(http.StatusOK, "POST", usersClient+"/register?kind=guest", "", map[string]any{}).String("user_id")
	all := usersNames(s.MustDo(http.StatusOK, "GET", usersAdminV2+"/users", admin.Token, nil))
	if len(all) != 2 || !strings.Contains(strings.Join(all, ","), guest) {
		t.Fatalf("guests included by default: %v", all)
	}
	if got := usersNames(s.MustDo(http.StatusOK, "GET", usersAdminV2+"/users?guests=false", admin.Token, nil)); len(got) != 1 || got[0] != admin.ID {
		t.Fatalf("guests=false: %v", got)
	}
	if d := s.MustDo(http.StatusOK, "GET", usersPath(usersAdminV2, guest, ""), admin.Token, nil); d.JSON["is_guest"] != true {
		t.Fatalf("guest details: %s", d.Body)
	}
}
