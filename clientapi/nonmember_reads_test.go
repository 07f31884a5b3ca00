package clientapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"homeserver/internal/testserver"
)

// nmReadsForbidden checks that u can read neither the room's state, nor its
// members, nor its history.
func nmReadsForbidden(t *testing.T, s *testserver.Server, u testserver.User, roomID, eventID string) {
	t.Helper()
	for _, path := range []string{
		rmRoom(roomID) + "/state",
		rmRoom(roomID) + "/state/m.room.name/",
		rmRoom(roomID) + "/members",
		rmRoom(roomID) + "/messages?dir=b",
	} {
		if r := s.Do("GET", path, u.Token, nil); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("%s GET %s: %d %q, want 403 M_FORBIDDEN", u.ID, path, r.Status, r.Errcode())
		}
	}
	if r := s.Do("GET", rmRoom(roomID)+"/event/"+url.PathEscape(eventID), u.Token, nil); r.Status != http.StatusNotFound {
		t.Errorf("%s GET /event: %d, want 404", u.ID, r.Status)
	}
}

// Users who were never joined see nothing of a room that is not world
// readable, whatever their membership; users who left or were banned after
// being joined see it as it was when their stay ended; /forget takes that
// away too (but not what world_readable shows anyone).
func TestStateReadsByNonMembers(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	banned := s.Register("banned", "pw")     // banned without ever joining
	rejecter := s.Register("rejecter", "pw") // invited, declined
	leaver := s.Register("leaver", "pw")
	kicked := s.Register("kicked", "pw") // joined, then banned

	room := s.CreatePublicRoom(alice)
	rmPutState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "Before"})
	s.Join(leaver, room)
	s.Join(kicked, room)
	secret := s.SendText(alice, room, "while they were here")

	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/ban", alice.Token, map[string]any{"user_id": banned.ID})
	rmInvite(t, s, alice, room, rejecter.ID)
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", rejecter.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", leaver.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/ban", alice.Token, map[string]any{"user_id": kicked.ID})

	rmPutState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "After"})
	later := s.SendText(alice, room, "after they left")

	nmReadsForbidden(t, s, banned, room, secret)
	nmReadsForbidden(t, s, rejecter, room, secret)

	for _, u := range []testserver.User{leaver, kicked} {
		if got := rmStateContent(t, s, u, room, "m.room.name", ""); got["name"] != "Before" {
			t.Errorf("%s reads name %v, want the one when they left", u.ID, got)
		}
		bodies := rmBodies(rmMessages(t, s, u, room, url.Values{"dir": {"b"}}).Chunk)
		if !slices.Contains(bodies, "while they were here") || slices.Contains(bodies, "after they left") {
			t.Errorf("%s reads history %v", u.ID, bodies)
		}
		s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/members", u.Token, nil)
	}
	s.MustDo(http.StatusNotFound, "GET", rmRoom(room)+"/event/"+url.PathEscape(later), leaver.Token, nil)

	// Forgetting hides the room from the user altogether.
	for _, u := range []testserver.User{leaver, kicked} {
		s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/forget", u.Token, map[string]any{})
		nmReadsForbidden(t, s, u, room, secret)
	}

	// Unless the room is world readable: then they read it as anyone does,
	// now.
	rmPutState(t, s, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
	for _, u := range []testserver.User{leaver, banned} {
		if got := rmStateContent(t, s, u, room, "m.room.name", ""); got["name"] != "After" {
			t.Errorf("%s reads name %v of a world-readable room", u.ID, got)
		}
	}

	// Coming back undoes the forgetting.
	s.Join(leaver, room)
	s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(secret), leaver.Token, nil)
}
