package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"homeserver/internal/testserver"
)

// Helpers of the room tests; their names start with rm so as not to clash
// with other test files of the package.

// rmTxn makes every transaction ID of a test run unique.
var rmTxn atomic.Int64

func rmNextTxn() string { return "txn" + strconv.FormatInt(rmTxn.Add(1), 10) }

// rmRoom is the path prefix of a room's endpoints.
func rmRoom(roomID string) string { return v3 + "/rooms/" + url.PathEscape(roomID) }

// rmPutState sets a state event; key is put in the path percent-encoded.
func rmPutState(t *testing.T, s *testserver.Server, u testserver.User, roomID, eventType, key string, content any) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "PUT", rmRoom(roomID)+"/state/"+url.PathEscape(eventType)+"/"+url.PathEscape(key), u.Token, content)
	return r.String("event_id")
}

// rmStateContent returns the content of a state event as u reads it.
func rmStateContent(t *testing.T, s *testserver.Server, u testserver.User, roomID, eventType, key string) map[string]any {
	t.Helper()
	return s.MustDo(http.StatusOK, "GET", rmRoom(roomID)+"/state/"+url.PathEscape(eventType)+"/"+url.PathEscape(key), u.Token, nil).JSON
}

func rmInvite(t *testing.T, s *testserver.Server, u testserver.User, roomID, target string) {
	t.Helper()
	s.MustDo(http.StatusOK, "POST", rmRoom(roomID)+"/invite", u.Token, map[string]any{"user_id": target})
}

// rmMessagesPage is one /messages answer.
type rmMessagesPage struct {
	Chunk []rmEvent       `json:"chunk"`
	Start string          `json:"start"`
	End   string          `json:"end"`
	State []rmEvent       `json:"state"`
	Raw   json.RawMessage `json:"-"`
}

// rmEvent is a client-format event.
type rmEvent struct {
	EventID  string         `json:"event_id"`
	Type     string         `json:"type"`
	Sender   string         `json:"sender"`
	StateKey *string        `json:"state_key"`
	Redacts  string         `json:"redacts"`
	Content  map[string]any `json:"content"`
	Unsigned map[string]any `json:"unsigned"`
}

func (e rmEvent) body() string { s, _ := e.Content["body"].(string); return s }

func rmMessages(t *testing.T, s *testserver.Server, u testserver.User, roomID string, q url.Values) rmMessagesPage {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", rmRoom(roomID)+"/messages?"+q.Encode(), u.Token, nil)
	var p rmMessagesPage
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("/messages: %v: %s", err, r.Body)
	}
	p.Raw = r.Body
	return p
}

// rmBodies lists the bodies of the messages of a chunk, in order.
func rmBodies(evs []rmEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

// rmAllBodies reads every message u can see, newest first.
func rmAllBodies(t *testing.T, s *testserver.Server, u testserver.User, roomID string) []string {
	t.Helper()
	return rmBodies(rmMessages(t, s, u, roomID, url.Values{"dir": {"b"}, "limit": {"1000"}}).Chunk)
}

func rmEventOf(t *testing.T, r *testserver.Response) rmEvent {
	t.Helper()
	var e rmEvent
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatalf("event: %v: %s", err, r.Body)
	}
	return e
}

func rmUsers(s *testserver.Server, names ...string) []testserver.User {
	out := make([]testserver.User, len(names))
	for i, n := range names {
		out[i] = s.Register(n, "password "+n)
	}
	return out
}

func TestCreateRoomPresets(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	for _, c := range []struct {
		preset, joinRule, visibility, guest string
	}{
		{"private_chat", "invite", "shared", "can_join"},
		{"trusted_private_chat", "invite", "shared", "can_join"},
		{"public_chat", "public", "shared", "forbidden"},
	} {
		t.Run(c.preset, func(t *testing.T) {
			room := s.CreateRoom(alice, map[string]any{"preset": c.preset, "invite": []string{bob.ID}})
			if got := rmStateContent(t, s, alice, room, "m.room.join_rules", "")["join_rule"]; got != c.joinRule {
				t.Errorf("join_rule %v, want %s", got, c.joinRule)
			}
			if got := rmStateContent(t, s, alice, room, "m.room.history_visibility", "")["history_visibility"]; got != c.visibility {
				t.Errorf("history_visibility %v, want %s", got, c.visibility)
			}
			if got := rmStateContent(t, s, alice, room, "m.room.guest_access", "")["guest_access"]; got != c.guest {
				t.Errorf("guest_access %v, want %s", got, c.guest)
			}
			pl := rmStateContent(t, s, alice, room, "m.room.power_levels", "")
			users, _ := pl["users"].(map[string]any)
			if users[alice.ID] != float64(100) {
				t.Errorf("creator's power %v, want 100: %v", users[alice.ID], pl)
			}
			// trusted_private_chat gives invitees the creator's power.
			wantBob := any(nil)
			if c.preset == "trusted_private_chat" {
				wantBob = float64(100)
			}
			if users[bob.ID] != wantBob {
				t.Errorf("invitee's power %v, want %v", users[bob.ID], wantBob)
			}
			if got := rmStateContent(t, s, alice, room, "m.room.member", bob.ID)["membership"]; got != "invite" {
				t.Errorf("bob's membership %v, want invite", got)
			}
		})
	}
	// Without a preset, visibility decides: public → public_chat.
	room := s.CreateRoom(alice, map[string]any{"visibility": "public"})
	if got := rmStateContent(t, s, alice, room, "m.room.join_rules", "")["join_rule"]; got != "public" {
		t.Errorf("visibility public: join_rule %v, want public", got)
	}
	room = s.CreateRoom(alice, nil)
	if got := rmStateContent(t, s, alice, room, "m.room.join_rules", "")["join_rule"]; got != "invite" {
		t.Errorf("default: join_rule %v, want invite", got)
	}
}

func TestCreateRoomOptions(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{
		"preset":          "public_chat",
		"name":            "The Room",
		"topic":           "Things",
		"room_alias_name": "things",
		"invite":          []string{bob.ID},
		"is_direct":       true,
		"initial_state": []map[string]any{
			{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}},
			{"type": "m.custom", "state_key": "k", "content": map[string]any{"v": 1}},
		},
		"power_level_content_override": map[string]any{"events_default": 20, "invite": 10},
		"creation_content":             map[string]any{"m.federate": false, "type": "m.custom.room"},
	})
	if got := rmStateContent(t, s, alice, room, "m.room.name", ""); got["name"] != "The Room" {
		t.Errorf("name: %v", got)
	}
	if got := rmStateContent(t, s, alice, room, "m.room.topic", ""); got["topic"] != "Things" {
		t.Errorf("topic: %v", got)
	}
	alias := "#things:" + testserver.ServerName
	if got := rmStateContent(t, s, alice, room, "m.room.canonical_alias", ""); got["alias"] != alias {
		t.Errorf("canonical alias: %v", got)
	}
	dir := s.MustDo(http.StatusOK, "GET", v3+"/directory/room/"+url.PathEscape(alias), "", nil)
	if dir.String("room_id") != room {
		t.Errorf("directory: %s", dir.Body)
	}
	// initial_state replaced the preset's history visibility, and sets
	// other state.
	if got := rmStateContent(t, s, alice, room, "m.room.history_visibility", ""); got["history_visibility"] != "joined" {
		t.Errorf("history_visibility: %v", got)
	}
	if got := rmStateContent(t, s, alice, room, "m.custom", "k"); got["v"] != float64(1) {
		t.Errorf("m.custom: %v", got)
	}
	// The preset's history visibility event was not sent at all.
	st := s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state", alice.Token, nil)
	var state []rmEvent
	if err := json.Unmarshal(st.Body, &state); err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, e := range state {
		types[e.Type]++
		if e.Type == "m.room.history_visibility" && e.Unsigned["prev_content"] != nil {
			t.Errorf("history visibility replaced an earlier one: %v", e.Unsigned)
		}
	}
	if types["m.room.member"] != 2 || types["m.room.create"] != 1 || types["m.room.power_levels"] != 1 {
		t.Errorf("state types: %v", types)
	}
	pl := rmStateContent(t, s, alice, room, "m.room.power_levels", "")
	if pl["events_default"] != float64(20) || pl["invite"] != float64(10) || pl["state_default"] != float64(50) {
		t.Errorf("power_level_content_override: %v", pl)
	}
	create := rmStateContent(t, s, alice, room, "m.room.create", "")
	if create["m.federate"] != false || create["type"] != "m.custom.room" || create["room_version"] != "10" || create["creator"] != alice.ID {
		t.Errorf("creation_content: %v", create)
	}
	inv := rmStateContent(t, s, alice, room, "m.room.member", bob.ID)
	if inv["membership"] != "invite" || inv["is_direct"] != true {
		t.Errorf("direct invite: %v", inv)
	}
	// bob is invited: the room is in none of his joined rooms yet; joining
	// through the alias works.
	r := s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(alias), bob.Token, nil)
	if r.String("room_id") != room {
		t.Errorf("join by alias: %s", r.Body)
	}
	// Only the creator is above events_default 20.
	wantErr(t, s.Do("PUT", rmRoom(room)+"/send/m.room.message/"+rmNextTxn(), bob.Token, map[string]any{"body": "x"}), http.StatusForbidden, "M_FORBIDDEN")
}

func TestCreateRoomVersions(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	for v := 1; v <= 12; v++ {
		version := strconv.Itoa(v)
		room := s.CreateRoom(alice, map[string]any{"room_version": version, "name": "v" + version})
		create := rmStateContent(t, s, alice, room, "m.room.create", "")
		if create["room_version"] != version {
			t.Errorf("v%s: create content %v", version, create)
		}
		// The creator is in content until v11, which drops it.
		if wantCreator := v <= 10; (create["creator"] == alice.ID) != wantCreator {
			t.Errorf("v%s: creator in create content: %v", version, create)
		}
		s.SendText(alice, room, "hello v"+version)
		if got := rmAllBodies(t, s, alice, room); !slices.Equal(got, []string{"hello v" + version}) {
			t.Errorf("v%s: messages %v", version, got)
		}
	}
	for _, bad := range []string{"13", "foo"} {
		r := s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"room_version": bad})
		wantErr(t, r, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	}
	r := s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"room_version": 10})
	wantErr(t, r, http.StatusBadRequest, "M_BAD_JSON")
}

func TestCreateRoomErrors(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	s.CreateRoom(alice, map[string]any{"room_alias_name": "taken"})
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"room_alias_name": "taken"}), http.StatusBadRequest, "M_ROOM_IN_USE")
	for name, body := range map[string]any{
		"name not a string":       `{"name": 5}`,
		"topic not a string":      `{"topic": ["x"]}`,
		"invite not a list":       `{"invite": "@bob:test.local"}`,
		"invite not strings":      `{"invite": [1]}`,
		"preset not a string":     `{"preset": true}`,
		"initial_state not list":  `{"initial_state": {}}`,
		"creation_content list":   `{"creation_content": []}`,
		"is_direct not a boolean": `{"is_direct": "yes"}`,
		"power override not obj":  `{"power_level_content_override": 3}`,
		"body not an object":      `[]`,
	} {
		t.Run(name, func(t *testing.T) {
			wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, body), http.StatusBadRequest, "M_BAD_JSON")
		})
	}
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, "{not json"), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"initial_state": []map[string]any{{"type": "m.x", "content": map[string]any{"f": 1.5}}}}),
		http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"visibility": "secret"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"preset": "party"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"room_alias_name": "a:b"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"invite": []string{"not-a-user"}}), http.StatusBadRequest, "M_INVALID_PARAM")
	// Invitees who cannot be invited: nothing is created.
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"invite": []string{"@ghost:test.local"}}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"invite": []string{"@bob:elsewhere.example"}}), http.StatusForbidden, "M_FORBIDDEN")
	// Initial state the auth rules refuse is M_INVALID_ROOM_STATE: the
	// creator's power below what the name needs; a second create event.
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{
		"name": "x", "room_alias_name": "half",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.ID: 10}},
	}), http.StatusBadRequest, "M_INVALID_ROOM_STATE")
	wantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{
		"initial_state": []map[string]any{{"type": "m.room.create", "content": map[string]any{}}},
	}), http.StatusBadRequest, "M_INVALID_ROOM_STATE")
	// The failed room gave its alias back.
	wantErr(t, s.Do("GET", v3+"/directory/room/"+url.PathEscape("#half:test.local"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
	s.CreateRoom(alice, map[string]any{"room_alias_name": "half"})
	wantErr(t, s.Do("POST", v3+"/createRoom", "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	// The failed attempts left alice in no room: she is in the two made.
	r := s.MustDo(http.StatusOK, "GET", v3+"/joined_rooms", alice.Token, nil)
	if n := len(r.JSON["joined_rooms"].([]any)); n != 2 {
		t.Errorf("joined_rooms after failed creations: %s", r.Body)
	}
}

func TestMembershipLifecycle(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]

	public := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "room_alias_name": "pub"})
	private := s.CreateRoom(alice, map[string]any{"preset": "private_chat"})

	// Join by ID and by (percent-encoded) alias.
	s.Join(bob, public)
	r := s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape("#pub:test.local"), carol.Token, nil)
	if r.String("room_id") != public {
		t.Fatalf("join by alias: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "POST", v3+"/join/%23pub%3Atest.local", carol.Token, nil)
	if r.String("room_id") != public {
		t.Fatalf("join by alias again: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(public), carol.Token, nil)
	if r.String("room_id") != public {
		t.Fatalf("join by ID through /join: %s", r.Body)
	}
	wantErr(t, s.Do("POST", v3+"/join/"+url.PathEscape("#nope:test.local"), carol.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// Invite-only: no join without an invite.
	wantErr(t, s.Do("POST", rmRoom(private)+"/join", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	rmInvite(t, s, alice, private, bob.ID)
	s.Join(bob, private)
	if got := rmStateContent(t, s, alice, private, "m.room.member", bob.ID)["membership"]; got != "join" {
		t.Fatalf("bob after invite and join: %v", got)
	}

	// GET /joined_rooms.
	jr := s.MustDo(http.StatusOK, "GET", v3+"/joined_rooms", bob.Token, nil)
	var joined struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	_ = json.Unmarshal(jr.Body, &joined)
	slices.Sort(joined.JoinedRooms)
	want := []string{public, private}
	slices.Sort(want)
	if !slices.Equal(joined.JoinedRooms, want) {
		t.Fatalf("bob's joined_rooms %v, want %v", joined.JoinedRooms, want)
	}

	// Forget while joined is refused; leave, then forget.
	wantErr(t, s.Do("POST", rmRoom(private)+"/forget", bob.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	s.MustDo(http.StatusOK, "POST", rmRoom(private)+"/leave", bob.Token, map[string]any{"reason": "bye"})
	leave := rmStateContent(t, s, alice, private, "m.room.member", bob.ID)
	if leave["membership"] != "leave" || leave["reason"] != "bye" {
		t.Fatalf("after leave: %v", leave)
	}
	wantErr(t, s.Do("POST", rmRoom(private)+"/leave", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", rmRoom(private)+"/forget", bob.Token, nil)
	jr = s.MustDo(http.StatusOK, "GET", v3+"/joined_rooms", bob.Token, nil)
	if got := jr.JSON["joined_rooms"].([]any); len(got) != 1 || got[0] != public {
		t.Fatalf("joined_rooms after leave: %s", jr.Body)
	}

	// Kick: bob (power 0) cannot kick carol; alice can.
	wantErr(t, s.Do("POST", rmRoom(public)+"/kick", bob.Token, map[string]any{"user_id": carol.ID}), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", rmRoom(public)+"/kick", alice.Token, map[string]any{"user_id": carol.ID, "reason": "out"})
	kicked := rmStateContent(t, s, alice, public, "m.room.member", carol.ID)
	if kicked["membership"] != "leave" || kicked["reason"] != "out" {
		t.Fatalf("kicked: %v", kicked)
	}
	wantErr(t, s.Do("POST", rmRoom(public)+"/kick", alice.Token, map[string]any{"reason": "no user"}), http.StatusBadRequest, "M_MISSING_PARAM")
	// A public room lets the kicked user come back.
	s.Join(carol, public)

	// Ban: bob cannot ban; alice bans carol, who cannot rejoin.
	wantErr(t, s.Do("POST", rmRoom(public)+"/ban", bob.Token, map[string]any{"user_id": carol.ID}), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", rmRoom(public)+"/ban", alice.Token, map[string]any{"user_id": carol.ID})
	wantErr(t, s.Do("POST", rmRoom(public)+"/join", carol.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("POST", v3+"/join/%23pub%3Atest.local", carol.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	// Unban: not banned → M_BAD_STATE; banned → leave, and carol can join.
	wantErr(t, s.Do("POST", rmRoom(public)+"/unban", alice.Token, map[string]any{"user_id": bob.ID}), http.StatusBadRequest, "M_BAD_STATE")
	wantErr(t, s.Do("POST", rmRoom(public)+"/unban", bob.Token, map[string]any{"user_id": carol.ID}), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", rmRoom(public)+"/unban", alice.Token, map[string]any{"user_id": carol.ID})
	if got := rmStateContent(t, s, alice, public, "m.room.member", carol.ID)["membership"]; got != "leave" {
		t.Fatalf("after unban: %v", got)
	}
	s.Join(carol, public)

	// Unknown rooms.
	wantErr(t, s.Do("POST", rmRoom("!nope:test.local")+"/join", bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", rmRoom("!nope:test.local")+"/leave", bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("POST", rmRoom("not-a-room")+"/join", bob.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	// Inviting an unknown user.
	wantErr(t, s.Do("POST", rmRoom(public)+"/invite", alice.Token, map[string]any{"user_id": "@ghost:test.local"}), http.StatusNotFound, "M_NOT_FOUND")
}

func TestKnock(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{
		"room_version": "7",
		"initial_state": []map[string]any{
			{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}},
		},
	})
	// Knocking on an invite-only room, or a room of a version without
	// knocking, is refused.
	invite := s.CreateRoom(alice, nil)
	wantErr(t, s.Do("POST", v3+"/knock/"+url.PathEscape(invite), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	old := s.CreateRoom(alice, map[string]any{
		"room_version":  "6",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}}},
	})
	wantErr(t, s.Do("POST", v3+"/knock/"+url.PathEscape(old), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

	// A knock room still needs an invite to join.
	wantErr(t, s.Do("POST", rmRoom(room)+"/join", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	r := s.MustDo(http.StatusOK, "POST", v3+"/knock/"+url.PathEscape(room), bob.Token, map[string]any{"reason": "let me in"})
	if r.String("room_id") != room {
		t.Fatalf("knock: %s", r.Body)
	}
	k := rmStateContent(t, s, alice, room, "m.room.member", bob.ID)
	if k["membership"] != "knock" || k["reason"] != "let me in" {
		t.Fatalf("knock event: %v", k)
	}
	members := s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/members?membership=knock", alice.Token, nil)
	if chunk := members.JSON["chunk"].([]any); len(chunk) != 1 {
		t.Fatalf("knocking members: %s", members.Body)
	}
	rmInvite(t, s, alice, room, bob.ID)
	s.Join(bob, room)
	s.SendText(bob, room, "in")

	// A knock is rescinded by leaving; an invite is rejected the same way.
	carol := s.Register("carol", "pw")
	s.MustDo(http.StatusOK, "POST", v3+"/knock/"+url.PathEscape(room), carol.Token, nil)
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", carol.Token, nil)
	if got := rmStateContent(t, s, alice, room, "m.room.member", carol.ID)["membership"]; got != "leave" {
		t.Fatalf("rescinded knock: %v", got)
	}
	rmInvite(t, s, alice, room, carol.ID)
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", carol.Token, nil)
	if got := rmStateContent(t, s, alice, room, "m.room.member", carol.ID)["membership"]; got != "leave" {
		t.Fatalf("rejected invite: %v", got)
	}
	// Inviting someone already in the room is refused.
	wantErr(t, s.Do("POST", rmRoom(room)+"/invite", alice.Token, map[string]any{"user_id": bob.ID}), http.StatusForbidden, "M_FORBIDDEN")
}

func TestRestrictedJoin(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	space := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	room := s.CreateRoom(alice, map[string]any{
		"room_version": "8",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{
			"join_rule": "restricted",
			"allow":     []map[string]any{{"type": "m.room_membership", "room_id": space}},
		}}},
	})
	wantErr(t, s.Do("POST", rmRoom(room)+"/join", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	s.Join(bob, space)
	s.Join(bob, room)
	m := rmStateContent(t, s, alice, room, "m.room.member", bob.ID)
	if m["membership"] != "join" || m["join_authorised_via_users_server"] != alice.ID {
		t.Fatalf("restricted join: %v", m)
	}
	// Leaving the allowing room does not undo the join, but a new join
	// after leaving both is refused.
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", bob.Token, nil)
	s.MustDo(http.StatusOK, "POST", rmRoom(space)+"/leave", bob.Token, nil)
	wantErr(t, s.Do("POST", rmRoom(room)+"/join", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
}

func TestRoomMembersEndpoints(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	s.MustDo(http.StatusOK, "PUT", v3+"/profile/"+url.PathEscape(bob.ID)+"/displayname", bob.Token, map[string]any{"displayname": "Bob B"})
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	s.SendText(alice, room, "one")
	before := rmMessages(t, s, alice, room, url.Values{"dir": {"b"}, "limit": {"1"}}).Start
	s.Join(carol, room)
	rmInvite(t, s, alice, room, dave.ID)
	s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", carol.Token, nil)

	members := func(q string) map[string]string {
		t.Helper()
		r := s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/members"+q, alice.Token, nil)
		var res struct {
			Chunk []rmEvent `json:"chunk"`
		}
		if err := json.Unmarshal(r.Body, &res); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range res.Chunk {
			if e.Type != "m.room.member" || e.StateKey == nil {
				t.Fatalf("not a member event: %+v", e)
			}
			out[*e.StateKey], _ = e.Content["membership"].(string)
		}
		return out
	}
	eq := func(got, want map[string]string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("members %v, want %v", got, want)
		}
	}
	eq(members(""), map[string]string{alice.ID: "join", bob.ID: "join", carol.ID: "leave", dave.ID: "invite"})
	eq(members("?membership=join"), map[string]string{alice.ID: "join", bob.ID: "join"})
	eq(members("?not_membership=leave"), map[string]string{alice.ID: "join", bob.ID: "join", dave.ID: "invite"})
	eq(members("?membership=invite&not_membership=join"), map[string]string{dave.ID: "invite"})
	eq(members("?at="+url.QueryEscape(before)), map[string]string{alice.ID: "join", bob.ID: "join"})

	r := s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/joined_members", bob.Token, nil)
	var jm struct {
		Joined map[string]struct {
			DisplayName *string `json:"display_name"`
		} `json:"joined"`
	}
	if err := json.Unmarshal(r.Body, &jm); err != nil {
		t.Fatal(err)
	}
	if len(jm.Joined) != 2 || jm.Joined[bob.ID].DisplayName == nil || *jm.Joined[bob.ID].DisplayName != "Bob B" {
		t.Errorf("joined_members: %s", r.Body)
	}
	if _, ok := jm.Joined[alice.ID]; !ok {
		t.Errorf("joined_members without alice: %s", r.Body)
	}
	// Someone who never joined sees neither list; dave (invited) neither.
	stranger := s.Register("stranger", "pw")
	wantErr(t, s.Do("GET", rmRoom(room)+"/members", stranger.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", rmRoom(room)+"/joined_members", stranger.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", rmRoom(room)+"/joined_members", dave.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
}

func TestSendEvents(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	send := func(u testserver.User, eventType, txn string, body any) *testserver.Response {
		return s.Do("PUT", rmRoom(room)+"/send/"+url.PathEscape(eventType)+"/"+url.PathEscape(txn), u.Token, body)
	}

	// Not a member.
	wantErr(t, send(bob, "m.room.message", "t1", map[string]any{"body": "hi"}), http.StatusForbidden, "M_FORBIDDEN")
	s.Join(bob, room)

	// The same transaction ID gives the same event, also after a restart,
	// and sends nothing more.
	first := send(bob, "m.room.message", "same", map[string]any{"body": "once"})
	if first.Status != http.StatusOK || !strings.HasPrefix(first.String("event_id"), "$") {
		t.Fatalf("send: %d %s", first.Status, first.Body)
	}
	again := send(bob, "m.room.message", "same", map[string]any{"body": "once"})
	if again.String("event_id") != first.String("event_id") {
		t.Fatalf("retry gave %s, want %s", again.Body, first.Body)
	}
	// Another device of the same user has its own transaction IDs.
	phone := s.Login("bob", "password bob")
	other := s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/send/m.room.message/same", phone.Token, map[string]any{"body": "phone"})
	if other.String("event_id") == first.String("event_id") {
		t.Fatal("another device's transaction was taken for a retry")
	}
	s.Restart()
	after := send(bob, "m.room.message", "same", map[string]any{"body": "once"})
	if after.Status != http.StatusOK || after.String("event_id") != first.String("event_id") {
		t.Fatalf("retry after restart: %d %s, want %s", after.Status, after.Body, first.Body)
	}
	if got := rmAllBodies(t, s, alice, room); !slices.Equal(got, []string{"phone", "once"}) {
		t.Fatalf("messages after retries: %v", got)
	}

	// Content that is not Matrix JSON.
	for name, body := range map[string]string{
		"float":          `{"body": "x", "n": 1.5}`,
		"2^53":           `{"body": "x", "n": 9007199254740992}`,
		"-2^53":          `{"body": "x", "n": -9007199254740992}`,
		"exponent":       `{"body": "x", "n": 1e3}`,
		"nested float":   `{"body": "x", "a": [{"b": 0.1}]}`,
		"not an object":  `["x"]`,
		"a string":       `"x"`,
		"NUL in content": `{"body": "a\u0000b"}`,
	} {
		t.Run(name, func(t *testing.T) {
			wantErr(t, send(bob, "m.room.message", rmNextTxn(), body), http.StatusBadRequest, "M_BAD_JSON")
		})
	}
	wantErr(t, send(bob, "m.room.message", rmNextTxn(), `{"body": `), http.StatusBadRequest, "M_NOT_JSON")
	// The largest safe integers are fine.
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/send/m.room.message/"+rmNextTxn(), bob.Token,
		`{"body": "x", "max": 9007199254740991, "min": -9007199254740991}`)

	// Size limits: the event at most 64 KiB, type and state key at most
	// 255 bytes.
	big := map[string]any{"body": strings.Repeat("x", 65536)}
	wantErr(t, send(bob, "m.room.message", rmNextTxn(), big), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	nearly := map[string]any{"body": strings.Repeat("x", 60000)}
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/send/m.room.message/"+rmNextTxn(), bob.Token, nearly)
	long := strings.Repeat("t", 256)
	wantErr(t, send(bob, long, rmNextTxn(), map[string]any{}), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/send/"+strings.Repeat("t", 255)+"/"+rmNextTxn(), bob.Token, map[string]any{})
	wantErr(t, s.Do("PUT", rmRoom(room)+"/state/m.custom/"+strings.Repeat("k", 256), alice.Token, map[string]any{}), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	wantErr(t, s.Do("PUT", rmRoom(room)+"/state/"+long+"/", alice.Token, map[string]any{}), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	rmPutState(t, s, alice, room, "m.custom", strings.Repeat("k", 255), map[string]any{})

	// Unknown room.
	wantErr(t, s.Do("PUT", rmRoom("!nope:test.local")+"/send/m.room.message/"+rmNextTxn(), bob.Token, map[string]any{"body": "x"}), http.StatusForbidden, "M_FORBIDDEN")
}

func TestRoomState(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})

	// Empty state key, with and without the trailing slash.
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/state/m.room.name", alice.Token, map[string]any{"name": "A"})
	if got := rmStateContent(t, s, alice, room, "m.room.name", ""); got["name"] != "A" {
		t.Fatalf("name: %v", got)
	}
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/state/m.room.name/", alice.Token, map[string]any{"name": "B"})
	r := s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state/m.room.name", alice.Token, nil)
	if r.String("name") != "B" {
		t.Fatalf("name without slash: %s", r.Body)
	}

	// State keys with slashes: encoded and literal name the same key.
	rmPutState(t, s, alice, room, "m.custom", "a/b/c", map[string]any{"v": "encoded"})
	r = s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state/m.custom/a/b/c", alice.Token, nil)
	if r.String("v") != "encoded" {
		t.Fatalf("literal slashes: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/state/m.custom/x/y", alice.Token, map[string]any{"v": "literal"})
	if got := rmStateContent(t, s, alice, room, "m.custom", "x/y"); got["v"] != "literal" {
		t.Fatalf("encoded slashes: %v", got)
	}
	rmPutState(t, s, alice, room, "m.custom", "weird:key?&#%@x", map[string]any{"v": "odd"})
	if got := rmStateContent(t, s, alice, room, "m.custom", "weird:key?&#%@x"); got["v"] != "odd" {
		t.Fatalf("odd key: %v", got)
	}
	// format=event gives the whole event.
	r = s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state/m.custom/x%2Fy?format=event", alice.Token, nil)
	if ev := rmEventOf(t, r); ev.StateKey == nil || *ev.StateKey != "x/y" || ev.Sender != alice.ID || ev.Content["v"] != "literal" {
		t.Fatalf("format=event: %s", r.Body)
	}

	// Missing state, missing room.
	wantErr(t, s.Do("GET", rmRoom(room)+"/state/m.custom/absent", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", rmRoom(room)+"/state/m.room.topic", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", rmRoom(room)+"/state/m.custom/a%2Fb", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// The whole state holds what was set.
	r = s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state", alice.Token, nil)
	var all []rmEvent
	if err := json.Unmarshal(r.Body, &all); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, e := range all {
		keys[e.Type+"|"+*e.StateKey] = true
	}
	for _, k := range []string{"m.room.create|", "m.room.name|", "m.custom|a/b/c", "m.custom|x/y", "m.room.member|" + alice.ID} {
		if !keys[k] {
			t.Errorf("state lacks %s", k)
		}
	}

	// Non-members read nothing of a shared room.
	wantErr(t, s.Do("GET", rmRoom(room)+"/state", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", rmRoom(room)+"/state/m.room.name", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	// Power: bob (0) may not set the name (50) in a private chat.
	private := s.CreateRoom(alice, map[string]any{"preset": "private_chat", "power_level_content_override": map[string]any{"state_default": 50}})
	rmInvite(t, s, alice, private, bob.ID)
	s.Join(bob, private)
	wantErr(t, s.Do("PUT", rmRoom(private)+"/state/m.room.name", bob.Token, map[string]any{"name": "mine"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", rmRoom(private)+"/state/m.custom/x", bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("PUT", rmRoom(private)+"/state/m.room.power_levels", bob.Token, map[string]any{"users": map[string]int{bob.ID: 100}}), http.StatusForbidden, "M_FORBIDDEN")
	// ...but may set his own-keyed state in a room where state_default allows.
	// Memberships set as state follow the membership auth rules: bob may
	// not kick alice.
	wantErr(t, s.Do("PUT", rmRoom(private)+"/state/m.room.member/"+url.PathEscape(alice.ID), bob.Token, map[string]any{"membership": "leave"}), http.StatusForbidden, "M_FORBIDDEN")
	// Raised to 50, he may.
	pl := rmStateContent(t, s, alice, private, "m.room.power_levels", "")
	pl["users"].(map[string]any)[bob.ID] = 50
	rmPutState(t, s, alice, private, "m.room.power_levels", "", pl)
	rmPutState(t, s, bob, private, "m.room.name", "", map[string]any{"name": "mine"})
	// A canonical alias must point to the room.
	s.MustDo(http.StatusOK, "PUT", v3+"/directory/room/"+url.PathEscape("#priv:test.local"), alice.Token, map[string]any{"room_id": private})
	wantErr(t, s.Do("PUT", rmRoom(private)+"/state/m.room.canonical_alias", alice.Token, map[string]any{"alias": "#nowhere:test.local"}), http.StatusBadRequest, "M_BAD_ALIAS")
	wantErr(t, s.Do("PUT", rmRoom(room)+"/state/m.room.canonical_alias", alice.Token, map[string]any{"alias": "#priv:test.local"}), http.StatusBadRequest, "M_BAD_ALIAS")
	rmPutState(t, s, alice, private, "m.room.canonical_alias", "", map[string]any{"alias": "#priv:test.local"})
	// State content must be Matrix JSON too.
	wantErr(t, s.Do("PUT", rmRoom(private)+"/state/m.custom/f", alice.Token, `{"n": 0.5}`), http.StatusBadRequest, "M_BAD_JSON")
}

func TestRedaction(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	for _, version := range []string{"1", "7", "8", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "room_version": version})
			s.Join(bob, room)
			mine := s.SendText(bob, room, "mine")
			theirs := s.SendText(alice, room, "theirs")

			// bob may redact his own event but not alice's.
			r := s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/redact/"+url.PathEscape(mine)+"/"+rmNextTxn(), bob.Token, map[string]any{"reason": "oops"})
			redaction := r.String("event_id")
			wantErr(t, s.Do("PUT", rmRoom(room)+"/redact/"+url.PathEscape(theirs)+"/"+rmNextTxn(), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
			wantErr(t, s.Do("PUT", rmRoom(room)+"/redact/"+url.PathEscape("$missing")+"/"+rmNextTxn(), bob.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
			// A redaction retried with its transaction ID is the same.
			txn := rmNextTxn()
			a1 := s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/redact/"+url.PathEscape(theirs)+"/"+txn, alice.Token, map[string]any{})
			a2 := s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/redact/"+url.PathEscape(theirs)+"/"+txn, alice.Token, map[string]any{})
			if a1.String("event_id") != a2.String("event_id") {
				t.Fatalf("retried redaction: %s then %s", a1.Body, a2.Body)
			}

			ev := rmEventOf(t, s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(mine), alice.Token, nil))
			if len(ev.Content) != 0 {
				t.Errorf("redacted content %v, want {}", ev.Content)
			}
			because, _ := ev.Unsigned["redacted_because"].(map[string]any)
			if because["event_id"] != redaction || because["type"] != "m.room.redaction" || because["sender"] != bob.ID {
				t.Fatalf("redacted_because: %v", ev.Unsigned)
			}
			bc, _ := because["content"].(map[string]any)
			if bc["reason"] != "oops" {
				t.Errorf("redaction content %v", bc)
			}
			// From v11 the target is in the content; before, at the top.
			if version == "11" || version == "12" {
				if bc["redacts"] != mine {
					t.Errorf("v%s redaction content.redacts: %v", version, bc)
				}
			} else if because["redacts"] != mine {
				t.Errorf("v%s redaction redacts: %v", version, because)
			}
			// A moderator redacts anyone's event.
			bobs := s.SendText(bob, room, "moderated")
			s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/redact/"+url.PathEscape(bobs)+"/"+rmNextTxn(), alice.Token, map[string]any{})
			if ev := rmEventOf(t, s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(bobs), bob.Token, nil)); len(ev.Content) != 0 {
				t.Errorf("moderated event: %+v", ev)
			}
			// The redacted event comes out the same way from /messages.
			page := rmMessages(t, s, alice, room, url.Values{"dir": {"b"}, "limit": {"20"}})
			found := false
			for _, e := range page.Chunk {
				if e.EventID == mine {
					found = true
					if len(e.Content) != 0 || e.Unsigned["redacted_because"] == nil {
						t.Errorf("/messages serves the redacted event as %+v", e)
					}
				}
				if e.EventID == redaction && e.Redacts != mine && e.Content["redacts"] != mine {
					t.Errorf("redaction in /messages: %+v", e)
				}
			}
			if !found {
				t.Errorf("redacted event missing from /messages")
			}

			// The version's redaction algorithm: join_rules keep "allow"
			// from v8 on.
			jr := rmPutState(t, s, alice, room, "m.room.join_rules", "", map[string]any{
				"join_rule": "public", "allow": []any{}, "extra": "x",
			})
			s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/redact/"+url.PathEscape(jr)+"/"+rmNextTxn(), alice.Token, map[string]any{})
			got := rmStateContent(t, s, alice, room, "m.room.join_rules", "")
			_, hasAllow := got["allow"]
			n, _ := strconv.Atoi(version)
			if got["join_rule"] != "public" || got["extra"] != nil || hasAllow != (n >= 8) {
				t.Errorf("v%s redacted join rules: %v", version, got)
			}
			// The room still works with its redacted join rules.
			s.SendText(bob, room, "still here")
		})
	}
}

func TestGetEventVisibility(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{
		"preset":        "public_chat",
		"initial_state": []map[string]any{{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}}},
	})
	early := s.SendText(alice, room, "early")
	wantErr(t, s.Do("GET", rmRoom(room)+"/event/"+url.PathEscape(early), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	s.Join(bob, room)
	late := s.SendText(alice, room, "late")
	ev := rmEventOf(t, s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(late), bob.Token, nil))
	if ev.EventID != late || ev.body() != "late" || ev.Sender != alice.ID || ev.Type != "m.room.message" {
		t.Fatalf("visible event: %+v", ev)
	}
	if _, ok := ev.Unsigned["age"]; !ok {
		t.Errorf("no unsigned.age: %+v", ev)
	}
	// Joined now, bob still cannot see what was before his join; nor an
	// event that does not exist, nor one of another room: all the same 404.
	wantErr(t, s.Do("GET", rmRoom(room)+"/event/"+url.PathEscape(early), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", rmRoom(room)+"/event/"+url.PathEscape("$nope"), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	other := s.CreateRoom(alice, nil)
	otherEv := s.SendText(alice, other, "elsewhere")
	wantErr(t, s.Do("GET", rmRoom(room)+"/event/"+url.PathEscape(otherEv), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(early), alice.Token, nil)
}

func TestMessagesPagination(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	room := s.CreateRoom(alice, nil)
	var want []string
	for i := range 25 {
		b := fmt.Sprintf("m%02d", i)
		s.SendText(alice, room, b)
		want = append(want, b)
	}
	filter := `{"types":["m.room.message"]}`

	// Backwards from the end by pages of 7.
	var got []string
	from := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("backward pagination does not end")
		}
		q := url.Values{"dir": {"b"}, "limit": {"7"}, "filter": {filter}}
		if from != "" {
			q.Set("from", from)
		}
		p := rmMessages(t, s, alice, room, q)
		if from != "" && p.Start != from {
			t.Errorf("start %q, want the from token %q", p.Start, from)
		}
		if len(p.Chunk) > 7 {
			t.Fatalf("page of %d events, limit 7", len(p.Chunk))
		}
		got = append(got, rmBodies(p.Chunk)...)
		if p.End == "" {
			break
		}
		from = p.End
	}
	rev := slices.Clone(want)
	slices.Reverse(rev)
	if !slices.Equal(got, rev) {
		t.Fatalf("backward pages %v, want %v", got, rev)
	}

	// Forwards from the start (no from: the beginning of the room).
	got = nil
	from = ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("forward pagination does not end")
		}
		q := url.Values{"dir": {"f"}, "limit": {"7"}, "filter": {filter}}
		if from != "" {
			q.Set("from", from)
		}
		p := rmMessages(t, s, alice, room, q)
		got = append(got, rmBodies(p.Chunk)...)
		if p.End == "" {
			break
		}
		from = p.End
	}
	if !slices.Equal(got, want) {
		t.Fatalf("forward pages %v, want %v", got, want)
	}

	// Going back then forward from a page's end is gap-free: the page
	// after m17..m11 going backwards, then forwards from its start
	// token returns to where it began.
	p1 := rmMessages(t, s, alice, room, url.Values{"dir": {"b"}, "limit": {"7"}, "filter": {filter}})
	p2 := rmMessages(t, s, alice, room, url.Values{"dir": {"b"}, "limit": {"7"}, "filter": {filter}, "from": {p1.End}})
	if b := rmBodies(p2.Chunk); !slices.Equal(b, rev[7:14]) {
		t.Fatalf("second backward page %v", b)
	}
	fwd := rmMessages(t, s, alice, room, url.Values{"dir": {"f"}, "limit": {"7"}, "filter": {filter}, "from": {p2.End}})
	if b := rmBodies(fwd.Chunk); !slices.Equal(b, want[11:18]) {
		t.Fatalf("forward from a backward page's end: %v, want %v", b, want[11:18])
	}
	fwd = rmMessages(t, s, alice, room, url.Values{"dir": {"f"}, "limit": {"7"}, "filter": {filter}, "from": {p1.End}})
	if b := rmBodies(fwd.Chunk); !slices.Equal(b, want[18:25]) {
		t.Fatalf("forward from the first backward page's end: %v, want %v", b, want[18:25])
	}

	// to: stop at a token.
	p := rmMessages(t, s, alice, room, url.Values{"dir": {"b"}, "limit": {"100"}, "filter": {filter}, "to": {p2.End}})
	if b := rmBodies(p.Chunk); !slices.Equal(b, rev[:14]) {
		t.Fatalf("backward to a token: %v", b)
	}
	p = rmMessages(t, s, alice, room, url.Values{"dir": {"f"}, "limit": {"100"}, "filter": {filter}, "from": {p2.End}, "to": {p1.End}})
	if b := rmBodies(p.Chunk); !slices.Equal(b, want[11:18]) {
		t.Fatalf("forward between tokens: %v", b)
	}

	// limit: default 10; 0 is allowed.
	p = rmMessages(t, s, alice, room, url.Values{"dir": {"b"}, "filter": {filter}})
	if len(p.Chunk) != 10 {
		t.Errorf("default limit: %d events", len(p.Chunk))
	}
	// Without a filter the room's own events are in the log too.
	p = rmMessages(t, s, alice, room, url.Values{"dir": {"f"}, "limit": {"100"}})
	if len(p.Chunk) <= 25 || p.Chunk[0].Type != "m.room.create" || p.End != "" {
		t.Errorf("whole room forwards: %d events, first %s, end %q", len(p.Chunk), p.Chunk[0].Type, p.End)
	}

	// Without a filter: every event of the room exactly once, by 7s, both
	// ways, and a message sent while paging backwards does not slip in.
	var back []string
	seen := map[string]bool{}
	from = ""
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("backward pagination does not end")
		}
		q := url.Values{"dir": {"b"}, "limit": {"7"}}
		if from != "" {
			q.Set("from", from)
		}
		p := rmMessages(t, s, alice, room, q)
		for _, e := range p.Chunk {
			if seen[e.EventID] {
				t.Fatalf("%s twice going backwards", e.EventID)
			}
			seen[e.EventID] = true
			back = append(back, e.EventID)
		}
		if pages == 0 {
			s.SendText(alice, room, "late")
		}
		if p.End == "" {
			break
		}
		from = p.End
	}
	var fwdIDs []string
	from = ""
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("forward pagination does not end")
		}
		q := url.Values{"dir": {"f"}, "limit": {"7"}}
		if from != "" {
			q.Set("from", from)
		}
		p := rmMessages(t, s, alice, room, q)
		for _, e := range p.Chunk {
			fwdIDs = append(fwdIDs, e.EventID)
		}
		if p.End == "" {
			break
		}
		from = p.End
	}
	slices.Reverse(back)
	if len(fwdIDs) != len(back)+1 || !slices.Equal(fwdIDs[:len(back)], back) {
		t.Fatalf("forwards %d events, backwards %d: not the same log", len(fwdIDs), len(back))
	}
	if ev := rmEventOf(t, s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(fwdIDs[len(back)]), alice.Token, nil)); ev.body() != "late" {
		t.Fatalf("the last event forwards is %+v", ev)
	}

	// Bad parameters.
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=x", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=b&limit=x", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=b&from=garbage", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=b&filter=%7B", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestMessagesFilter(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	s.Join(carol, room)
	s.SendText(alice, room, "a1")
	s.SendText(bob, room, "b1")
	s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/send/m.custom.event/"+rmNextTxn(), bob.Token, map[string]any{"body": "c1"})
	s.SendText(alice, room, "a2")

	page := func(f string, limit string) rmMessagesPage {
		t.Helper()
		return rmMessages(t, s, carol, room, url.Values{"dir": {"b"}, "limit": {limit}, "filter": {f}})
	}
	bodies := func(evs []rmEvent) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.body())
		}
		return out
	}
	if got := bodies(page(`{"types":["m.room.message"]}`, "50").Chunk); !slices.Equal(got, []string{"a2", "b1", "a1"}) {
		t.Errorf("types: %v", got)
	}
	if got := bodies(page(`{"types":["m.custom.*"]}`, "50").Chunk); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("types with a wildcard: %v", got)
	}
	p := page(`{"not_types":["m.room.message", "m.room.*"]}`, "50")
	if got := bodies(p.Chunk); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("not_types: %v", got)
	}
	p = page(`{"senders":["`+bob.ID+`"]}`, "50")
	for _, e := range p.Chunk {
		if e.Sender != bob.ID {
			t.Errorf("senders: event from %s", e.Sender)
		}
	}
	if got := bodies(p.Chunk); !slices.Contains(got, "b1") || !slices.Contains(got, "c1") {
		t.Errorf("senders: %v", got)
	}
	p = page(`{"not_senders":["`+alice.ID+`"], "types":["m.room.message"]}`, "50")
	if got := bodies(p.Chunk); !slices.Equal(got, []string{"b1"}) {
		t.Errorf("not_senders: %v", got)
	}
	// The filter's limit applies when there is no limit parameter.
	p = rmMessages(t, s, carol, room, url.Values{"dir": {"b"}, "filter": {`{"limit": 2}`}})
	if len(p.Chunk) != 2 {
		t.Errorf("filter limit: %d events", len(p.Chunk))
	}

	// lazy_load_members: the member events of the chunk's senders, and only
	// those.
	p = page(`{"lazy_load_members": true, "types":["m.room.message"]}`, "2")
	if got := bodies(p.Chunk); !slices.Equal(got, []string{"a2", "b1"}) {
		t.Fatalf("lazy chunk: %v", got)
	}
	members := map[string]bool{}
	for _, e := range p.State {
		if e.Type != "m.room.member" || e.StateKey == nil {
			t.Fatalf("lazy state holds %+v", e)
		}
		members[*e.StateKey] = true
	}
	if len(members) != 2 || !members[alice.ID] || !members[bob.ID] {
		t.Errorf("lazy members %v, want alice and bob", members)
	}
	p = page(`{"types":["m.room.message"]}`, "2")
	if len(p.State) != 0 {
		t.Errorf("state without lazy loading: %+v", p.State)
	}
}

func TestHistoryVisibility(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]
	roomWith := func(visibility string) string {
		return s.CreateRoom(alice, map[string]any{
			"preset": "public_chat",
			"initial_state": []map[string]any{
				{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": visibility}},
			},
		})
	}

	t.Run("joined", func(t *testing.T) {
		room := roomWith("joined")
		s.SendText(alice, room, "before")
		s.Join(bob, room)
		s.SendText(alice, room, "after")
		if got := rmAllBodies(t, s, bob, room); !slices.Equal(got, []string{"after"}) {
			t.Errorf("bob sees %v", got)
		}
		if got := rmAllBodies(t, s, alice, room); !slices.Equal(got, []string{"after", "before"}) {
			t.Errorf("alice sees %v", got)
		}
	})
	t.Run("shared", func(t *testing.T) {
		room := roomWith("shared")
		s.SendText(alice, room, "before")
		wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=b", bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		s.Join(bob, room)
		s.SendText(alice, room, "after")
		if got := rmAllBodies(t, s, bob, room); !slices.Equal(got, []string{"after", "before"}) {
			t.Errorf("bob sees %v", got)
		}
	})
	t.Run("left", func(t *testing.T) {
		room := roomWith("shared")
		s.SendText(alice, room, "m0")
		s.Join(bob, room)
		m1 := s.SendText(alice, room, "m1")
		s.MustDo(http.StatusOK, "POST", rmRoom(room)+"/leave", bob.Token, nil)
		m2 := s.SendText(alice, room, "m2")
		if got := rmAllBodies(t, s, bob, room); !slices.Equal(got, []string{"m1", "m0"}) {
			t.Errorf("bob after leaving sees %v", got)
		}
		s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/event/"+url.PathEscape(m1), bob.Token, nil)
		wantErr(t, s.Do("GET", rmRoom(room)+"/event/"+url.PathEscape(m2), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
		// The state he reads is the state when he left.
		rmPutState(t, s, alice, room, "m.room.topic", "", map[string]any{"topic": "after bob"})
		wantErr(t, s.Do("GET", rmRoom(room)+"/state/m.room.topic", bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
		// Forwards pagination stops at his leave too.
		p := rmMessages(t, s, bob, room, url.Values{"dir": {"f"}, "limit": {"100"}, "filter": {`{"types":["m.room.message"]}`}})
		if got := rmBodies(p.Chunk); !slices.Equal(got, []string{"m0", "m1"}) {
			t.Errorf("bob forwards sees %v", got)
		}
	})
	t.Run("invited", func(t *testing.T) {
		room := roomWith("invited")
		s.SendText(alice, room, "m0")
		rmInvite(t, s, alice, room, bob.ID)
		s.SendText(alice, room, "m1")
		s.Join(bob, room)
		s.SendText(alice, room, "m2")
		if got := rmAllBodies(t, s, bob, room); !slices.Equal(got, []string{"m2", "m1"}) {
			t.Errorf("bob sees %v", got)
		}
	})
	t.Run("world_readable", func(t *testing.T) {
		room := roomWith("world_readable")
		s.SendText(alice, room, "public")
		if got := rmAllBodies(t, s, carol, room); !slices.Equal(got, []string{"public"}) {
			t.Errorf("non-member sees %v", got)
		}
		s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state/m.room.history_visibility", carol.Token, nil)
		// Non-members read but do not write.
		wantErr(t, s.Do("PUT", rmRoom(room)+"/send/m.room.message/"+rmNextTxn(), carol.Token, map[string]any{"body": "x"}), http.StatusForbidden, "M_FORBIDDEN")
		// Once it is no longer world readable, they see nothing more.
		rmPutState(t, s, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "shared"})
		s.SendText(alice, room, "private")
		wantErr(t, s.Do("GET", rmRoom(room)+"/messages?dir=b", carol.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

// A redacted state event counts in its redacted form, for the auth rules
// too: before v11, redacting the power levels drops "invite" (back to its
// default, 0), so that anyone may invite.
func TestRedactedStateAuthorises(t *testing.T) {
	s := testserver.Start(t, "")
	u := rmUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]
	for _, c := range []struct {
		version   string
		mayInvite bool
	}{{"10", true}, {"11", false}} {
		t.Run("v"+c.version, func(t *testing.T) {
			room := s.CreateRoom(alice, map[string]any{
				"preset": "public_chat", "room_version": c.version,
				"power_level_content_override": map[string]any{"invite": 50},
			})
			s.Join(bob, room)
			wantErr(t, s.Do("POST", rmRoom(room)+"/invite", bob.Token, map[string]any{"user_id": carol.ID}), http.StatusForbidden, "M_FORBIDDEN")
			pl := rmEventOf(t, s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state/m.room.power_levels?format=event", alice.Token, nil))
			s.MustDo(http.StatusOK, "PUT", rmRoom(room)+"/redact/"+url.PathEscape(pl.EventID)+"/"+rmNextTxn(), alice.Token, map[string]any{})
			got := rmStateContent(t, s, alice, room, "m.room.power_levels", "")
			if _, kept := got["invite"]; kept == c.mayInvite {
				t.Fatalf("redacted power levels: %v", got)
			}
			r := s.Do("POST", rmRoom(room)+"/invite", bob.Token, map[string]any{"user_id": carol.ID})
			if c.mayInvite && r.Status != http.StatusOK {
				t.Fatalf("invite after the redaction: %d %s", r.Status, r.Body)
			}
			if !c.mayInvite {
				wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
			}
			// The users' levels survive redaction: alice still rules.
			rmPutState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "still mine"})
		})
	}
}
