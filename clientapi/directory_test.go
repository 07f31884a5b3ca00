package clientapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"homeserver/internal/testserver"
)

// dirAdmin registers a server admin through the shared-secret API.
func dirAdmin(t *testing.T, s *testserver.Server, localpart string) testserver.User {
	t.Helper()
	const path = "/_synapse/admin/v1/register"
	nonce := s.MustDo(http.StatusOK, "GET", path, "", nil).String("nonce")
	r := s.MustDo(http.StatusOK, "POST", path, "", map[string]any{
		"nonce": nonce, "username": localpart, "password": "pw", "admin": true,
		"mac": synapseMAC("test-shared-secret", nonce, localpart, "pw", true, ""),
	})
	return testserver.User{ID: r.String("user_id"), Token: r.String("access_token"), DeviceID: r.String("device_id")}
}

// dirCreateRoom creates a room and returns its ID.
func dirCreateRoom(t *testing.T, s *testserver.Server, token string, body map[string]any) string {
	t.Helper()
	id := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", token, body).String("room_id")
	if id == "" {
		t.Fatal("createRoom returned no room_id")
	}
	return id
}

// dirState returns the content of a state event as the user sees it.
func dirState(t *testing.T, s *testserver.Server, token, roomID, eventType, stateKey string) map[string]any {
	t.Helper()
	path := v3 + "/rooms/" + url.PathEscape(roomID) + "/state/" + url.PathEscape(eventType)
	if stateKey != "" {
		path += "/" + url.PathEscape(stateKey)
	}
	return s.MustDo(http.StatusOK, "GET", path, token, nil).JSON
}

func aliasPath(alias string) string { return v3 + "/directory/room/" + url.PathEscape(alias) }

func visibilityPath(roomID string) string {
	return v3 + "/directory/list/room/" + url.PathEscape(roomID)
}

func roomPath(roomID, rest string) string { return v3 + "/rooms/" + url.PathEscape(roomID) + rest }

// jsonStrings reads a JSON array of strings.
func jsonStrings(t *testing.T, v any) []string {
	t.Helper()
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("not an array: %#v", v)
	}
	out := make([]string, len(arr))
	for i, x := range arr {
		out[i], _ = x.(string)
	}
	return out
}

func TestRoomAliases(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	carol := s.Register("carol", "pw")
	admin := dirAdmin(t, s, "root")
	room := dirCreateRoom(t, s, alice.Token, map[string]any{"preset": "public_chat"})
	const cats = "#cats:test.local"

	s.MustDo(http.StatusOK, "PUT", aliasPath(cats), alice.Token, map[string]any{"room_id": room})

	// Resolving needs no access token.
	r := s.MustDo(http.StatusOK, "GET", aliasPath(cats), "", nil)
	if r.String("room_id") != room || !slices.Equal(jsonStrings(t, r.JSON["servers"]), []string{"test.local"}) {
		t.Fatalf("resolve: %s", r.Body)
	}
	wantErr(t, s.Do("GET", aliasPath("#nope:test.local"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", aliasPath("#cats:elsewhere.example"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", aliasPath("cats"), "", nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// Creating: taken, other servers', malformed, unknown rooms, outsiders.
	wantErr(t, s.Do("PUT", aliasPath(cats), alice.Token, map[string]any{"room_id": room}), http.StatusConflict, "M_UNKNOWN")
	wantErr(t, s.Do("PUT", aliasPath("#cats:elsewhere.example"), alice.Token, map[string]any{"room_id": room}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", aliasPath("cats:test.local"), alice.Token, map[string]any{"room_id": room}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", aliasPath("#dogs:test.local"), alice.Token, map[string]any{"room_id": "!unknown:test.local"}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("PUT", aliasPath("#dogs:test.local"), alice.Token, map[string]any{"room_id": "not a room"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", aliasPath("#dogs:test.local"), alice.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("PUT", aliasPath("#dogs:test.local"), "", map[string]any{"room_id": room}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	wantErr(t, s.Do("PUT", aliasPath("#bobs:test.local"), bob.Token, map[string]any{"room_id": room}), http.StatusForbidden, "M_FORBIDDEN")
	// A server admin needs no membership.
	s.MustDo(http.StatusOK, "PUT", aliasPath("#admins:test.local"), admin.Token, map[string]any{"room_id": room})

	// Local aliases: members only (or anyone when world readable).
	wantErr(t, s.Do("GET", roomPath(room, "/aliases"), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", roomPath("!unknown:test.local", "/aliases"), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	r = s.MustDo(http.StatusOK, "GET", roomPath(room, "/aliases"), alice.Token, nil)
	if got := jsonStrings(t, r.JSON["aliases"]); !slices.Equal(got, []string{"#admins:test.local", cats}) {
		t.Fatalf("aliases: %v", got)
	}

	// Joining through the alias resolves it.
	if r := s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(cats), bob.Token, nil); r.String("room_id") != room {
		t.Fatalf("join by alias: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "GET", roomPath(room, "/aliases"), bob.Token, nil)
	s.MustDo(http.StatusOK, "PUT", aliasPath("#bobs:test.local"), bob.Token, map[string]any{"room_id": room})

	// Deleting: creators, admins and those who may set the canonical alias.
	wantErr(t, s.Do("DELETE", aliasPath(cats), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("DELETE", aliasPath("#nope:test.local"), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("DELETE", aliasPath("#cats:elsewhere.example"), bob.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	s.MustDo(http.StatusOK, "DELETE", aliasPath("#bobs:test.local"), bob.Token, nil)
	s.MustDo(http.StatusOK, "DELETE", aliasPath("#admins:test.local"), alice.Token, nil) // alice has power 100
	s.MustDo(http.StatusOK, "PUT", aliasPath("#carols:test.local"), admin.Token, map[string]any{"room_id": room})
	s.MustDo(http.StatusOK, "DELETE", aliasPath("#carols:test.local"), admin.Token, nil)

	// Deleting an alias takes it out of the canonical alias event.
	s.MustDo(http.StatusOK, "PUT", aliasPath("#kittens:test.local"), alice.Token, map[string]any{"room_id": room})
	s.MustDo(http.StatusOK, "PUT", roomPath(room, "/state/m.room.canonical_alias"), alice.Token,
		map[string]any{"alias": cats, "alt_aliases": []string{"#kittens:test.local"}})
	s.MustDo(http.StatusOK, "DELETE", aliasPath(cats), alice.Token, nil)
	wantErr(t, s.Do("GET", aliasPath(cats), "", nil), http.StatusNotFound, "M_NOT_FOUND")
	c := dirState(t, s, alice.Token, room, "m.room.canonical_alias", "")
	if _, has := c["alias"]; has || !slices.Equal(jsonStrings(t, c["alt_aliases"]), []string{"#kittens:test.local"}) {
		t.Fatalf("canonical alias after delete: %v", c)
	}

	// A world-readable room shows its aliases to anyone.
	s.MustDo(http.StatusOK, "PUT", roomPath(room, "/state/m.room.history_visibility"), alice.Token,
		map[string]any{"history_visibility": "world_readable"})
	r = s.MustDo(http.StatusOK, "GET", roomPath(room, "/aliases"), carol.Token, nil)
	if got := jsonStrings(t, r.JSON["aliases"]); !slices.Equal(got, []string{"#kittens:test.local"}) {
		t.Fatalf("aliases of world-readable room: %v", got)
	}
}

func TestDirectoryVisibility(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	admin := dirAdmin(t, s, "root")
	public := dirCreateRoom(t, s, alice.Token, map[string]any{"visibility": "public"})
	private := dirCreateRoom(t, s, alice.Token, map[string]any{})

	visibility := func(roomID string) string {
		t.Helper()
		return s.MustDo(http.StatusOK, "GET", visibilityPath(roomID), "", nil).String("visibility")
	}
	if v := visibility(public); v != "public" {
		t.Fatalf("public room's visibility: %q", v)
	}
	if v := visibility(private); v != "private" {
		t.Fatalf("private room's visibility: %q", v)
	}
	wantErr(t, s.Do("GET", visibilityPath("!unknown:test.local"), "", nil), http.StatusNotFound, "M_NOT_FOUND")

	wantErr(t, s.Do("PUT", visibilityPath(private), bob.Token, map[string]any{"visibility": "public"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", visibilityPath(private), alice.Token, map[string]any{"visibility": "secret"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", visibilityPath("!unknown:test.local"), alice.Token, map[string]any{"visibility": "public"}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("PUT", visibilityPath(private), "", map[string]any{"visibility": "public"}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	// visibility defaults to public.
	s.MustDo(http.StatusOK, "PUT", visibilityPath(private), alice.Token, map[string]any{})
	if v := visibility(private); v != "public" {
		t.Fatalf("after publishing: %q", v)
	}
	// Server admins may withdraw any room.
	s.MustDo(http.StatusOK, "PUT", visibilityPath(private), admin.Token, map[string]any{"visibility": "private"})
	if v := visibility(private); v != "private" {
		t.Fatalf("after withdrawing: %q", v)
	}
	// A joined member without the power to set the canonical alias may not.
	s.MustDo(http.StatusOK, "POST", roomPath(public, "/join"), bob.Token, nil)
	wantErr(t, s.Do("PUT", visibilityPath(public), bob.Token, map[string]any{"visibility": "private"}), http.StatusForbidden, "M_FORBIDDEN")
}

// publicRoomIDs returns the room IDs of a /publicRooms chunk.
func publicRoomIDs(t *testing.T, r *testserver.Response) []string {
	t.Helper()
	var ids []string
	for _, e := range r.JSON["chunk"].([]any) {
		ids = append(ids, e.(map[string]any)["room_id"].(string))
	}
	return ids
}

func TestPublicRooms(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	cheese := dirCreateRoom(t, s, alice.Token, map[string]any{
		"visibility": "public", "name": "Cheese Lovers", "topic": "Tasty cheese", "room_alias_name": "fromage",
		"initial_state": []map[string]any{
			{"type": "m.room.avatar", "state_key": "", "content": map[string]any{"url": "mxc://test.local/cheese"}},
			{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
			{"type": "m.room.guest_access", "state_key": "", "content": map[string]any{"guest_access": "can_join"}},
		},
	})
	s.MustDo(http.StatusOK, "POST", roomPath(cheese, "/join"), bob.Token, nil)
	space := dirCreateRoom(t, s, alice.Token, map[string]any{
		"visibility": "public", "name": "Dairy space", "creation_content": map[string]any{"type": "m.space"},
	})
	plain := dirCreateRoom(t, s, alice.Token, map[string]any{"preset": "private_chat"})
	s.MustDo(http.StatusOK, "PUT", visibilityPath(plain), alice.Token, map[string]any{"visibility": "public"})
	dirCreateRoom(t, s, alice.Token, map[string]any{"name": "Unlisted cheese"})

	// Unauthenticated GET lists every published room, largest first.
	r := s.MustDo(http.StatusOK, "GET", v3+"/publicRooms", "", nil)
	ids := publicRoomIDs(t, r)
	if len(ids) != 3 || ids[0] != cheese {
		t.Fatalf("public rooms: %s", r.Body)
	}
	if n, _ := r.JSON["total_room_count_estimate"].(float64); n != 3 {
		t.Fatalf("total_room_count_estimate: %s", r.Body)
	}
	if _, has := r.JSON["next_batch"]; has {
		t.Fatalf("next_batch on the only page: %s", r.Body)
	}
	got := r.JSON["chunk"].([]any)[0].(map[string]any)
	want := map[string]any{
		"room_id": cheese, "num_joined_members": float64(2), "world_readable": true, "guest_can_join": true,
		"name": "Cheese Lovers", "topic": "Tasty cheese", "canonical_alias": "#fromage:test.local",
		"avatar_url": "mxc://test.local/cheese", "join_rule": "public",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if _, has := got["room_type"]; has {
		t.Errorf("room_type on a room without one: %v", got)
	}
	for _, e := range r.JSON["chunk"].([]any) {
		e := e.(map[string]any)
		if e["room_id"] == space && e["room_type"] != "m.space" {
			t.Errorf("space entry: %v", e)
		}
		if e["room_id"] == plain && (e["join_rule"] != "invite" || e["world_readable"] != false || e["guest_can_join"] != true) {
			t.Errorf("private_chat entry: %v", e)
		}
	}

	// Filters: a search term over name, topic and alias, ignoring case;
	// room types, where null means no type.
	search := func(body map[string]any) []string {
		t.Helper()
		return publicRoomIDs(t, s.MustDo(http.StatusOK, "POST", v3+"/publicRooms", alice.Token, body))
	}
	for _, term := range []string{"CHEESE", "tasty", "FROMAGE:test"} {
		if ids := search(map[string]any{"filter": map[string]any{"generic_search_term": term}}); !slices.Equal(ids, []string{cheese}) {
			t.Errorf("search %q: %v", term, ids)
		}
	}
	if ids := search(map[string]any{"filter": map[string]any{"generic_search_term": "dairy"}}); !slices.Equal(ids, []string{space}) {
		t.Errorf("search dairy: %v", ids)
	}
	if ids := search(map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}); !slices.Equal(ids, []string{space}) {
		t.Errorf("room_types [m.space]: %v", ids)
	}
	if ids := search(map[string]any{"filter": map[string]any{"room_types": []any{nil}}}); len(ids) != 2 || slices.Contains(ids, space) {
		t.Errorf("room_types [null]: %v", ids)
	}
	if ids := search(map[string]any{}); len(ids) != 3 {
		t.Errorf("unfiltered POST: %v", ids)
	}

	// Other servers' directories need federation; ours can be named.
	wantErr(t, s.Do("GET", v3+"/publicRooms?server=elsewhere.example", "", nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", v3+"/publicRooms?server=elsewhere.example", alice.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "GET", v3+"/publicRooms?server=test.local", "", nil)
	wantErr(t, s.Do("POST", v3+"/publicRooms", "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	wantErr(t, s.Do("GET", v3+"/publicRooms?limit=-1", "", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", v3+"/publicRooms?since=bogus", "", nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// Withdrawn rooms disappear.
	s.MustDo(http.StatusOK, "PUT", visibilityPath(space), alice.Token, map[string]any{"visibility": "private"})
	if ids := publicRoomIDs(t, s.MustDo(http.StatusOK, "GET", v3+"/publicRooms", "", nil)); slices.Contains(ids, space) {
		t.Fatalf("withdrawn room still listed: %v", ids)
	}
}

func TestPublicRoomsPagination(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	var all []string
	for range 5 {
		all = append(all, dirCreateRoom(t, s, alice.Token, map[string]any{"visibility": "public"}))
	}
	// One room with more members comes first; the rest by room ID.
	bob := s.Register("bob", "pw")
	s.MustDo(http.StatusOK, "POST", roomPath(all[3], "/join"), bob.Token, nil)
	rest := slices.Concat(all[:3], all[4:])
	slices.Sort(rest)
	want := append([]string{all[3]}, rest...)

	page := func(method, since string) *testserver.Response {
		t.Helper()
		if method == "GET" {
			q := url.Values{"limit": {"2"}}
			if since != "" {
				q.Set("since", since)
			}
			return s.MustDo(http.StatusOK, "GET", v3+"/publicRooms?"+q.Encode(), "", nil)
		}
		return s.MustDo(http.StatusOK, "POST", v3+"/publicRooms", alice.Token, map[string]any{"limit": 2, "since": since})
	}
	for _, method := range []string{"GET", "POST"} {
		first := page(method, "")
		if ids := publicRoomIDs(t, first); !slices.Equal(ids, want[:2]) {
			t.Fatalf("%s first page: %v, want %v", method, ids, want[:2])
		}
		if first.String("prev_batch") != "" || first.String("next_batch") == "" {
			t.Fatalf("%s first page tokens: %s", method, first.Body)
		}
		second := page(method, first.String("next_batch"))
		if ids := publicRoomIDs(t, second); !slices.Equal(ids, want[2:4]) {
			t.Fatalf("%s second page: %v, want %v", method, ids, want[2:4])
		}
		if second.String("prev_batch") == "" || second.String("next_batch") == "" {
			t.Fatalf("%s second page tokens: %s", method, second.Body)
		}
		last := page(method, second.String("next_batch"))
		if ids := publicRoomIDs(t, last); !slices.Equal(ids, want[4:]) {
			t.Fatalf("%s last page: %v, want %v", method, ids, want[4:])
		}
		if last.String("next_batch") != "" || last.String("prev_batch") == "" {
			t.Fatalf("%s last page tokens: %s", method, last.Body)
		}
		// prev_batch leads back.
		back := page(method, last.String("prev_batch"))
		if ids := publicRoomIDs(t, back); !slices.Equal(ids, want[2:4]) {
			t.Fatalf("%s back from the last page: %v, want %v", method, ids, want[2:4])
		}
		if ids := publicRoomIDs(t, page(method, back.String("prev_batch"))); !slices.Equal(ids, want[:2]) {
			t.Fatalf("%s back to the first page: %v", method, ids)
		}
	}
}

func TestRoomUpgrade(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	carol := s.Register("carol", "pw")
	old := dirCreateRoom(t, s, alice.Token, map[string]any{
		"room_version": "10", "visibility": "public", "preset": "public_chat",
		"name": "Old name", "topic": "Old topic", "room_alias_name": "upgrade-me",
		"creation_content": map[string]any{"type": "org.example.custom"},
		"initial_state": []map[string]any{
			{"type": "m.room.avatar", "state_key": "", "content": map[string]any{"url": "mxc://test.local/avatar"}},
			{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
			{"type": "m.room.server_acl", "state_key": "", "content": map[string]any{"allow": []string{"*"}, "deny": []string{"evil.example"}}},
		},
	})
	s.MustDo(http.StatusOK, "POST", roomPath(old, "/join"), bob.Token, nil)
	s.MustDo(http.StatusOK, "POST", roomPath(old, "/ban"), alice.Token, map[string]any{"user_id": carol.ID})
	upgrade := roomPath(old, "/upgrade")

	wantErr(t, s.Do("POST", upgrade, alice.Token, map[string]any{"new_version": "999"}), http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	wantErr(t, s.Do("POST", upgrade, alice.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("POST", upgrade, bob.Token, map[string]any{"new_version": "11"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", upgrade, carol.Token, map[string]any{"new_version": "11"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", roomPath("!unknown:test.local", "/upgrade"), alice.Token, map[string]any{"new_version": "11"}), http.StatusNotFound, "M_NOT_FOUND")

	r := s.MustDo(http.StatusOK, "POST", upgrade, alice.Token, map[string]any{"new_version": "11"})
	repl := r.String("replacement_room")
	if repl == "" || repl == old {
		t.Fatalf("upgrade: %s", r.Body)
	}

	// The old room is tombstoned and closed to ordinary members.
	if ts := dirState(t, s, alice.Token, old, "m.room.tombstone", ""); ts["replacement_room"] != repl || ts["body"] == "" {
		t.Fatalf("tombstone: %v", ts)
	}
	oldPL := dirState(t, s, alice.Token, old, "m.room.power_levels", "")
	if oldPL["events_default"] != float64(50) || oldPL["invite"] != float64(50) {
		t.Fatalf("old room's power levels: %v", oldPL)
	}
	wantErr(t, s.Do("PUT", roomPath(old, "/send/m.room.message/t1"), bob.Token, map[string]any{"msgtype": "m.text", "body": "hi"}),
		http.StatusForbidden, "M_FORBIDDEN")

	// The new room links back and carries the state over.
	create := dirState(t, s, alice.Token, repl, "m.room.create", "")
	pred, _ := create["predecessor"].(map[string]any)
	if create["room_version"] != "11" || pred["room_id"] != old || create["type"] != "org.example.custom" {
		t.Fatalf("new room's create event: %v", create)
	}
	if id, _ := pred["event_id"].(string); id == "" {
		t.Fatalf("predecessor without event_id: %v", create)
	}
	for _, c := range []struct{ eventType, key, want string }{
		{"m.room.name", "name", "Old name"},
		{"m.room.topic", "topic", "Old topic"},
		{"m.room.avatar", "url", "mxc://test.local/avatar"},
		{"m.room.join_rules", "join_rule", "public"},
		{"m.room.history_visibility", "history_visibility", "shared"},
		{"m.room.guest_access", "guest_access", "forbidden"},
		{"m.room.encryption", "algorithm", "m.megolm.v1.aes-sha2"},
		{"m.room.canonical_alias", "alias", "#upgrade-me:test.local"},
	} {
		if got := dirState(t, s, alice.Token, repl, c.eventType, ""); got[c.key] != c.want {
			t.Errorf("%s in the new room: %v", c.eventType, got)
		}
	}
	if acl := dirState(t, s, alice.Token, repl, "m.room.server_acl", ""); !slices.Equal(jsonStrings(t, acl["deny"]), []string{"evil.example"}) {
		t.Errorf("server ACL in the new room: %v", acl)
	}
	newPL := dirState(t, s, alice.Token, repl, "m.room.power_levels", "")
	if users, _ := newPL["users"].(map[string]any); users[alice.ID] != float64(100) || newPL["events_default"] != float64(0) {
		t.Errorf("new room's power levels: %v", newPL)
	}
	if m := dirState(t, s, alice.Token, repl, "m.room.member", carol.ID); m["membership"] != "ban" {
		t.Errorf("ban not carried over: %v", m)
	}

	// Aliases and the directory listing follow the room.
	if r := s.MustDo(http.StatusOK, "GET", aliasPath("#upgrade-me:test.local"), "", nil); r.String("room_id") != repl {
		t.Fatalf("alias after upgrade: %s", r.Body)
	}
	if c := dirState(t, s, alice.Token, old, "m.room.canonical_alias", ""); c["alias"] != nil {
		t.Errorf("old room's canonical alias still names the moved alias: %v", c)
	}
	if v := s.MustDo(http.StatusOK, "GET", visibilityPath(repl), "", nil).String("visibility"); v != "public" {
		t.Errorf("new room's visibility: %q", v)
	}
	if v := s.MustDo(http.StatusOK, "GET", visibilityPath(old), "", nil).String("visibility"); v != "private" {
		t.Errorf("old room's visibility: %q", v)
	}

	// Bob follows and the room upgrades again to v12, where creators hold
	// their power outside the power levels.
	s.MustDo(http.StatusOK, "POST", roomPath(repl, "/join"), bob.Token, nil)
	r = s.MustDo(http.StatusOK, "POST", roomPath(repl, "/upgrade"), alice.Token, map[string]any{
		"new_version": "12", "additional_creators": []string{bob.ID},
	})
	v12 := r.String("replacement_room")
	create = dirState(t, s, alice.Token, v12, "m.room.create", "")
	if create["room_version"] != "12" || !slices.Equal(jsonStrings(t, create["additional_creators"]), []string{bob.ID}) {
		t.Fatalf("v12 create event: %v", create)
	}
	if _, has := create["creator"]; has {
		t.Errorf("v12 create event names a creator: %v", create)
	}
	users, _ := dirState(t, s, alice.Token, v12, "m.room.power_levels", "")["users"].(map[string]any)
	if _, has := users[alice.ID]; has {
		t.Errorf("creator listed in v12 power levels: %v", users)
	}
	if _, has := users[bob.ID]; has {
		t.Errorf("additional creator listed in v12 power levels: %v", users)
	}
	// An additional creator may upgrade though bob was never given power;
	// going back to a version without privileged creators, the creators
	// keep the highest level.
	s.MustDo(http.StatusOK, "POST", roomPath(v12, "/join"), bob.Token, nil)
	r = s.MustDo(http.StatusOK, "POST", roomPath(v12, "/upgrade"), bob.Token, map[string]any{"new_version": "11"})
	down := r.String("replacement_room")
	users, _ = dirState(t, s, bob.Token, down, "m.room.power_levels", "")["users"].(map[string]any)
	if users[bob.ID] != float64(100) || users[alice.ID] != float64(100) {
		t.Errorf("v12 creators' power after downgrading: %v", users)
	}
}
