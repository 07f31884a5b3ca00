package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/pdu"
)

// wantError checks a response's status and errcode.
func wantError(t *testing.T, what string, r *testserver.Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.Errcode() != code {
		t.Errorf("%s: %d %s, want %d %s: %s", what, r.Status, r.Errcode(), status, code, r.Body)
	}
}

// A remote user's profile, whole or one field, is asked of their server.
func TestProfileAcrossServers(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	a.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.Token, map[string]any{"displayname": "Alice Liddell"})
	a.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/avatar_url", alice.Token, map[string]any{"avatar_url": "mxc://hs1.test/rabbit"})

	profile := "/_matrix/client/v3/profile/" + url.PathEscape(alice.ID)
	r := b.MustDo(http.StatusOK, "GET", profile, bob.Token, nil)
	if r.String("displayname") != "Alice Liddell" || r.String("avatar_url") != "mxc://hs1.test/rabbit" {
		t.Errorf("profile from hs2: %s", r.Body)
	}
	r = b.MustDo(http.StatusOK, "GET", profile+"/displayname", bob.Token, nil)
	if r.String("displayname") != "Alice Liddell" || len(r.JSON) != 1 {
		t.Errorf("displayname from hs2: %s", r.Body)
	}
	r = b.MustDo(http.StatusOK, "GET", profile+"/avatar_url", "", nil)
	if r.String("avatar_url") != "mxc://hs1.test/rabbit" || len(r.JSON) != 1 {
		t.Errorf("avatar_url from hs2: %s", r.Body)
	}

	// What the remote server does not have is not found; a server that
	// cannot be reached is a 502.
	wantError(t, "unset field", b.Do("GET", profile+"/m.tz", bob.Token, nil), 404, "M_NOT_FOUND")
	wantError(t, "unknown user", b.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape("@nobody:hs1.test"), bob.Token, nil), 404, "M_NOT_FOUND")
	wantError(t, "unknown user's field", b.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape("@nobody:hs1.test")+"/displayname", bob.Token, nil), 404, "M_NOT_FOUND")
	wantError(t, "unreachable server", b.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape("@x:127.0.0.1:1"), bob.Token, nil), 502, "M_UNKNOWN")
	wantError(t, "invalid server name", b.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape("@x:bad_server!"), bob.Token, nil), 400, "M_INVALID_PARAM")
	wantError(t, "invalid user ID", b.Do("GET", "/_matrix/client/v3/profile/nobody", bob.Token, nil), 400, "M_INVALID_PARAM")

	// The federation query itself.
	key := b.SigningKey()
	q := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(alice.ID)
	r = f.FedDo(a, key, "", "GET", q+"&field=displayname", nil)
	if r.Status != 200 || r.String("displayname") != "Alice Liddell" || len(r.JSON) != 1 {
		t.Errorf("query/profile with field: %d %s", r.Status, r.Body)
	}
	wantError(t, "query/profile without user_id", f.FedDo(a, key, "", "GET", "/_matrix/federation/v1/query/profile", nil), 400, "M_MISSING_PARAM")
	wantError(t, "query/profile of another server's user", f.FedDo(a, key, "", "GET", "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(bob.ID), nil), 404, "M_NOT_FOUND")
}

// publicRooms over federation: hs2's client lists hs1's directory, with a
// filter and pages; malformed queries are 4xx.
func TestPublicRoomsAcrossServers(t *testing.T) {
	f := testserver.NewFederation(t, "allow_public_rooms_over_federation: true\n", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	lobby := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Lobby of hs1", "topic": "Come in"})
	garden := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Garden"})
	private := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Not listed"})
	local := b.CreateRoom(bob, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Lobby of hs2"})

	ids := func(r *testserver.Response) []string {
		var out []string
		chunk, _ := r.JSON["chunk"].([]any)
		for _, e := range chunk {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m["room_id"].(string))
			}
		}
		return out
	}

	r := b.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/publicRooms?server=hs1.test", bob.Token, nil)
	got := ids(r)
	if !slices.Contains(got, lobby) || !slices.Contains(got, garden) || slices.Contains(got, private) || slices.Contains(got, local) {
		t.Fatalf("hs1's directory from hs2: %s", r.Body)
	}
	chunk, _ := r.JSON["chunk"].([]any)
	for _, e := range chunk {
		if m := e.(map[string]any); m["room_id"] == lobby && (m["name"] != "Lobby of hs1" || m["topic"] != "Come in" || m["num_joined_members"] != 1.0) {
			t.Errorf("lobby's entry: %v", m)
		}
	}
	// Without server, or with its own name, hs2 lists its own.
	for _, p := range []string{"/_matrix/client/v3/publicRooms", "/_matrix/client/v3/publicRooms?server=hs2.test"} {
		if got := ids(b.MustDo(http.StatusOK, "GET", p, "", nil)); !slices.Equal(got, []string{local}) {
			t.Errorf("%s: %v", p, got)
		}
	}

	// Pages: since tokens of hs1 go back to hs1.
	r = b.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/publicRooms?server=hs1.test&limit=1", "", nil)
	first, next := ids(r), r.String("next_batch")
	if len(first) != 1 || next == "" {
		t.Fatalf("first page: %s", r.Body)
	}
	r = b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/publicRooms?server=hs1.test", bob.Token, map[string]any{"limit": 1, "since": next})
	if second := ids(r); len(second) != 1 || second[0] == first[0] || r.String("prev_batch") == "" {
		t.Errorf("second page: %s", r.Body)
	}

	// A filter is applied by hs1.
	r = b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/publicRooms?server=hs1.test", bob.Token, map[string]any{"filter": map[string]any{"generic_search_term": "LOBBY"}})
	if got := ids(r); !slices.Equal(got, []string{lobby}) {
		t.Errorf("filtered: %s", r.Body)
	}
	r = b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/publicRooms?server=hs1.test", bob.Token, map[string]any{"filter": map[string]any{"generic_search_term": "nothing like it"}})
	if got := ids(r); len(got) != 0 {
		t.Errorf("filtered to nothing: %s", r.Body)
	}
	wantError(t, "unreachable server", b.Do("GET", "/_matrix/client/v3/publicRooms?server=127.0.0.1:1", "", nil), 502, "M_UNKNOWN")
	wantError(t, "invalid server", b.Do("GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape("bad server"), "", nil), 400, "M_INVALID_PARAM")

	// The federation endpoints.
	key := b.SigningKey()
	const fed = "/_matrix/federation/v1/publicRooms"
	r = f.FedDo(a, key, "", "GET", fed+"?limit=10&include_all_networks=false", nil)
	if r.Status != 200 || !slices.Contains(ids(r), lobby) {
		t.Errorf("GET publicRooms: %d %s", r.Status, r.Body)
	}
	r = f.FedDo(a, key, "", "POST", fed, map[string]any{"filter": map[string]any{"generic_search_term": "garden"}, "include_all_networks": true})
	if r.Status != 200 || !slices.Equal(ids(r), []string{garden}) {
		t.Errorf("POST publicRooms: %d %s", r.Status, r.Body)
	}
	for name, c := range map[string]struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		"limit not a number":        {"GET", fed + "?limit=ten", nil, 400, "M_INVALID_PARAM"},
		"negative limit":            {"GET", fed + "?limit=-1", nil, 400, "M_INVALID_PARAM"},
		"include_all_networks":      {"GET", fed + "?include_all_networks=maybe", nil, 400, "M_INVALID_PARAM"},
		"bad since":                 {"GET", fed + "?since=garbage", nil, 400, "M_INVALID_PARAM"},
		"body not JSON":             {"POST", fed, "{not json", 400, "M_NOT_JSON"},
		"body not an object":        {"POST", fed, "[]", 400, "M_BAD_JSON"},
		"limit of the wrong type":   {"POST", fed, map[string]any{"limit": "ten"}, 400, "M_BAD_JSON"},
		"negative limit in body":    {"POST", fed, map[string]any{"limit": -5}, 400, "M_INVALID_PARAM"},
		"filter of the wrong type":  {"POST", fed, map[string]any{"filter": 3}, 400, "M_BAD_JSON"},
		"room_types of wrong type":  {"POST", fed, map[string]any{"filter": map[string]any{"room_types": "m.space"}}, 400, "M_BAD_JSON"},
		"include_all_networks type": {"POST", fed, map[string]any{"include_all_networks": "yes"}, 400, "M_BAD_JSON"},
		"bad since in body":         {"POST", fed, map[string]any{"since": "!!"}, 400, "M_INVALID_PARAM"},
	} {
		wantError(t, name, f.FedDo(a, key, "", c.method, c.path, c.body), c.status, c.code)
	}
	wantError(t, "unsigned", f.FedDo(a, key, "Bearer nothing", "GET", fed, nil), 401, "M_UNAUTHORIZED")
}

// An OpenID token of hs1 is exchanged for its user through hs1's
// userinfo, which needs no X-Matrix signature.
func TestOpenID(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := a.Register("bob", "pw")
	key := b.SigningKey()

	path := "/_matrix/client/v3/user/" + url.PathEscape(alice.ID) + "/openid/request_token"
	r := a.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{})
	tok := r.String("access_token")
	if tok == "" || r.String("token_type") != "Bearer" || r.String("matrix_server_name") != "hs1.test" || r.JSON["expires_in"] != 3600.0 {
		t.Fatalf("request_token: %s", r.Body)
	}

	userinfo := "/_matrix/federation/v1/openid/userinfo?access_token="
	for name, auth := range map[string]string{"no X-Matrix": "Bearer unrelated", "signed": ""} {
		r = f.FedDo(a, key, auth, "GET", userinfo+url.QueryEscape(tok), nil)
		if r.Status != 200 || r.String("sub") != alice.ID {
			t.Errorf("userinfo (%s): %d %s", name, r.Status, r.Body)
		}
	}
	wantError(t, "unknown token", f.FedDo(a, key, "Bearer x", "GET", userinfo+"nope", nil), 401, "M_UNKNOWN_TOKEN")
	wantError(t, "missing token", f.FedDo(a, key, "Bearer x", "GET", "/_matrix/federation/v1/openid/userinfo", nil), 401, "M_MISSING_TOKEN")
	wantError(t, "another server's token", f.FedDo(b, a.SigningKey(), "Bearer x", "GET", userinfo+url.QueryEscape(tok), nil), 401, "M_UNKNOWN_TOKEN")
	wantError(t, "a client access token", f.FedDo(a, key, "Bearer x", "GET", userinfo+url.QueryEscape(alice.Token), nil), 401, "M_UNKNOWN_TOKEN")
	// The OpenID token is no access token of the client API.
	wantError(t, "openid token as access token", a.Do("GET", "/_matrix/client/v3/account/whoami", tok, nil), 401, "M_UNKNOWN_TOKEN")

	wantError(t, "another user's token", a.Do("POST", "/_matrix/client/v3/user/"+url.PathEscape(bob.ID)+"/openid/request_token", alice.Token, map[string]any{}), 403, "M_FORBIDDEN")
	wantError(t, "no access token", a.Do("POST", path, "", map[string]any{}), 401, "M_MISSING_TOKEN")
	wantError(t, "body not JSON", a.Do("POST", path, alice.Token, "{nope"), 400, "M_NOT_JSON")
	wantError(t, "no body", a.Do("POST", path, alice.Token, nil), 400, "M_NOT_JSON")
	wantError(t, "body not an object", a.Do("POST", path, alice.Token, "[1]"), 400, "M_BAD_JSON")
	wantError(t, "invalid user ID", a.Do("POST", "/_matrix/client/v3/user/alice/openid/request_token", alice.Token, map[string]any{}), 400, "M_INVALID_PARAM")
}

// knockState returns the stripped state events of a knocked room in a
// /sync response.
func knockState(resp map[string]any, roomID string) []map[string]any {
	return objects(path(resp, "rooms", "knock", roomID, "knock_state", "events"))
}

// memberOf returns the membership of user in the room as s sees it ("" if
// none).
func memberOf(t *testing.T, s *testserver.Server, u testserver.User, roomID, user string) string {
	t.Helper()
	r := s.Do("GET", testserver.RoomPath(roomID, "/state/m.room.member/"+url.PathEscape(user)), u.Token, nil)
	if r.Status == 404 {
		return ""
	}
	if r.Status != 200 {
		t.Fatalf("member state of %s: %d %s", user, r.Status, r.Body)
	}
	return r.String("membership")
}

// waitMember waits until s sees user's membership of the room as want.
func waitMember(t *testing.T, s *testserver.Server, u testserver.User, roomID, user, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for memberOf(t, s, u, roomID, user) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %s in %s", user, want, roomID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A user of hs2 knocks on a room of hs1 through make_knock and send_knock:
// hs1's room has the knock, the knocker's /sync shows it with the room's
// stripped state; an invite accepts it and the knocker joins. Another
// knock is rescinded by leaving.
func TestKnockAcrossServers(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	carol := b.Register("carol", "pw")
	room := a.CreateRoom(alice, map[string]any{"preset": "private_chat", "name": "Knock Knock", "room_version": "10",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
	closed := a.CreateRoom(alice, map[string]any{"preset": "private_chat", "name": "Closed"})
	bobSync := newSyncer(t, b, bob)

	r := b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(room)+"?via=hs1.test", bob.Token, map[string]any{"reason": "let me in"})
	if r.String("room_id") != room {
		t.Fatalf("knock answered %s", r.Body)
	}
	r = a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/state/m.room.member/"+url.PathEscape(bob.ID)), alice.Token, nil)
	if r.String("membership") != "knock" || r.String("reason") != "let me in" {
		t.Errorf("hs1's state of bob: %s", r.Body)
	}
	resp := bobSync.until("the knock", func(r map[string]any) bool { return path(r, "rooms", "knock", room) != nil })
	types := map[string]map[string]any{}
	for _, e := range knockState(resp, room) {
		types[e["type"].(string)] = e
		if _, ok := e["signatures"]; ok {
			t.Errorf("knock_state holds a PDU, not a stripped event: %v", e)
		}
	}
	if path(types["m.room.name"], "content", "name") != "Knock Knock" || types["m.room.create"] == nil ||
		path(types["m.room.join_rules"], "content", "join_rule") != "knock" {
		t.Errorf("knock_state: %v", knockState(resp, room))
	}
	if m := types["m.room.member"]; m == nil || m["state_key"] != bob.ID || path(m, "content", "membership") != "knock" {
		t.Errorf("knock_state lacks bob's knock: %v", knockState(resp, room))
	}

	// The knock is accepted with an invite; bob joins.
	a.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": bob.ID})
	bobSync.until("the invite", func(r map[string]any) bool { return path(r, "rooms", "invite", room) != nil })
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	if got := memberOf(t, a, alice, room, bob.ID); got != "join" {
		t.Errorf("bob on hs1 after joining: %q", got)
	}

	// A knock rescinded by leaving, through hs1.
	otherRoom := a.CreateRoom(alice, map[string]any{"preset": "private_chat", "room_version": "11",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(otherRoom)+"?server_name=hs1.test", carol.Token, map[string]any{})
	if got := memberOf(t, a, alice, otherRoom, carol.ID); got != "knock" {
		t.Fatalf("carol on hs1 after knocking: %q", got)
	}
	b.MustDo(http.StatusOK, "POST", testserver.RoomPath(otherRoom, "/leave"), carol.Token, map[string]any{})
	waitMember(t, a, alice, otherRoom, carol.ID, "leave")

	// A room that takes no knocks refuses, and so does an unknown one.
	wantError(t, "knock on a closed room", b.Do("POST", "/_matrix/client/v3/knock/"+url.PathEscape(closed), carol.Token, map[string]any{}), 403, "M_FORBIDDEN")
	wantError(t, "knock on an unknown room", b.Do("POST", "/_matrix/client/v3/knock/"+url.PathEscape("!nowhere:hs1.test"), carol.Token, map[string]any{}), 404, "M_NOT_FOUND")
	wantError(t, "knock with a body not JSON", b.Do("POST", "/_matrix/client/v3/knock/"+url.PathEscape(room), carol.Token, "{x"), 400, "M_NOT_JSON")
}

// make_knock and send_knock refuse malformed and foreign requests with the
// specified 4xx.
func TestKnockEndpointsMalformed(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	room := a.CreateRoom(alice, map[string]any{"preset": "private_chat", "room_version": "10",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
	key := b.SigningKey()
	dave := "@dave:hs2.test"
	makeKnock := func(roomID, user, query string) *testserver.Response {
		return f.FedDo(a, key, "", "GET", "/_matrix/federation/v1/make_knock/"+url.PathEscape(roomID)+"/"+url.PathEscape(user)+query, nil)
	}
	wantError(t, "make_knock without ver", makeKnock(room, dave, ""), 400, "M_MISSING_PARAM")
	r := makeKnock(room, dave, "?ver=1&ver=2")
	wantError(t, "make_knock of an unsupported version", r, 400, "M_INCOMPATIBLE_ROOM_VERSION")
	if r.String("room_version") != "10" {
		t.Errorf("incompatible version answer lacks room_version: %s", r.Body)
	}
	wantError(t, "make_knock for another server's user", makeKnock(room, alice.ID, "?ver=10"), 403, "M_FORBIDDEN")
	wantError(t, "make_knock with a bad room ID", makeKnock("nowhere", dave, "?ver=10"), 400, "M_INVALID_PARAM")
	wantError(t, "make_knock with a bad user ID", makeKnock(room, "dave", "?ver=10"), 400, "M_INVALID_PARAM")
	wantError(t, "make_knock of an unknown room", makeKnock("!nowhere:hs1.test", dave, "?ver=10"), 404, "M_NOT_FOUND")
	wantError(t, "unsigned make_knock", f.FedDo(a, key, "Bearer x", "GET", "/_matrix/federation/v1/make_knock/"+url.PathEscape(room)+"/"+url.PathEscape(dave)+"?ver=10", nil), 401, "M_UNAUTHORIZED")

	r = makeKnock(room, dave, "?ver=10")
	if r.Status != 200 || r.String("room_version") != "10" || path(r.JSON, "event", "content", "membership") != "knock" ||
		path(r.JSON, "event", "type") != "m.room.member" || path(r.JSON, "event", "state_key") != dave {
		t.Fatalf("make_knock: %d %s", r.Status, r.Body)
	}
	// sign signs the template with k, changed by edit.
	sign := func(k pdu.Key, edit func(tmpl, content map[string]any)) *pdu.Event {
		t.Helper()
		var tmpl map[string]any
		if err := json.Unmarshal(r.Body, &struct {
			Event *map[string]any `json:"event"`
		}{&tmpl}); err != nil {
			t.Fatal(err)
		}
		edit(tmpl, tmpl["content"].(map[string]any))
		data, _ := json.Marshal(tmpl)
		ev, err := pdu.SignTemplate("10", data, k, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	sendKnock := func(roomID, eventID string, body any) *testserver.Response {
		return f.FedDo(a, key, "", "PUT", "/_matrix/federation/v1/send_knock/"+url.PathEscape(roomID)+"/"+url.PathEscape(eventID), body)
	}
	knock := sign(key, func(_, _ map[string]any) {})
	notKnock := sign(key, func(_, c map[string]any) { c["membership"] = "join" })
	// A knock of hs1's user, signed by hs1, that hs2 passes on.
	foreign := sign(a.SigningKey(), func(tmpl, _ map[string]any) { tmpl["sender"], tmpl["state_key"] = "@eve:hs1.test", "@eve:hs1.test" })
	for name, c := range map[string]struct {
		roomID, eventID string
		body            any
		status          int
		code            string
	}{
		"body not JSON":         {room, knock.ID(), "{x", 400, "M_NOT_JSON"},
		"no body":               {room, knock.ID(), "", 400, "M_NOT_JSON"},
		"body not an event":     {room, knock.ID(), "[]", 400, "M_INVALID_PARAM"},
		"fields of wrong types": {room, knock.ID(), map[string]any{"type": 5, "content": "x"}, 400, "M_INVALID_PARAM"},
		"unsigned event":        {room, knock.ID(), map[string]any{"type": "m.room.member", "state_key": dave, "sender": dave, "room_id": room, "content": map[string]any{"membership": "knock"}}, 400, "M_INVALID_PARAM"},
		"not a knock":           {room, notKnock.ID(), json.RawMessage(notKnock.JSON()), 400, "M_INVALID_PARAM"},
		"event ID not the path": {room, "$other", json.RawMessage(knock.JSON()), 400, "M_INVALID_PARAM"},
		"another room's path":   {"!elsewhere:hs1.test", knock.ID(), json.RawMessage(knock.JSON()), 404, "M_NOT_FOUND"},
	} {
		wantError(t, "send_knock: "+name, sendKnock(c.roomID, c.eventID, c.body), c.status, c.code)
	}
	// A knock of a user of another server than the requesting one.
	wantError(t, "send_knock of another server's user", sendKnock(room, foreign.ID(), json.RawMessage(foreign.JSON())), 400, "M_INVALID_PARAM")

	// The good knock is taken, answered with the room's state as PDUs.
	r = sendKnock(room, knock.ID(), json.RawMessage(knock.JSON()))
	if r.Status != 200 {
		t.Fatalf("send_knock: %d %s", r.Status, r.Body)
	}
	state, _ := r.JSON["knock_room_state"].([]any)
	var sawCreate bool
	for _, e := range state {
		m := e.(map[string]any)
		if m["type"] == "m.room.create" {
			sawCreate = m["signatures"] != nil && m["room_id"] == room
		}
	}
	if !sawCreate {
		t.Errorf("knock_room_state lacks the create event as a PDU: %s", r.Body)
	}
	if got := memberOf(t, a, alice, room, dave); got != "knock" {
		t.Errorf("dave on hs1: %q", got)
	}
}
