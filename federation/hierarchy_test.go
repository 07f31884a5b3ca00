package federation_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"homeserver/internal/testserver"
)

// roomIDsOf lists the room_id of each object in a JSON array.
func roomIDsOf(v any) []string {
	out := []string{}
	list, _ := v.([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			id, _ := m["room_id"].(string)
			out = append(out, id)
		}
	}
	return out
}

// A space on hs1 with children on hs2, a server hs1 shares none of those
// rooms with: hs1's clients see them through hs2's /hierarchy, which
// answers by the requesting server's access and the rooms' server ACLs.
func TestHierarchyAcrossServers(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	space := map[string]any{"type": "m.space"}
	addChild := func(s *testserver.Server, token, parent, child string, content map[string]any) {
		t.Helper()
		s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(parent, "/state/m.space.child/"+url.PathEscape(child)), token, content)
	}
	onHS2 := []string{"hs2.test"}

	root := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Root", "creation_content": space})
	far := b.CreateRoom(bob, map[string]any{"preset": "public_chat", "name": "Far", "topic": "On hs2"})
	sub := b.CreateRoom(bob, map[string]any{"preset": "public_chat", "name": "Sub", "creation_content": space})
	leaf := b.CreateRoom(bob, map[string]any{"preset": "public_chat", "name": "Leaf"})
	secret := b.CreateRoom(bob, map[string]any{"preset": "private_chat", "name": "Secret"})
	denied := b.CreateRoom(bob, map[string]any{"preset": "public_chat", "name": "Denied", "creation_content": space})
	b.MustDo(http.StatusOK, "PUT", testserver.RoomPath(denied, "/state/m.room.server_acl/"), bob.Token, map[string]any{"allow": []string{"*"}, "deny": []string{"hs1.test"}})

	addChild(a, alice.Token, root, far, map[string]any{"via": onHS2, "order": "1"})
	addChild(a, alice.Token, root, sub, map[string]any{"via": onHS2, "order": "2", "suggested": true})
	addChild(a, alice.Token, root, secret, map[string]any{"via": onHS2, "order": "3"})
	addChild(a, alice.Token, root, denied, map[string]any{"via": onHS2, "order": "4"})
	addChild(b, bob.Token, sub, leaf, map[string]any{"via": onHS2, "suggested": true})
	addChild(b, bob.Token, sub, secret, map[string]any{"via": onHS2})
	addChild(b, bob.Token, sub, "!unknown:hs2.test", map[string]any{"via": onHS2})

	// hs1's client walks into hs2's rooms.
	r := a.MustDo(http.StatusOK, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(root)+"/hierarchy", alice.Token, nil)
	if got, want := roomIDsOf(r.JSON["rooms"]), []string{root, far, sub, leaf}; !slices.Equal(got, want) {
		t.Fatalf("hs1's hierarchy: %v, want %v: %s", got, want, r.Body)
	}
	list, _ := r.JSON["rooms"].([]any)
	if fc := list[1].(map[string]any); fc["name"] != "Far" || fc["topic"] != "On hs2" || fc["num_joined_members"] != 1.0 || fc["join_rule"] != "public" {
		t.Errorf("far's chunk: %v", fc)
	}
	if sc := list[2].(map[string]any); sc["room_type"] != "m.space" || len(sc["children_state"].([]any)) != 3 {
		t.Errorf("sub's chunk: %v", sc)
	}
	// room_summary of a room hs1 is not in, through the via servers; a
	// private one is not found.
	r = a.MustDo(http.StatusOK, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(far)+"?via=hs2.test", alice.Token, nil)
	if r.String("name") != "Far" || r.String("membership") != "leave" || r.String("room_id") != far {
		t.Errorf("room_summary of far: %s", r.Body)
	}
	if r := a.Do("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(secret)+"?via=hs2.test", alice.Token, nil); r.Status != http.StatusNotFound || r.Errcode() != "M_NOT_FOUND" {
		t.Errorf("room_summary of a private room: %d %s", r.Status, r.Body)
	}
	r = a.MustDo(http.StatusOK, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(root)+"/hierarchy?suggested_only=true", alice.Token, nil)
	if got, want := roomIDsOf(r.JSON["rooms"]), []string{root, sub, leaf}; !slices.Equal(got, want) {
		t.Errorf("suggested only: %v, want %v", got, want)
	}

	// hs2's endpoint, asked as hs1.
	key := a.SigningKey()
	path := func(roomID, query string) string {
		p := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
		if query != "" {
			p += "?" + query
		}
		return p
	}
	r = f.FedDo(b, key, "", "GET", path(sub, ""), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("federation hierarchy: %d %s", r.Status, r.Body)
	}
	room, _ := r.JSON["room"].(map[string]any)
	if room["room_id"] != sub || room["name"] != "Sub" || room["room_type"] != "m.space" || len(room["children_state"].([]any)) != 3 {
		t.Errorf("room: %v", room)
	}
	if got := roomIDsOf(r.JSON["children"]); !slices.Equal(got, []string{leaf}) {
		t.Errorf("children: %v: %s", got, r.Body)
	}
	if got, _ := r.JSON["inaccessible_children"].([]any); len(got) != 1 || got[0] != secret {
		t.Errorf("inaccessible_children: %v", got)
	}
	r = f.FedDo(b, key, "", "GET", path(sub, "suggested_only=true"), nil)
	if room, _ := r.JSON["room"].(map[string]any); r.Status != http.StatusOK || len(room["children_state"].([]any)) != 1 ||
		!slices.Equal(roomIDsOf(r.JSON["children"]), []string{leaf}) || len(r.JSON["inaccessible_children"].([]any)) != 0 {
		t.Errorf("suggested only: %d %s", r.Status, r.Body)
	}
	r = f.FedDo(b, key, "", "GET", path(far, ""), nil)
	if room, _ := r.JSON["room"].(map[string]any); r.Status != http.StatusOK || room["room_id"] != far || len(room["children_state"].([]any)) != 0 || len(r.JSON["children"].([]any)) != 0 {
		t.Errorf("a room that is not a space: %d %s", r.Status, r.Body)
	}

	for _, tt := range []struct {
		name, path string
		status     int
		code       string
	}{
		{"an unknown room", path("!nowhere:hs2.test", ""), 404, "M_NOT_FOUND"},
		{"a room hs1 may not see", path(secret, ""), 404, "M_NOT_FOUND"},
		{"a room whose ACL denies hs1", path(denied, ""), 403, "M_FORBIDDEN"},
		{"not a room ID", path("#alias:hs2.test", ""), 400, "M_INVALID_PARAM"},
		{"suggested_only not a boolean", path(sub, "suggested_only=yes"), 400, "M_INVALID_PARAM"},
	} {
		wantError(t, tt.name, f.FedDo(b, key, "", "GET", tt.path, nil), tt.status, tt.code)
	}
}
