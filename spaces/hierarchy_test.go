package spaces_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"homeserver/internal/testserver"
)

func hierarchyPath(roomID, query string) string {
	p := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/hierarchy"
	if query != "" {
		p += "?" + query
	}
	return p
}

// chunkIDs lists the room IDs of a hierarchy answer.
func chunkIDs(t *testing.T, r *testserver.Response) []string {
	t.Helper()
	rs, ok := r.JSON["rooms"].([]any)
	if !ok {
		t.Fatalf("no rooms: %s", r.Body)
	}
	out := []string{}
	for _, e := range rs {
		out = append(out, e.(map[string]any)["room_id"].(string))
	}
	return out
}

func chunk(r *testserver.Response, roomID string) map[string]any {
	rs, _ := r.JSON["rooms"].([]any)
	for _, e := range rs {
		if m := e.(map[string]any); m["room_id"] == roomID {
			return m
		}
	}
	return nil
}

func TestHierarchyEndpoint(t *testing.T) {
	srv := testserver.Start(t, "")
	name := srv.Config.ServerName
	alice := srv.Register("alice", "pw")
	bob := srv.Register("bob", "pw")

	space := map[string]any{"type": "m.space"}
	root := srv.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Root", "topic": "All of it", "creation_content": space})
	sub := srv.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Sub", "creation_content": space})
	a := srv.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "A"})
	b := srv.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "B", "initial_state": []any{
		map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
	}})
	private := srv.CreateRoom(alice, map[string]any{"preset": "private_chat", "name": "Private"})
	gone := srv.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Removed"})
	addChild := func(parent, child string, content map[string]any) {
		t.Helper()
		srv.MustDo(http.StatusOK, "PUT", testserver.RoomPath(parent, "/state/m.space.child/"+url.PathEscape(child)), alice.Token, content)
	}
	via := []string{name}
	// By order: sub ("a"), b ("b"), then private, gone (no order).
	addChild(root, b, map[string]any{"via": via, "order": "b", "suggested": true})
	addChild(root, sub, map[string]any{"via": via, "order": "a"})
	addChild(root, private, map[string]any{"via": via})
	addChild(root, gone, map[string]any{})
	addChild(sub, a, map[string]any{"via": via, "suggested": true})
	addChild(sub, root, map[string]any{"via": via}) // a loop
	srv.Join(bob, a)

	r := srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, ""), bob.Token, nil)
	if got, want := chunkIDs(t, r), []string{root, sub, a, b}; !slices.Equal(got, want) {
		t.Fatalf("bob's hierarchy: %v, want %v: %s", got, want, r.Body)
	}
	if r.String("next_batch") != "" {
		t.Errorf("next_batch on the only page: %s", r.Body)
	}
	rc := chunk(r, root)
	if rc["name"] != "Root" || rc["topic"] != "All of it" || rc["room_type"] != "m.space" || rc["join_rule"] != "public" ||
		rc["num_joined_members"] != 1.0 || rc["world_readable"] != false || rc["guest_can_join"] != false || rc["room_version"] == nil {
		t.Errorf("root's chunk: %v", rc)
	}
	var children []string
	for _, e := range rc["children_state"].([]any) {
		ev := e.(map[string]any)
		children = append(children, ev["state_key"].(string))
		if ev["type"] != "m.space.child" || ev["sender"] != alice.ID || ev["origin_server_ts"] == nil || ev["content"] == nil || ev["event_id"] != nil {
			t.Errorf("stripped child event: %v", ev)
		}
	}
	if want := []string{sub, b, private}; !slices.Equal(children, want) {
		t.Errorf("root's children_state: %v, want %v", children, want)
	}
	if ac := chunk(r, a); ac["num_joined_members"] != 2.0 || len(ac["children_state"].([]any)) != 0 || ac["room_type"] != nil {
		t.Errorf("a's chunk: %v", ac)
	}
	if bc := chunk(r, b); bc["encryption"] != "m.megolm.v1.aes-sha2" {
		t.Errorf("b's chunk: %v", bc)
	}

	// Alice is in the private room: she sees it.
	r = srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, ""), alice.Token, nil)
	if got, want := chunkIDs(t, r), []string{root, sub, a, b, private}; !slices.Equal(got, want) {
		t.Errorf("alice's hierarchy: %v, want %v", got, want)
	}

	for _, tt := range []struct{ query string }{{"suggested_only=true"}, {"suggested_only=true&max_depth=5"}} {
		r = srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, tt.query), bob.Token, nil)
		if got, want := chunkIDs(t, r), []string{root, b}; !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", tt.query, got, want)
		}
	}
	r = srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, "max_depth=1"), bob.Token, nil)
	if got, want := chunkIDs(t, r), []string{root, sub, b}; !slices.Equal(got, want) {
		t.Errorf("max_depth=1: %v, want %v", got, want)
	}
	r = srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, "max_depth=0"), bob.Token, nil)
	if got := chunkIDs(t, r); !slices.Equal(got, []string{root}) {
		t.Errorf("max_depth=0: %v", got)
	}

	// Pages of one room.
	var paged []string
	from := ""
	for range 10 {
		q := url.Values{"limit": {"1"}}
		if from != "" {
			q.Set("from", from)
		}
		r = srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, q.Encode()), bob.Token, nil)
		ids := chunkIDs(t, r)
		if len(ids) > 1 {
			t.Fatalf("page of %d rooms: %s", len(ids), r.Body)
		}
		paged = append(paged, ids...)
		if from = r.String("next_batch"); from == "" {
			break
		}
	}
	if want := []string{root, sub, a, b}; !slices.Equal(paged, want) {
		t.Errorf("paged: %v, want %v", paged, want)
	}
	next := srv.MustDo(http.StatusOK, "GET", hierarchyPath(root, "limit=1"), bob.Token, nil).String("next_batch")

	for _, tt := range []struct {
		name, room, query string
		status            int
		code              string
	}{
		{"limit 0", root, "limit=0", 400, "M_INVALID_PARAM"},
		{"limit not a number", root, "limit=many", 400, "M_INVALID_PARAM"},
		{"negative max_depth", root, "max_depth=-1", 400, "M_INVALID_PARAM"},
		{"suggested_only not a boolean", root, "suggested_only=maybe", 400, "M_INVALID_PARAM"},
		{"invalid from", root, "from=garbage", 400, "M_INVALID_PARAM"},
		{"suggested_only changed", root, "suggested_only=true&from=" + url.QueryEscape(next), 400, "M_INVALID_PARAM"},
		{"max_depth changed", root, "max_depth=1&from=" + url.QueryEscape(next), 400, "M_INVALID_PARAM"},
		{"another room's token", sub, "from=" + url.QueryEscape(next), 400, "M_INVALID_PARAM"},
		{"a root bob may not see", private, "", 403, "M_FORBIDDEN"},
		{"an unknown root", "!unknown:" + name, "", 403, "M_FORBIDDEN"},
	} {
		r := srv.Do("GET", hierarchyPath(tt.room, tt.query), bob.Token, nil)
		if r.Status != tt.status || r.Errcode() != tt.code {
			t.Errorf("%s: %d %s, want %d %s: %s", tt.name, r.Status, r.Errcode(), tt.status, tt.code, r.Body)
		}
	}
	if r := srv.Do("GET", hierarchyPath(root, ""), "", nil); r.Status != 401 || r.Errcode() != "M_MISSING_TOKEN" {
		t.Errorf("without a token: %d %s", r.Status, r.Body)
	}
}
