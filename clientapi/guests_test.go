package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// gsGuest registers a guest account.
func gsGuest(t *testing.T, s *testserver.Server) testserver.User {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", map[string]any{})
	return testserver.User{ID: r.String("user_id"), Token: r.String("access_token"), DeviceID: r.String("device_id")}
}

// Guests may use only the endpoints the guest access module lists, and
// join only rooms whose m.room.guest_access is can_join.
func TestGuestAccessGate(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "allow_guest_access: true\n")
	alice := s.Register("alice", "pw")
	guest := gsGuest(t, s)
	bob := s.Register("bob", "pw")

	// A public room keeps guests out (the public_chat preset says
	// forbidden), and so does an invitation to it.
	closed := s.CreatePublicRoom(alice)
	wantErr(t, s.Do("POST", rmRoom(closed)+"/join", guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	rmInvite(t, s, alice, closed, guest.ID)
	wantErr(t, s.Do("POST", rmRoom(closed)+"/join", guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	wantErr(t, s.Do("PUT", rmRoom(closed)+"/send/m.room.message/"+rmNextTxn(), guest.Token,
		map[string]any{"msgtype": "m.text", "body": "hi"}), http.StatusForbidden, "M_FORBIDDEN")

	// Nor may a guest join a room this server does not know.
	wantErr(t, s.Do("POST", rmRoom("!nowhere:test.local")+"/join", guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")

	// Once the room lets guests in, the listed endpoints work.
	open := s.CreatePublicRoom(alice)
	rmPutState(t, s, alice, open, "m.room.guest_access", "", map[string]any{"guest_access": "can_join"})
	s.Join(guest, open)
	s.SendText(guest, open, "hello from a guest")
	for _, path := range []string{
		rmRoom(open) + "/state",
		rmRoom(open) + "/state/m.room.create/",
		rmRoom(open) + "/state/m.room.create",
		rmRoom(open) + "/members",
		rmRoom(open) + "/messages?dir=b",
		rmRoom(open) + "/initialSync",
		v3 + "/sync",
		v3 + "/account/whoami",
		v3 + "/devices",
		v3 + "/devices/" + guest.DeviceID,
		"/_matrix/client/r0/account/whoami",
	} {
		s.MustDo(http.StatusOK, "GET", path, guest.Token, nil)
	}
	s.MustDo(http.StatusOK, "PUT", v3+"/profile/"+url.PathEscape(guest.ID)+"/displayname", guest.Token, map[string]any{"displayname": "Visitor"})
	s.MustDo(http.StatusOK, "PUT", v3+"/devices/"+guest.DeviceID, guest.Token, map[string]any{"display_name": "Guest phone"})

	// Media the guest may fetch but not upload.
	up := s.MustDo(http.StatusOK, "POST", "/_matrix/media/v3/upload", alice.Token, "some bytes")
	mxc := strings.TrimPrefix(up.String("content_uri"), "mxc://")
	s.MustDo(http.StatusOK, "GET", "/_matrix/client/v1/media/download/"+mxc, guest.Token, nil)

	// Everything else is closed, under every prefix.
	for _, e := range []struct {
		method, path string
		body         any
	}{
		{"POST", v3 + "/createRoom", map[string]any{"room_alias_name": "guestroom"}},
		{"POST", "/_matrix/client/r0/createRoom", map[string]any{}},
		{"POST", "/_matrix/client/api/v1/createRoom", map[string]any{}},
		{"PUT", v3 + "/directory/room/" + url.PathEscape("#guest:test.local"), map[string]any{"room_id": open}},
		{"PUT", v3 + "/directory/list/room/" + url.PathEscape(open), map[string]any{"visibility": "public"}},
		{"POST", rmRoom(open) + "/invite", map[string]any{"user_id": bob.ID}},
		{"POST", "/_matrix/media/v3/upload", "guest bytes"},
		{"GET", "/_matrix/client/v1/media/config", nil},
		{"POST", v3 + "/pushers/set", map[string]any{
			"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A", "device_display_name": "D",
			"lang": "en", "data": map[string]any{"url": "https://push.example/_matrix/push/v1/notify"},
		}},
		{"PUT", v3 + "/profile/" + url.PathEscape(guest.ID) + "/avatar_url", map[string]any{"avatar_url": "mxc://test.local/x"}},
		{"PUT", v3 + "/user/" + url.PathEscape(guest.ID) + "/account_data/m.test", map[string]any{}},
		{"GET", v3 + "/joined_rooms", nil},
		{"POST", v3 + "/account/password", map[string]any{"new_password": "x"}},
		{"GET", "/_matrix/client/v1/rooms/" + url.PathEscape(open) + "/hierarchy", nil},
	} {
		r := s.Do(e.method, e.path, guest.Token, e.body)
		if r.Status != http.StatusForbidden || r.Errcode() != "M_GUEST_ACCESS_FORBIDDEN" {
			t.Errorf("guest %s %s: %d %s, want 403 M_GUEST_ACCESS_FORBIDDEN", e.method, e.path, r.Status, r.Body)
		}
	}

	// Leaving is allowed; coming back is not once the room closes to guests.
	s.MustDo(http.StatusOK, "POST", rmRoom(open)+"/leave", guest.Token, map[string]any{})
	rmPutState(t, s, alice, open, "m.room.guest_access", "", map[string]any{"guest_access": "forbidden"})
	wantErr(t, s.Do("POST", rmRoom(open)+"/join", guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	// Joining by /join/{roomIdOrAlias}, which Synapse opens to guests,
	// obeys the room's guest_access too.
	wantErr(t, s.Do("POST", v3+"/join/"+url.PathEscape(open), guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")

	// Full users keep every endpoint.
	s.MustDo(http.StatusOK, "POST", v3+"/createRoom", bob.Token, map[string]any{"room_alias_name": "bobroom"})
	s.Join(bob, closed)
}

// A guest may read a world-readable room it is not in, through the
// endpoints listed for reading.
func TestGuestReadsWorldReadableRoom(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "allow_guest_access: true\n")
	alice := s.Register("alice", "pw")
	guest := gsGuest(t, s)
	room := s.CreatePublicRoom(alice)
	rmPutState(t, s, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
	rmPutState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "Lobby"})
	s.SendText(alice, room, "welcome")

	if got := rmStateContent(t, s, guest, room, "m.room.name", ""); got["name"] != "Lobby" {
		t.Fatalf("name: %v", got)
	}
	if got := rmBodies(rmMessages(t, s, guest, room, url.Values{"dir": {"b"}}).Chunk); len(got) != 1 || got[0] != "welcome" {
		t.Fatalf("messages: %v", got)
	}
	// Reading is not joining.
	wantErr(t, s.Do("POST", rmRoom(room)+"/join", guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
}

// When a room stops letting guests in, the guests in it leave: the server
// sets their membership to leave; full users stay.
func TestGuestsLeaveWhenGuestAccessCloses(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "allow_guest_access: true\n")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	guest := gsGuest(t, s)
	room := s.CreatePublicRoom(alice)
	rmPutState(t, s, alice, room, "m.room.guest_access", "", map[string]any{"guest_access": "can_join"})
	s.Join(guest, room)
	s.Join(bob, room)

	rmPutState(t, s, alice, room, "m.room.guest_access", "", map[string]any{"guest_access": "forbidden"})
	membership := func(u testserver.User) string {
		return s.MustDo(http.StatusOK, "GET", rmRoom(room)+"/state/m.room.member/"+url.PathEscape(u.ID), alice.Token, nil).String("membership")
	}
	deadline := time.Now().Add(10 * time.Second)
	for membership(guest) != "leave" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if m := membership(guest); m != "leave" {
		t.Errorf("the guest's membership is %q after the room closed to guests", m)
	}
	if m := membership(bob); m != "join" {
		t.Errorf("bob's membership is %q", m)
	}
}
