package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"homeserver/internal/testserver"
)

// Behaviours once found to differ from the spec or Synapse; each case
// names what is expected.

func TestFilterRefusesMalformedIDs(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	room := s.CreateRoom(alice, map[string]any{})
	filterPath := v3 + "/user/" + url.PathEscape(alice.ID) + "/filter"

	for name, f := range map[string]string{
		"room.rooms":               `{"room":{"rooms":["notaroom"]}}`,
		"room.not_rooms":           `{"room":{"not_rooms":["#alias:test.local"]}}`,
		"timeline.senders":         `{"room":{"timeline":{"senders":["alice"]}}}`,
		"timeline.not_senders":     `{"room":{"timeline":{"not_senders":["@nodomain"]}}}`,
		"state.rooms":              `{"room":{"state":{"rooms":["room"]}}}`,
		"ephemeral.not_rooms":      `{"room":{"ephemeral":{"not_rooms":["$event"]}}}`,
		"presence.senders":         `{"presence":{"senders":["bob"]}}`,
		"account_data.not_senders": `{"account_data":{"not_senders":["!room:test.local"]}}`,
	} {
		t.Run(name, func(t *testing.T) {
			var body map[string]any
			if err := json.Unmarshal([]byte(f), &body); err != nil {
				t.Fatal(err)
			}
			wantErr(t, s.Do("POST", filterPath, alice.Token, body), http.StatusBadRequest, "M_BAD_JSON")
			wantErr(t, s.Do("GET", v3+"/sync?"+url.Values{"filter": {f}}.Encode(), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		})
	}
	// Well-formed IDs pass, rooms of room version 12 (without a server
	// part) included.
	s.MustDo(http.StatusOK, "POST", filterPath, alice.Token, map[string]any{
		"room": map[string]any{"rooms": []string{room, "!hashonly"}, "timeline": map[string]any{"senders": []string{alice.ID}}},
	})
	// /messages reads the same RoomEventFilter.
	q := url.Values{"dir": {"b"}, "filter": {`{"senders":["alice"]}`}}
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages?"+q.Encode(), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	q.Set("filter", `{"not_rooms":["nope"]}`)
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages?"+q.Encode(), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

// cfCreateEvent finds the m.room.create event in a list of events.
func cfCreateEvent(t *testing.T, evs []map[string]any) map[string]any {
	t.Helper()
	for _, e := range evs {
		if e["type"] == "m.room.create" {
			return e
		}
	}
	t.Fatalf("no m.room.create in %v", evs)
	return nil
}

func TestRoomVersion12Conformance(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	carol := s.Register("carol", "pw")
	room := s.CreateRoom(alice, map[string]any{"room_version": "12"})

	t.Run("create event as state", func(t *testing.T) {
		// A second create event is a malformed request, not an auth failure.
		wantErr(t, s.Do("PUT", rmRoom(room)+"/state/m.room.create/", alice.Token, map[string]any{"room_version": "12"}),
			http.StatusBadRequest, "M_BAD_JSON")
	})

	t.Run("creators in power_level_content_override", func(t *testing.T) {
		// Creators may not be listed in the power levels: refused before
		// any room is made.
		wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{
			"room_version":                 "12",
			"power_level_content_override": map[string]any{"users": map[string]any{alice.ID: 100}},
		}), http.StatusBadRequest, "M_BAD_JSON")
		wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{
			"room_version":                 "12",
			"creation_content":             map[string]any{"additional_creators": []string{bob.ID}},
			"power_level_content_override": map[string]any{"users": map[string]any{bob.ID: 50}},
		}), http.StatusBadRequest, "M_BAD_JSON")
		// Other users may be listed.
		s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{
			"room_version":                 "12",
			"power_level_content_override": map[string]any{"users": map[string]any{bob.ID: 50}},
		})
	})

	t.Run("create event room_id", func(t *testing.T) {
		// The create event's PDU has no room_id, but clients get one.
		var state []map[string]any
		if err := json.Unmarshal(s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state", alice.Token, nil).Body, &state); err != nil {
			t.Fatal(err)
		}
		if create := cfCreateEvent(t, state); create["room_id"] != room {
			t.Fatalf("create event served without its room_id: %v", create)
		}
	})

	t.Run("upgrade predecessor", func(t *testing.T) {
		// An upgrade to v12 links the predecessor by room ID alone.
		old := s.CreateRoom(alice, map[string]any{"room_version": "11"})
		repl := s.MustDo(http.StatusOK, "POST", rmRoom(old)+"/upgrade", alice.Token, map[string]any{"new_version": "12"}).String("replacement_room")
		pred, _ := rmStateContent(t, s, alice, repl, "m.room.create", "")["predecessor"].(map[string]any)
		if pred["room_id"] != old {
			t.Fatalf("predecessor: %v", pred)
		}
		if _, has := pred["event_id"]; has {
			t.Fatalf("v12 predecessor carries event_id: %v", pred)
		}
	})

	t.Run("stripped create event", func(t *testing.T) {
		// Invitees and knockers get the full create event in their stripped
		// state, to check the room ID against.
		rmInvite(t, s, alice, room, bob.ID)
		rmPutState(t, s, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": "knock"})
		s.MustDo(http.StatusOK, "POST", v3+"/knock/"+url.PathEscape(room), carol.Token, map[string]any{})
		for _, c := range []struct {
			user    testserver.User
			section string
			key     string
		}{{bob, "invite", "invite_state"}, {carol, "knock", "knock_state"}} {
			var resp struct {
				Rooms map[string]map[string]map[string]json.RawMessage `json:"rooms"`
			}
			if err := json.Unmarshal(s.MustDo(http.StatusOK, "GET", v3+"/sync", c.user.Token, nil).Body, &resp); err != nil {
				t.Fatal(err)
			}
			var st struct {
				Events []map[string]any `json:"events"`
			}
			if err := json.Unmarshal(resp.Rooms[c.section][room][c.key], &st); err != nil {
				t.Fatalf("%s: %v", c.key, err)
			}
			evs := st.Events
			create := cfCreateEvent(t, evs)
			for _, k := range []string{"hashes", "signatures", "auth_events", "prev_events", "depth", "origin_server_ts"} {
				if _, ok := create[k]; !ok {
					t.Errorf("%s: create event is not the full event (no %s): %v", c.key, k, create)
				}
			}
			// The other stripped events stay stripped.
			for _, e := range evs {
				if e["type"] != "m.room.create" {
					if _, ok := e["hashes"]; ok {
						t.Errorf("%s: %v is not stripped", c.key, e)
					}
				}
			}
		}
	})
}

func TestErrorCodesAsSynapse(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")

	t.Run("device deletion authenticated as another user", func(t *testing.T) {
		session := s.MustDo(http.StatusUnauthorized, "DELETE", v3+"/devices/"+url.PathEscape(alice.DeviceID), alice.Token,
			map[string]any{}).String("session")
		r := s.Do("DELETE", v3+"/devices/"+url.PathEscape(alice.DeviceID), alice.Token, map[string]any{
			"auth": passwordAuth(session, bob.ID, "pw"),
		})
		wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
		s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", alice.Token, nil)
	})

	t.Run("messages checks access before parameters", func(t *testing.T) {
		room := s.CreatePublicRoom(alice)
		s.Join(bob, room)
		s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", bob.Token, map[string]any{})
		s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/forget", bob.Token, nil)
		wantErr(t, s.Do("GET", rmRoom(room)+"/messages", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=x&limit=-1", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, s.Do("GET", rmRoom("!unknown:test.local")+"/messages", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		// A member still has the parameters checked.
		wantErr(t, s.Do("GET", rmRoom(room)+"/messages", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("writes to an unknown room answer as reads do", func(t *testing.T) {
		unknown := rmRoom("!unknown:test.local")
		wantErr(t, s.Do("GET", unknown+"/state", alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, s.Do("PUT", unknown+"/send/m.room.message/"+rmNextTxn(), alice.Token, map[string]any{"body": "x"}),
			http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, s.Do("PUT", unknown+"/state/m.room.topic/", alice.Token, map[string]any{"topic": "x"}),
			http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, s.Do("PUT", unknown+"/redact/"+url.PathEscape("$e")+"/"+rmNextTxn(), alice.Token, map[string]any{}),
			http.StatusForbidden, "M_FORBIDDEN")
	})

	t.Run("avatar_url need not be mxc", func(t *testing.T) {
		path := v3 + "/profile/" + url.PathEscape(alice.ID) + "/avatar_url"
		if r := s.Do("PUT", path, alice.Token, map[string]any{"avatar_url": "https://example.org/me.png"}); r.Status != http.StatusOK {
			t.Fatalf("PUT avatar_url: %d %s", r.Status, r.Body)
		}
		if got := s.MustDo(http.StatusOK, "GET", path, alice.Token, nil).String("avatar_url"); got != "https://example.org/me.png" {
			t.Fatalf("avatar_url: %q", got)
		}
	})
}
