package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"homeserver/internal/testserver"
)

func TestAccountData(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	bob := s.Register("bob", "battery staple")
	global := v3 + "/user/" + url.PathEscape(alice.ID) + "/account_data/"
	room := "!room:test.local"
	inRoom := v3 + "/user/" + alice.ID + "/rooms/" + url.PathEscape(room) + "/account_data/"

	wantErr(t, s.Do("GET", global+"org.example.config", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	r := s.MustDo(http.StatusOK, "PUT", global+"org.example.config", alice.Token, map[string]any{"theme": "dark"})
	if string(r.Body) != "{}" {
		t.Fatalf("PUT answer: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", global+"org.example.config", alice.Token, map[string]any{"theme": "light", "n": 2})
	r = s.MustDo(http.StatusOK, "GET", global+"org.example.config", alice.Token, nil)
	if r.String("theme") != "light" || r.JSON["n"] != float64(2) || len(r.JSON) != 2 {
		t.Fatalf("GET: %s", r.Body)
	}

	// Room account data does not fall back to the global data, nor the reverse.
	wantErr(t, s.Do("GET", inRoom+"org.example.config", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "PUT", inRoom+"org.example.room", alice.Token, map[string]any{"pinned": true})
	r = s.MustDo(http.StatusOK, "GET", inRoom+"org.example.room", alice.Token, nil)
	if r.JSON["pinned"] != true {
		t.Fatalf("room GET: %s", r.Body)
	}
	wantErr(t, s.Do("GET", global+"org.example.room", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// Another user's account data, whether it exists or not.
	for _, p := range []string{global + "org.example.config", inRoom + "org.example.room", global + "org.example.none"} {
		wantErr(t, s.Do("GET", p, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, s.Do("PUT", p, bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	}
	wantErr(t, s.Do("GET", global+"x", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

	// Types the server manages.
	for _, typ := range []string{"m.fully_read", "m.push_rules"} {
		wantErr(t, s.Do("PUT", global+typ, alice.Token, map[string]any{}), http.StatusMethodNotAllowed, "M_BAD_JSON")
		wantErr(t, s.Do("PUT", inRoom+typ, alice.Token, map[string]any{"event_id": "$x"}), http.StatusMethodNotAllowed, "M_BAD_JSON")
	}

	// Bodies that are not JSON objects.
	wantErr(t, s.Do("PUT", global+"x", alice.Token, "not json"), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, s.Do("PUT", global+"x", alice.Token, ""), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, s.Do("PUT", global+"x", alice.Token, "[1]"), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("PUT", inRoom+"x", alice.Token, `"s"`), http.StatusBadRequest, "M_BAD_JSON")

	// Room IDs that are not room IDs.
	for _, bad := range []string{"@notaroomid:test.local", "notaroom", "!", url.PathEscape("!" + strings.Repeat("a", 300) + ":test.local")} {
		p := v3 + "/user/" + alice.ID + "/rooms/" + bad + "/account_data/x"
		wantErr(t, s.Do("GET", p, alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, s.Do("PUT", p, alice.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	// An empty room segment must not reach the global account data.
	wantErr(t, s.Do("PUT", v3+"/user/"+alice.ID+"/rooms//account_data/x", alice.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")

	// The legacy prefix, and a restart.
	s.MustDo(http.StatusOK, "PUT", "/_matrix/client/r0/user/"+alice.ID+"/account_data/org.example.r0", alice.Token, map[string]any{"k": "v"})
	s.Restart()
	r = s.MustDo(http.StatusOK, "GET", global+"org.example.r0", alice.Token, nil)
	if r.String("k") != "v" {
		t.Fatalf("after restart: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", inRoom+"org.example.room", alice.Token, nil)
	if r.JSON["pinned"] != true {
		t.Fatalf("room data after restart: %s", r.Body)
	}
}

func TestRoomTags(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	bob := s.Register("bob", "battery staple")
	room := url.PathEscape("!room:test.local")
	base := "/_matrix/client/v3/user/" + url.PathEscape(alice.ID) + "/rooms/" + room
	tags := base + "/tags"

	r := s.MustDo(http.StatusOK, "GET", tags, alice.Token, nil)
	if string(r.Body) != `{"tags":{}}` {
		t.Fatalf("no tags: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", tags+"/m.favourite", alice.Token, map[string]any{"order": 0.25})
	s.MustDo(http.StatusOK, "PUT", tags+"/u.work", alice.Token, map[string]any{})
	s.MustDo(http.StatusOK, "PUT", tags+"/u.edge", alice.Token, map[string]any{"order": 1})
	r = s.MustDo(http.StatusOK, "GET", tags, alice.Token, nil)
	got, _ := r.JSON["tags"].(map[string]any)
	if len(got) != 3 || got["m.favourite"].(map[string]any)["order"] != 0.25 || len(got["u.work"].(map[string]any)) != 0 {
		t.Fatalf("tags: %s", r.Body)
	}

	// Tags are the m.tag room account data, which is how /sync delivers them.
	r = s.MustDo(http.StatusOK, "GET", base+"/account_data/m.tag", alice.Token, nil)
	if tagged, _ := r.JSON["tags"].(map[string]any); len(tagged) != 3 {
		t.Fatalf("m.tag: %s", r.Body)
	}

	// order must be a number in [0, 1].
	wantErr(t, s.Do("PUT", tags+"/u.bad", alice.Token, map[string]any{"order": 1.5}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", tags+"/u.bad", alice.Token, map[string]any{"order": -0.1}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", tags+"/u.bad", alice.Token, map[string]any{"order": "first"}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("PUT", tags+"/u.bad", alice.Token, map[string]any{"order": nil}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("PUT", tags+"/u.bad", alice.Token, "nope"), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, s.Do("PUT", tags+"/"+strings.Repeat("t", 256), alice.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
	s.MustDo(http.StatusOK, "PUT", tags+"/"+strings.Repeat("t", 255), alice.Token, map[string]any{})
	s.MustDo(http.StatusOK, "DELETE", tags+"/"+strings.Repeat("t", 255), alice.Token, nil)

	// Others may neither read nor change them; room IDs are checked.
	wantErr(t, s.Do("GET", tags, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", tags+"/u.x", bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("DELETE", tags+"/u.work", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	bad := "/_matrix/client/v3/user/" + alice.ID + "/rooms/notaroom/tags"
	wantErr(t, s.Do("GET", bad, alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", bad+"/u.x", alice.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("DELETE", bad+"/u.x", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// Replacing a tag's content, removing tags (twice is fine).
	s.MustDo(http.StatusOK, "PUT", tags+"/m.favourite", alice.Token, map[string]any{"order": 0.5})
	s.MustDo(http.StatusOK, "DELETE", tags+"/u.work", alice.Token, nil)
	s.MustDo(http.StatusOK, "DELETE", tags+"/u.work", alice.Token, nil)
	s.MustDo(http.StatusOK, "DELETE", tags+"/u.edge", alice.Token, nil)
	s.Restart()
	r = s.MustDo(http.StatusOK, "GET", tags, alice.Token, nil)
	if string(r.Body) != `{"tags":{"m.favourite":{"order":0.5}}}` {
		t.Fatalf("tags after removal and restart: %s", r.Body)
	}
	// Another room's tags are separate.
	r = s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/user/"+alice.ID+"/rooms/!other:test.local/tags", alice.Token, nil)
	if string(r.Body) != `{"tags":{}}` {
		t.Fatalf("other room: %s", r.Body)
	}
}
