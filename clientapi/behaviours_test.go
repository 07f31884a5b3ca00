package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// The same transaction ID sent to another room (or as another event type)
// is another request: the spec scopes transaction IDs to the device and the
// request path. A retry to the same path still answers the first event.
func TestTxnIDScopedToPath(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	room1, room2 := s.CreateRoom(alice, nil), s.CreateRoom(alice, nil)
	send := func(roomID, eventType string) string {
		t.Helper()
		return s.MustDo(http.StatusOK, "PUT", rmRoom(roomID)+"/send/"+eventType+"/sametxn", alice.Token,
			map[string]any{"msgtype": "m.text", "body": "hi"}).String("event_id")
	}
	first := send(room1, "m.room.message")
	if again := send(room1, "m.room.message"); again != first {
		t.Fatalf("retry answered %s, want %s", again, first)
	}
	other := send(room2, "m.room.message")
	if other == first || other == "" {
		t.Fatalf("same txnId in another room answered %q (first %s)", other, first)
	}
	ev := s.MustDo(http.StatusOK, "GET", rmRoom(room2)+"/event/"+url.PathEscape(other), alice.Token, nil)
	if ev.String("room_id") != room2 {
		t.Fatalf("event in room2: %s", ev.Body)
	}
	if typed := send(room1, "m.custom"); typed == first {
		t.Fatalf("same txnId as another event type answered the first event")
	}
}

// GET /event shows the sending device its transaction ID, as /sync does,
// and no one else.
func TestGetEventTransactionID(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	phone := s.Login("alice", "pw")
	roomID := s.CreateRoom(alice, nil)
	id := s.MustDo(http.StatusOK, "PUT", rmRoom(roomID)+"/send/m.room.message/mytxn", alice.Token,
		map[string]any{"msgtype": "m.text", "body": "hi"}).String("event_id")
	get := func(u testserver.User) map[string]any {
		t.Helper()
		r := s.MustDo(http.StatusOK, "GET", rmRoom(roomID)+"/event/"+url.PathEscape(id), u.Token, nil)
		unsigned, _ := r.JSON["unsigned"].(map[string]any)
		return unsigned
	}
	if got := get(alice)["transaction_id"]; got != "mytxn" {
		t.Fatalf("sender's device: transaction_id %v, want mytxn", got)
	}
	if got, ok := get(phone)["transaction_id"]; ok {
		t.Fatalf("another device sees transaction_id %v", got)
	}
}

// A joined user changes their room-specific display name by putting their
// own member event; the auth rules still refuse changing someone else's.
func TestMemberStateThroughStateEndpoint(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	roomID := s.CreatePublicRoom(alice)
	s.Join(bob, roomID)
	r := s.MustDo(http.StatusOK, "PUT", rmRoom(roomID)+"/state/m.room.member/"+url.PathEscape(bob.ID), bob.Token,
		map[string]any{"membership": "join", "displayname": "Bob in here"})
	if r.String("event_id") == "" {
		t.Fatalf("no event_id: %s", r.Body)
	}
	if c := rmStateContent(t, s, alice, roomID, "m.room.member", bob.ID); c["displayname"] != "Bob in here" || c["membership"] != "join" {
		t.Fatalf("member content: %v", c)
	}
	wantErr(t, s.Do("PUT", rmRoom(roomID)+"/state/m.room.member/"+url.PathEscape(alice.ID), bob.Token,
		map[string]any{"membership": "join", "displayname": "Not Alice"}), http.StatusForbidden, "M_FORBIDDEN")
	// An invite through the state endpoint is an invite.
	carol := s.Register("carol", "pw")
	rmPutState(t, s, alice, roomID, "m.room.member", carol.ID, map[string]any{"membership": "invite"})
	if c := rmStateContent(t, s, alice, roomID, "m.room.member", carol.ID); c["membership"] != "invite" {
		t.Fatalf("invite content: %v", c)
	}
}

// Extra keys of a /join body go into the member event's content.
func TestJoinKeepsExtraContent(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	roomID := s.CreatePublicRoom(alice)
	s.MustDo(http.StatusOK, "POST", rmRoom(roomID)+"/join", bob.Token, map[string]any{"foo": "bar", "reason": "hello"})
	c := rmStateContent(t, s, alice, roomID, "m.room.member", bob.ID)
	if c["foo"] != "bar" || c["membership"] != "join" || c["reason"] != "hello" {
		t.Fatalf("member content: %v", c)
	}
	carol := s.Register("carol", "pw")
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(roomID), carol.Token, map[string]any{"foo": "baz", "membership": "leave"})
	if c := rmStateContent(t, s, alice, roomID, "m.room.member", carol.ID); c["foo"] != "baz" || c["membership"] != "join" {
		t.Fatalf("member content: %v", c)
	}
}

// /members?at= answers the members at that point of the room.
func TestMembersAt(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob, carol := s.Register("alice", "pw"), s.Register("bob", "pw"), s.Register("carol", "pw")
	roomID := s.CreatePublicRoom(alice)
	s.Join(bob, roomID)
	at := s.MustDo(http.StatusOK, "GET", v3+"/sync?timeout=0", alice.Token, nil).String("next_batch")
	s.Join(carol, roomID)
	members := func(token string) map[string]string {
		t.Helper()
		r := s.MustDo(http.StatusOK, "GET", rmRoom(roomID)+"/members?at="+url.QueryEscape(token), alice.Token, nil)
		var body struct {
			Chunk []rmEvent `json:"chunk"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range body.Chunk {
			out[*e.StateKey], _ = e.Content["membership"].(string)
		}
		return out
	}
	got := members(at)
	if len(got) != 2 || got[alice.ID] != "join" || got[bob.ID] != "join" {
		t.Fatalf("members at %s: %v", at, got)
	}
	page := rmMessages(t, s, alice, roomID, url.Values{"dir": {"b"}, "limit": {"1"}})
	if got := members(page.Start); len(got) != 3 || got[carol.ID] != "join" {
		t.Fatalf("members at %s: %v", page.Start, got)
	}
}

// /joined_members answers null for an unset display name or avatar, as
// Synapse does.
func TestJoinedMembersNullProfile(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	s.MustDo(http.StatusOK, "PUT", v3+"/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.Token, map[string]any{"displayname": ""})
	roomID := s.CreateRoom(alice, nil)
	r := s.MustDo(http.StatusOK, "GET", rmRoom(roomID)+"/joined_members", alice.Token, nil)
	var body struct {
		Joined map[string]map[string]json.RawMessage `json:"joined"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	m, ok := body.Joined[alice.ID]
	if !ok || string(m["avatar_url"]) != "null" || string(m["display_name"]) != "null" {
		t.Fatalf("joined_members: %s", r.Body)
	}
}

// Setting a state event to the content it has answers the current event.
func TestIdenticalStateDeduplicated(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	roomID := s.CreateRoom(alice, nil)
	first := rmPutState(t, s, alice, roomID, "m.room.topic", "", map[string]any{"topic": "one"})
	if again := rmPutState(t, s, alice, roomID, "m.room.topic", "", map[string]any{"topic": "one"}); again != first {
		t.Fatalf("identical state made %s, want %s", again, first)
	}
	if changed := rmPutState(t, s, alice, roomID, "m.room.topic", "", map[string]any{"topic": "two"}); changed == first {
		t.Fatalf("changed state answered the old event")
	}
}

// A password change that logs out the other devices deletes the pushers
// their sessions set, and keeps the requesting device's.
func TestPasswordChangeDeletesOtherPushers(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "old pw")
	phone := s.Login("alice", "old pw")
	setPusher := func(u testserver.User, key string) {
		t.Helper()
		s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", u.Token, map[string]any{
			"pushkey": key, "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
			"device_display_name": "Device", "lang": "en", "data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"},
		})
	}
	setPusher(alice, "mine")
	setPusher(phone, "phone")
	const path = v3 + "/account/password"
	first := s.MustDo(http.StatusUnauthorized, "POST", path, alice.Token, map[string]any{"new_password": "new pw"})
	s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{
		"new_password": "new pw", "auth": passwordAuth(first.String("session"), "alice", "old pw"),
	})
	r := s.MustDo(http.StatusOK, "GET", v3+"/pushers", alice.Token, nil)
	var body struct {
		Pushers []struct {
			PushKey string `json:"pushkey"`
		} `json:"pushers"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Pushers) != 1 || body.Pushers[0].PushKey != "mine" {
		t.Fatalf("pushers after password change: %s", r.Body)
	}
}

// timestamp_to_event backwards from before the room's first event finds
// nothing.
func TestTimestampToEventBeforeRoom(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	roomID := s.CreateRoom(alice, nil)
	create := s.MustDo(http.StatusOK, "GET", rmRoom(roomID)+"/state/m.room.create/?format=event", alice.Token, nil)
	ts, _ := create.JSON["origin_server_ts"].(float64)
	if ts == 0 {
		t.Fatalf("create event: %s", create.Body)
	}
	before := strconv.FormatInt(int64(ts)-1, 10)
	wantErr(t, s.Do("GET", relTimestampPath(roomID, "dir=b&ts="+before), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "GET", relTimestampPath(roomID, "dir=f&ts="+before), alice.Token, nil)
}

// Login tokens: off by default; when on, /login/get_token issues (after
// the user's password) a token that logs a new device in once, until it
// expires.
func TestLoginToken(t *testing.T) {
	tokenLogin := func(token string) map[string]any {
		return map[string]any{"type": "m.login.token", "token": token}
	}
	capability := func(s *testserver.Server, u testserver.User) any {
		t.Helper()
		r := s.MustDo(http.StatusOK, "GET", v3+"/capabilities", u.Token, nil)
		caps, _ := r.JSON["capabilities"].(map[string]any)
		c, _ := caps["m.get_login_token"].(map[string]any)
		return c["enabled"]
	}
	tokenFlow := func(s *testserver.Server) map[string]any {
		t.Helper()
		r := s.MustDo(http.StatusOK, "GET", v3+"/login", "", nil)
		flows, _ := r.JSON["flows"].([]any)
		for _, f := range flows {
			if f, _ := f.(map[string]any); f["type"] == "m.login.token" {
				return f
			}
		}
		return nil
	}

	off := testserver.Start(t, "")
	alice := off.Register("alice", "pw")
	if got := capability(off, alice); got != false {
		t.Fatalf("disabled: m.get_login_token enabled %v", got)
	}
	if f := tokenFlow(off); f != nil {
		t.Fatalf("disabled: login flow %v", f)
	}
	wantErr(t, off.Do("POST", v1+"/login/get_token", alice.Token, map[string]any{}), http.StatusNotFound, "M_UNRECOGNIZED")
	wantErr(t, off.Do("POST", v3+"/login", "", tokenLogin("x")), http.StatusBadRequest, "M_UNKNOWN")

	s := testserver.Start(t, "login_via_existing_session:\n  enabled: true\n")
	alice = s.Register("alice", "pw")
	if got := capability(s, alice); got != true {
		t.Fatalf("enabled: m.get_login_token enabled %v", got)
	}
	if f := tokenFlow(s); f == nil || f["get_login_token"] != true {
		t.Fatalf("enabled: login flow %v", f)
	}
	first := s.MustDo(http.StatusUnauthorized, "POST", v1+"/login/get_token", alice.Token, map[string]any{})
	wantErr(t, s.Do("POST", v1+"/login/get_token", alice.Token, map[string]any{
		"auth": passwordAuth(first.String("session"), "alice", "wrong"),
	}), http.StatusUnauthorized, "M_FORBIDDEN")
	r := s.MustDo(http.StatusOK, "POST", v1+"/login/get_token", alice.Token, map[string]any{
		"auth": passwordAuth(first.String("session"), "alice", "pw"),
	})
	token := r.String("login_token")
	if token == "" || r.JSON["expires_in_ms"] != float64(300000) {
		t.Fatalf("get_token: %s", r.Body)
	}
	login := s.MustDo(http.StatusOK, "POST", v3+"/login", "", tokenLogin(token))
	if login.String("user_id") != alice.ID || login.String("device_id") == alice.DeviceID || login.String("access_token") == "" {
		t.Fatalf("token login: %s", login.Body)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", login.String("access_token"), nil)
	wantErr(t, s.Do("POST", v3+"/login", "", tokenLogin(token)), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", v3+"/login", "", tokenLogin("not-a-token")), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", v3+"/login", "", map[string]any{"type": "m.login.token"}), http.StatusBadRequest, "M_MISSING_PARAM")

	quick := testserver.Start(t, "login_via_existing_session:\n  enabled: true\n  require_ui_auth: false\n  token_timeout: 1s\n")
	bob := quick.Register("bob", "pw")
	r = quick.MustDo(http.StatusOK, "POST", v1+"/login/get_token", bob.Token, map[string]any{})
	if r.JSON["expires_in_ms"] != float64(1000) {
		t.Fatalf("get_token: %s", r.Body)
	}
	time.Sleep(1100 * time.Millisecond)
	wantErr(t, quick.Do("POST", v3+"/login", "", tokenLogin(r.String("login_token"))), http.StatusForbidden, "M_FORBIDDEN")
	// Stricter than rc_login: five tokens, then one a minute.
	for range 4 {
		quick.MustDo(http.StatusOK, "POST", v1+"/login/get_token", bob.Token, map[string]any{})
	}
	wantErr(t, quick.Do("POST", v1+"/login/get_token", bob.Token, map[string]any{}), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
}

// A join over federation keeps the body's extra keys too.
func TestRemoteJoinKeepsExtraContent(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	roomID := a.CreatePublicRoom(alice)
	b.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(roomID)+"?server_name=hs1.test", bob.Token, map[string]any{"foo": "bar", "reason": "hello"})
	for _, s := range []*testserver.Server{a, b} {
		u := alice
		if s == b {
			u = bob
		}
		c := rmStateContent(t, s, u, roomID, "m.room.member", bob.ID)
		if c["foo"] != "bar" || c["membership"] != "join" || c["reason"] != "hello" {
			t.Fatalf("member content on %s: %v", u.ID, c)
		}
	}
}
