package clientapi_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const userDirPath = "/_matrix/client/v3/user_directory/search"

// dirSearch searches as u and returns the user IDs found and limited.
func dirSearch(t *testing.T, s *testserver.Server, u testserver.User, body map[string]any) ([]string, bool, []any) {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", userDirPath, u.Token, body)
	results, _ := r.JSON["results"].([]any)
	var ids []string
	for _, x := range results {
		m, _ := x.(map[string]any)
		id, _ := m["user_id"].(string)
		ids = append(ids, id)
	}
	limited, ok := r.JSON["limited"].(bool)
	if !ok {
		t.Fatalf("no boolean limited in %s", r.Body)
	}
	return ids, limited, results
}

// waitFound waits for the directory's reader to catch up until searching
// term as u finds (or, with want false, no longer finds) userID.
func waitFound(t *testing.T, s *testserver.Server, u testserver.User, term, userID string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, _, _ := dirSearch(t, s, u, map[string]any{"search_term": term})
		if slices.Contains(ids, userID) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("searching %q as %s: found %v; want %s found=%v", term, u.ID, ids, userID, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func setDisplayName(t *testing.T, s *testserver.Server, u testserver.User, name string) {
	t.Helper()
	s.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+u.ID+"/displayname", u.Token, map[string]any{"displayname": name})
}

func TestUserDirectoryVisibility(t *testing.T) {
	s := testserver.Start(t, "")
	searcher := s.Register("searcher", "pw-searcher-1")
	alice := s.Register("alice", "pw-alice-1")
	bob := s.Register("bob", "pw-bob-1")
	carol := s.Register("carol", "pw-carol-1")
	loner := s.Register("loner", "pw-loner-1")
	setDisplayName(t, s, alice, "Alice Smith")

	// Shared private room: alice is found by searcher.
	room := s.CreateRoom(searcher, map[string]any{"preset": "private_chat", "invite": []string{alice.ID}})
	s.Join(alice, room)
	waitFound(t, s, searcher, "ali", alice.ID, true)

	// Public room searcher is not in: bob is found.
	s.CreatePublicRoom(bob)
	waitFound(t, s, searcher, "bob", bob.ID, true)

	// Private room not shared: carol is not found, even once her room is
	// indexed (bob's later public room proves the reader got past it).
	s.CreateRoom(carol, map[string]any{"preset": "private_chat"})
	s.CreatePublicRoom(bob)
	waitFound(t, s, searcher, "bob", bob.ID, true)
	if ids, _, _ := dirSearch(t, s, searcher, map[string]any{"search_term": "carol"}); len(ids) != 0 {
		t.Fatalf("carol, in no shared or public room, was found: %v", ids)
	}
	// Nor is a user in no room.
	if ids, _, _ := dirSearch(t, s, searcher, map[string]any{"search_term": "loner"}); len(ids) != 0 {
		t.Fatalf("a user in no room was found: %v", ids)
	}
	_ = loner

	// Leaving the only shared room hides alice at once.
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/leave"), alice.Token, map[string]any{})
	waitFound(t, s, searcher, "ali", alice.ID, false)
}

func TestUserDirectorySearchAllUsers(t *testing.T) {
	s := testserver.Start(t, "user_directory:\n  search_all_users: true\n")
	searcher := s.Register("searcher", "pw-searcher-1")
	loner := s.Register("loner", "pw-loner-1")
	// A user in no room, found by localpart and, after a change, by the
	// new display name only.
	waitFound(t, s, searcher, "lon", loner.ID, true)
	setDisplayName(t, s, loner, "Zebediah Quux")
	waitFound(t, s, searcher, "zeb", loner.ID, true)
	setDisplayName(t, s, loner, "Someone Else")
	waitFound(t, s, searcher, "zeb", loner.ID, false)
	waitFound(t, s, searcher, "else", loner.ID, true)
}

func TestUserDirectoryMatching(t *testing.T) {
	s := testserver.Start(t, "")
	searcher := s.Register("searcher", "pw-searcher-1")
	alice := s.Register("alice.jones", "pw-alice-1")
	other := s.Register("otheruser", "pw-other-1")
	room := s.CreateRoom(searcher, map[string]any{"preset": "private_chat", "invite": []string{alice.ID, other.ID}})
	s.Join(alice, room)
	s.Join(other, room)
	setDisplayName(t, s, alice, "Alice Smith")
	setDisplayName(t, s, other, "Malice Person")
	waitFound(t, s, searcher, "smi", alice.ID, true)

	for _, c := range []struct {
		term string
		want []string
	}{
		{"ali", []string{alice.ID}},          // localpart and display-name word prefix, not "malice"
		{"ALI", []string{alice.ID}},          // case-insensitive
		{"smi", []string{alice.ID}},          // second word of the display name
		{"alice smith", []string{alice.ID}},  // every word must match
		{"alice person", nil},                // words of two users
		{"jon", []string{alice.ID}},          // a word of the localpart
		{"@alice.jones", []string{alice.ID}}, // the user ID as typed
		{"malice", []string{other.ID}},       // whole word
		{"xyz", nil},                         // nothing
		{"%", nil},                           // no word at all, no wildcard
	} {
		ids, _, _ := dirSearch(t, s, searcher, map[string]any{"search_term": c.term})
		if !slices.Equal(ids, c.want) {
			t.Errorf("search %q found %v, want %v", c.term, ids, c.want)
		}
	}
	_, _, results := dirSearch(t, s, searcher, map[string]any{"search_term": "alice"})
	if m, _ := results[0].(map[string]any); m["display_name"] != "Alice Smith" {
		t.Errorf("result %v, want display_name Alice Smith", m)
	}
	// A display name change is found by the new name, not the old.
	setDisplayName(t, s, alice, "Alicia Keyes")
	waitFound(t, s, searcher, "keyes", alice.ID, true)
	waitFound(t, s, searcher, "smith", alice.ID, false)
}

func TestUserDirectoryLimit(t *testing.T) {
	s := testserver.Start(t, "")
	searcher := s.Register("searcher", "pw-searcher-1")
	room := s.CreateRoom(searcher, map[string]any{"preset": "public_chat"})
	var last string
	for _, lp := range []string{"member1", "member2", "member3"} {
		u := s.Register(lp, "pw-"+lp+"-1")
		s.Join(u, room)
		last = u.ID
	}
	waitFound(t, s, searcher, "member", last, true)
	ids, limited, _ := dirSearch(t, s, searcher, map[string]any{"search_term": "member", "limit": 2})
	if len(ids) != 2 || !limited {
		t.Fatalf("limit 2 found %v limited=%v; want 2 and limited", ids, limited)
	}
	ids, limited, _ = dirSearch(t, s, searcher, map[string]any{"search_term": "member"})
	if len(ids) != 3 || limited {
		t.Fatalf("default limit found %v limited=%v; want 3, not limited", ids, limited)
	}
}

func TestUserDirectoryBadInput(t *testing.T) {
	s := testserver.Start(t, "")
	u := s.Register("searcher", "pw-searcher-1")
	for _, c := range []struct {
		body any
		code string
	}{
		{map[string]any{}, "M_MISSING_PARAM"},
		{map[string]any{"search_term": 5}, "M_BAD_JSON"},
		{map[string]any{"search_term": "a", "limit": "ten"}, "M_BAD_JSON"},
		{map[string]any{"search_term": "a", "limit": 1.5}, "M_BAD_JSON"},
		{map[string]any{"search_term": "a", "limit": -1}, "M_INVALID_PARAM"},
		{"not json", "M_NOT_JSON"},
	} {
		r := s.Do("POST", userDirPath, u.Token, c.body)
		if r.Status != http.StatusBadRequest || r.Errcode() != c.code {
			t.Errorf("body %v: %d %s, want 400 %s", c.body, r.Status, r.Body, c.code)
		}
	}
	if r := s.Do("POST", userDirPath, "", map[string]any{"search_term": "a"}); r.Status != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", r.Status)
	}
}

// Application services' users (their exclusive namespace and their
// sender) and deactivated users are never listed, as in Synapse.
func TestUserDirectoryExcludes(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(reg, []byte("id: bridge\nurl: http://127.0.0.1:9\nas_token: as-udir\nhs_token: hs-udir\n"+
		"sender_localpart: bridgebot\nnamespaces:\n  users: [{exclusive: true, regex: '@bridge_.*'}]\n  aliases: []\n  rooms: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testserver.Start(t, "user_directory:\n  search_all_users: true\napp_service_config_files: ["+reg+"]\n")
	searcher := s.Register("searcher", "pw-searcher-1")
	bridged := s.MustDo(http.StatusOK, "POST", v3+"/register", "as-udir", map[string]any{
		"type": "m.login.application_service", "username": "bridge_alice",
	}).String("user_id")
	room := s.CreatePublicRoom(searcher)
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/join")+"?user_id="+url.QueryEscape(bridged), "as-udir", map[string]any{})
	gone := s.Register("bridgeless", "pw-bridgeless-1")
	waitFound(t, s, searcher, "bridgeless", gone.ID, true)
	if ids, _, _ := dirSearch(t, s, searcher, map[string]any{"search_term": "bridge"}); !slices.Equal(ids, []string{gone.ID}) {
		t.Fatalf("searching bridge found %v, want only %s", ids, gone.ID)
	}

	first := s.MustDo(http.StatusUnauthorized, "POST", v3+"/account/deactivate", gone.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", v3+"/account/deactivate", gone.Token, map[string]any{
		"auth": passwordAuth(first.String("session"), "bridgeless", "pw-bridgeless-1"),
	})
	waitFound(t, s, searcher, "bridgeless", gone.ID, false)
}
