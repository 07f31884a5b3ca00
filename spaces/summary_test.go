package spaces_test

import (
	"net/http"
	"net/url"
	"testing"

	"homeserver/internal/testserver"
)

func summaryPath(roomIDOrAlias string) string {
	return "/_matrix/client/v1/room_summary/" + url.PathEscape(roomIDOrAlias)
}

// GET /room_summary describes rooms the user may see in a hierarchy, by ID
// or alias, with their membership; other rooms are not found, alike.
func TestRoomSummary(t *testing.T) {
	srv := testserver.Start(t, "")
	alice := srv.Register("alice", "pw")
	bob := srv.Register("bob", "pw")
	public := srv.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Lobby", "topic": "Hi", "room_alias_name": "lobby"})
	private := srv.CreateRoom(alice, map[string]any{"preset": "private_chat", "name": "Secret", "initial_state": []any{
		map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
	}})

	for _, target := range []string{public, "#lobby:" + srv.Config.ServerName} {
		r := srv.MustDo(http.StatusOK, "GET", summaryPath(target), bob.Token, nil)
		if r.String("room_id") != public || r.String("name") != "Lobby" || r.String("topic") != "Hi" || r.String("join_rule") != "public" ||
			r.String("membership") != "leave" || r.JSON["num_joined_members"] != 1.0 || r.String("room_version") == "" {
			t.Errorf("summary of %s for bob: %s", target, r.Body)
		}
		if _, has := r.JSON["children_state"]; has {
			t.Errorf("summary carries children_state: %s", r.Body)
		}
	}
	r := srv.MustDo(http.StatusOK, "GET", summaryPath(private), alice.Token, nil)
	if r.String("membership") != "join" || r.String("encryption") != "m.megolm.v1.aes-sha2" || r.String("join_rule") != "invite" {
		t.Errorf("summary of the private room for alice: %s", r.Body)
	}
	for _, e := range []struct {
		target, errcode string
		status          int
	}{
		{private, "M_NOT_FOUND", http.StatusNotFound}, // bob may not see it
		{"!nowhere:" + srv.Config.ServerName, "M_NOT_FOUND", http.StatusNotFound},
		{"#nowhere:" + srv.Config.ServerName, "M_NOT_FOUND", http.StatusNotFound},
		{"lobby", "M_INVALID_PARAM", http.StatusBadRequest},
	} {
		if r := srv.Do("GET", summaryPath(e.target), bob.Token, nil); r.Status != e.status || r.Errcode() != e.errcode {
			t.Errorf("summary of %q: %d %s, want %d %s", e.target, r.Status, r.Body, e.status, e.errcode)
		}
	}
	if r := srv.Do("GET", summaryPath(public), "", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("without a token: %d %s", r.Status, r.Body)
	}
}
