package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"homeserver/internal/testserver"
)

func presencePath(userID string) string {
	return v3 + "/presence/" + url.PathEscape(userID) + "/status"
}

func TestPresenceSetAndGet(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")

	// Never set: offline, with no activity to report.
	r := s.MustDo(http.StatusOK, "GET", presencePath(alice.ID), alice.Token, nil)
	if len(r.JSON) != 1 || r.String("presence") != "offline" {
		t.Fatalf("initial presence: %s", r.Body)
	}

	s.MustDo(http.StatusOK, "PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "online", "status_msg": "I am here."})
	r = s.MustDo(http.StatusOK, "GET", presencePath(alice.ID), alice.Token, nil)
	ago, isNum := r.JSON["last_active_ago"].(float64)
	if r.String("presence") != "online" || r.String("status_msg") != "I am here." || !isNum || ago < 0 || r.JSON["currently_active"] != true {
		t.Fatalf("after PUT online: %s", r.Body)
	}

	// Without status_msg the message stays; null clears it.
	s.MustDo(http.StatusOK, "PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "unavailable"})
	r = s.MustDo(http.StatusOK, "GET", presencePath(alice.ID), alice.Token, nil)
	if r.String("presence") != "unavailable" || r.String("status_msg") != "I am here." || r.JSON["currently_active"] != nil {
		t.Fatalf("after PUT unavailable: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "offline", "status_msg": nil})
	r = s.MustDo(http.StatusOK, "GET", "/_matrix/client/r0/presence/"+url.PathEscape(alice.ID)+"/status", alice.Token, nil)
	if r.String("presence") != "offline" || r.JSON["status_msg"] != nil {
		t.Fatalf("after PUT offline: %s", r.Body)
	}

	// Errors.
	wantErr(t, s.Do("PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "busy"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("PUT", presencePath(alice.ID), alice.Token, map[string]any{"status_msg": "no state"}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "online", "status_msg": 5}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("PUT", presencePath(alice.ID), alice.Token, "not json"), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, s.Do("PUT", presencePath(bob.ID), alice.Token, map[string]any{"presence": "online"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", presencePath("not-a-user"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", presencePath(alice.ID), "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

	// The last state survives a restart.
	s.MustDo(http.StatusOK, "PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "unavailable", "status_msg": "lunch"})
	s.Restart()
	r = s.MustDo(http.StatusOK, "GET", presencePath(alice.ID), alice.Token, nil)
	if r.String("presence") != "unavailable" || r.String("status_msg") != "lunch" {
		t.Fatalf("after restart: %s", r.Body)
	}
}

func TestPresenceVisibleToRoomMembersOnly(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	s.MustDo(http.StatusOK, "PUT", presencePath(alice.ID), alice.Token, map[string]any{"presence": "online", "status_msg": "hi"})

	// No shared room yet.
	wantErr(t, s.Do("GET", presencePath(alice.ID), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", presencePath("@nobody:test.local"), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// An invite is not enough; a join is.
	room := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{"invite": []string{bob.ID}}).String("room_id")
	wantErr(t, s.Do("GET", presencePath(alice.ID), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	r := s.MustDo(http.StatusOK, "GET", presencePath(alice.ID), bob.Token, nil)
	if r.String("presence") != "online" || r.String("status_msg") != "hi" {
		t.Fatalf("room member's view: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", presencePath(bob.ID), alice.Token, nil)
	if r.String("presence") != "offline" {
		t.Fatalf("bob never set presence: %s", r.Body)
	}

	// Leaving ends it.
	s.MustDo(http.StatusOK, "POST", v3+"/rooms/"+url.PathEscape(room)+"/leave", bob.Token, map[string]any{})
	wantErr(t, s.Do("GET", presencePath(alice.ID), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
}
