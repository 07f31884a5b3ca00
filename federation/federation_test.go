package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// syncer follows one user's /sync.
type syncer struct {
	t     *testing.T
	s     *testserver.Server
	u     testserver.User
	since string
}

func newSyncer(t *testing.T, s *testserver.Server, u testserver.User) *syncer {
	y := &syncer{t: t, s: s, u: u}
	y.since = s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", u.Token, nil).String("next_batch")
	return y
}

// until long-polls /sync until cond holds for a response, or fails.
func (y *syncer) until(what string, cond func(resp map[string]any) bool) map[string]any {
	y.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r := y.s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=2000&since="+url.QueryEscape(y.since), y.u.Token, nil)
		y.since = r.String("next_batch")
		if cond(r.JSON) {
			return r.JSON
		}
	}
	y.t.Fatalf("%s: not seen in /sync of %s within 20s", what, y.u.ID)
	return nil
}

func path(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func timeline(resp map[string]any, roomID string) []map[string]any {
	return objects(path(resp, "rooms", "join", roomID, "timeline", "events"))
}

// objects returns the objects of a JSON list (nil for anything else).
func objects(list any) []map[string]any {
	evs, _ := list.([]any)
	var out []map[string]any
	for _, e := range evs {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func hasEvent(resp map[string]any, roomID, eventID string) bool {
	return slices.ContainsFunc(timeline(resp, roomID), func(e map[string]any) bool { return e["event_id"] == eventID })
}

// Two servers share a room: invite, join, messages both ways, typing,
// receipts, alias lookup, leave.
func TestTwoServersShareARoom(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby"})
	bobSync := newSyncer(t, b, bob)

	// Invite across servers: bob's server signs it and shows it to bob.
	a.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": bob.ID})
	resp := bobSync.until("invite", func(r map[string]any) bool { return path(r, "rooms", "invite", room) != nil })
	state, _ := path(resp, "rooms", "invite", room, "invite_state", "events").([]any)
	names := ""
	for _, e := range state {
		if m := e.(map[string]any); m["type"] == "m.room.name" {
			names = fmt.Sprint(path(m, "content", "name"))
		}
	}
	if names != "Lobby" {
		t.Errorf("invite_state lacks the room name: %v", state)
	}

	// Join through hs1.
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	members := a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/joined_members"), alice.Token, nil)
	if path(members.JSON, "joined", bob.ID) == nil {
		t.Fatalf("hs1 does not see bob joined: %s", members.Body)
	}
	members = b.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/joined_members"), bob.Token, nil)
	if path(members.JSON, "joined", alice.ID) == nil || path(members.JSON, "joined", bob.ID) == nil {
		t.Fatalf("hs2 does not see both members: %s", members.Body)
	}

	// Messages both ways.
	aliceSync := newSyncer(t, a, alice)
	id := a.SendText(alice, room, "hello from hs1")
	bobSync.until("alice's message", func(r map[string]any) bool { return hasEvent(r, room, id) })
	id = b.SendText(bob, room, "hello from hs2")
	aliceSync.until("bob's message", func(r map[string]any) bool { return hasEvent(r, room, id) })

	// Typing and receipts across.
	b.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/typing/"+url.PathEscape(bob.ID)), bob.Token, map[string]any{"typing": true, "timeout": 10000})
	aliceSync.until("bob typing", func(r map[string]any) bool {
		evs, _ := path(r, "rooms", "join", room, "ephemeral", "events").([]any)
		for _, e := range evs {
			if m := e.(map[string]any); m["type"] == "m.typing" {
				ids, _ := path(m, "content", "user_ids").([]any)
				return slices.Contains(ids, any(bob.ID))
			}
		}
		return false
	})
	a.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/receipt/m.read/"+url.PathEscape(id)), alice.Token, map[string]any{})
	bobSync.until("alice's receipt", func(r map[string]any) bool {
		evs, _ := path(r, "rooms", "join", room, "ephemeral", "events").([]any)
		for _, e := range evs {
			if m := e.(map[string]any); m["type"] == "m.receipt" && path(m, "content", id, "m.read", alice.ID) != nil {
				return true
			}
		}
		return false
	})

	// Presence across.
	b.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.ID)+"/status", bob.Token, map[string]any{"presence": "unavailable", "status_msg": "at lunch"})
	aliceSync.until("bob's presence", func(r map[string]any) bool {
		evs, _ := path(r, "presence", "events").([]any)
		for _, e := range evs {
			if m := e.(map[string]any); m["sender"] == bob.ID && path(m, "content", "status_msg") == "at lunch" {
				return path(m, "content", "presence") == "unavailable"
			}
		}
		return false
	})

	// The alias resolves from the other server.
	r := b.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#lobby:hs1.test"), bob.Token, nil)
	if r.String("room_id") != room {
		t.Errorf("alias from hs2: %s", r.Body)
	}

	// Leaving is seen on the other side.
	b.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/leave"), bob.Token, map[string]any{})
	aliceSync.until("bob's leave", func(r map[string]any) bool {
		for _, e := range timeline(r, room) {
			if e["type"] == "m.room.member" && e["state_key"] == bob.ID && path(e, "content", "membership") == "leave" {
				return true
			}
		}
		return false
	})
}

// A restricted room on hs1 lets bob of hs2 join through his membership of
// an allowed room: hs1 names a member who authorises the join and signs
// it at send_join.
func TestRestrictedJoinAcrossServers(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	space := a.CreatePublicRoom(alice)
	room := a.CreateRoom(alice, map[string]any{"room_version": "10", "initial_state": []map[string]any{{
		"type": "m.room.join_rules", "state_key": "",
		"content": map[string]any{"join_rule": "restricted", "allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}},
	}}})
	// Not yet in the allowed room: refused.
	if r := b.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{}); r.Status != http.StatusForbidden {
		t.Fatalf("restricted join before joining the allowed room: %d %s", r.Status, r.Body)
	}
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(space), bob.Token, map[string]any{})
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	st := a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/state/m.room.member/"+url.PathEscape(bob.ID)), alice.Token, nil)
	if st.String("membership") != "join" || st.String("join_authorised_via_users_server") != alice.ID {
		t.Fatalf("bob's membership on hs1: %s", st.Body)
	}
}
