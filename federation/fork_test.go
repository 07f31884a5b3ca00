package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// stateIDs returns the room's current state on s as sorted event IDs.
func stateIDs(t *testing.T, s *testserver.Server, u testserver.User, roomID string) []string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/state"), u.Token, nil)
	var evs []map[string]any
	if err := json.Unmarshal(r.Body, &evs); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range evs {
		ids = append(ids, e["event_id"].(string))
	}
	slices.Sort(ids)
	return ids
}

// A partition while both sides change the room's name: when it heals,
// both servers hold both branches and resolve them to the same current
// state, state event by state event.
func TestForkHealsToTheSameState(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreateRoom(alice, map[string]any{"preset": "public_chat", "room_version": "10"})
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	a.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.power_levels/"), alice.Token, map[string]any{
		"users": map[string]any{alice.ID: 100, bob.ID: 50}, "state_default": 50,
	})
	// Both sides see the same room before the partition.
	waitSame(t, a, alice, b, bob, room)

	b.Stop()
	a.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.name/"), alice.Token, map[string]any{"name": "named on hs1"})
	a.Stop()
	b.Restart()
	b.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.name/"), bob.Token, map[string]any{"name": "named on hs2"})
	b.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.topic/"), bob.Token, map[string]any{"topic": "topic from hs2"})
	a.Restart()

	// Each side gets the other's branch and resolves.
	waitSame(t, a, alice, b, bob, room)
	name := a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/state/m.room.name/"), alice.Token, nil).String("name")
	topic := b.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/state/m.room.topic/"), bob.Token, nil).String("topic")
	if name == "" || topic != "topic from hs2" {
		t.Errorf("resolved name %q, topic %q", name, topic)
	}
}

// waitSame waits until both servers hold the same current state of the
// room.
func waitSame(t *testing.T, a *testserver.Server, alice testserver.User, b *testserver.Server, bob testserver.User, room string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var sa, sb []string
	for time.Now().Before(deadline) {
		sa, sb = stateIDs(t, a, alice, room), stateIDs(t, b, bob, room)
		if slices.Equal(sa, sb) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("hs1 messages: %s", a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=6"), alice.Token, nil).Body)
	t.Fatalf("the servers' states differ:\nhs1 %s\nhs2 %s", a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/state"), alice.Token, nil).Body,
		b.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/state"), bob.Token, nil).Body)
}
