package federation_test

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/pdu"
)

// roomEvent returns the ID of the event of type/stateKey in the room's
// current state on s.
func stateID(t *testing.T, s *testserver.Server, u testserver.User, roomID, typ, stateKey string) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/state"), u.Token, nil)
	var evs []map[string]any
	if err := json.Unmarshal(r.Body, &evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e["type"] == typ && e["state_key"] == stateKey {
			return e["event_id"].(string)
		}
	}
	t.Fatalf("no %s/%s in %s", typ, stateKey, r.Body)
	return ""
}

// latest returns the ID of the room's newest event on s.
func latest(t *testing.T, s *testserver.Server, u testserver.User, roomID string) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/messages?dir=b&limit=1"), u.Token, nil)
	chunk, _ := r.JSON["chunk"].([]any)
	if len(chunk) == 0 {
		t.Fatalf("no events: %s", r.Body)
	}
	return chunk[0].(map[string]any)["event_id"].(string)
}

// message builds a message PDU from sender, signed with key.
func message(t *testing.T, key pdu.Key, roomID, sender, body string, auth, prev []string) *pdu.Event {
	t.Helper()
	tmpl, _ := json.Marshal(map[string]any{
		"type": "m.room.message", "room_id": roomID, "sender": sender, "content": map[string]any{"msgtype": "m.text", "body": body},
		"depth": 100, "prev_events": prev, "auth_events": auth,
	})
	ev, err := pdu.SignTemplate("10", tmpl, key, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// A forged X-Matrix header, a PDU with a bad signature and a PDU the auth
// rules refuse are each rejected as the spec says, and a good PDU in the
// same transaction is accepted.
func TestRejections(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	beforeJoin := latest(t, a, alice, room)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})
	hs2 := b.SigningKey()

	// Forged or malformed headers: 401 M_UNAUTHORIZED.
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 9
	forger := pdu.Key{ServerName: "hs2.test", KeyID: hs2.KeyID, Private: ed25519.NewKeyFromSeed(seed)}
	sendPath := "/_matrix/federation/v1/send/forged1"
	for name, auth := range map[string]string{
		"wrong key":    "",
		"no header":    "Bearer nothing",
		"garbage":      "X-Matrix nonsense",
		"unknown key":  `X-Matrix origin="hs2.test",destination="hs1.test",key="ed25519:nope",sig="AAAA"`,
		"other server": `X-Matrix origin="hs2.test",destination="elsewhere.test",key="` + hs2.KeyID + `",sig="AAAA"`,
	} {
		r := f.FedDo(a, forger, auth, "PUT", sendPath, map[string]any{"origin": "hs2.test", "pdus": []any{}, "edus": []any{}})
		if r.Status != http.StatusUnauthorized || r.Errcode() != "M_UNAUTHORIZED" {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}

	create := stateID(t, a, alice, room, "m.room.create", "")
	pl := stateID(t, a, alice, room, "m.room.power_levels", "")
	bobJoin := stateID(t, a, alice, room, "m.room.member", bob.ID)
	prev := []string{latest(t, a, alice, room)}
	good := message(t, hs2, room, bob.ID, "good", []string{create, pl, bobJoin}, prev)
	// Signed by a key that is not hs2's.
	badSig := message(t, forger, room, bob.ID, "forged", []string{create, pl, bobJoin}, prev)
	// Signed by hs2, but mallory never joined: the auth rules refuse it.
	notMember := message(t, hs2, room, "@mallory:hs2.test", "intruder", []string{create, pl}, prev)
	// Signed by hs2 and allowed by its auth events and the current state,
	// but placed before bob's join: the state before it refuses it.
	backdated := message(t, hs2, room, bob.ID, "backdated", []string{create, pl, bobJoin}, []string{beforeJoin})
	txn := map[string]any{"origin": "hs2.test", "origin_server_ts": time.Now().UnixMilli(),
		"pdus": []json.RawMessage{badSig.JSON(), notMember.JSON(), backdated.JSON(), good.JSON()}, "edus": []any{}}
	r := f.FedDo(a, hs2, "", "PUT", "/_matrix/federation/v1/send/t1", txn)
	if r.Status != http.StatusOK {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	results, _ := r.JSON["pdus"].(map[string]any)
	errOf := func(id string) string {
		m, _ := results[id].(map[string]any)
		if m == nil {
			return "<no result>"
		}
		s, _ := m["error"].(string)
		return s
	}
	if e := errOf(good.ID()); e != "" {
		t.Errorf("good PDU: %q", e)
	}
	if e := errOf(badSig.ID()); e == "" || e == "<no result>" {
		t.Errorf("badly signed PDU accepted: %s", r.Body)
	}
	if e := errOf(notMember.ID()); e == "" || e == "<no result>" {
		t.Errorf("PDU failing auth accepted: %s", r.Body)
	}
	if e := errOf(backdated.ID()); !strings.Contains(e, "state before") {
		t.Errorf("PDU failing the state before it: %q (%s)", e, r.Body)
	}
	// The same transaction again gets the same answer, and nothing twice.
	again := f.FedDo(a, hs2, "", "PUT", "/_matrix/federation/v1/send/t1", txn)
	if string(again.Body) != string(r.Body) {
		t.Errorf("repeated transaction answered %s, first %s", again.Body, r.Body)
	}
	msgs := a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=20"), alice.Token, nil)
	body := string(msgs.Body)
	if !strings.Contains(body, `"good"`) || strings.Contains(body, "forged") || strings.Contains(body, "intruder") || strings.Contains(body, "backdated") {
		t.Errorf("timeline: %s", body)
	}
	if n := strings.Count(body, good.ID()); n != 1 {
		t.Errorf("good event %d times in the timeline", n)
	}

	// Malformed transactions: the specified errors, never a 500.
	for name, tc := range map[string]struct {
		body   any
		status int
		code   string
	}{
		"not json":       {"{nope", 400, "M_NOT_JSON"},
		"pdus not list":  {`{"origin":"hs2.test","pdus":{}}`, 400, "M_BAD_JSON"},
		"too many pdus":  {map[string]any{"origin": "hs2.test", "pdus": make([]map[string]any, 51)}, 400, "M_BAD_JSON"},
		"wrong origin":   {map[string]any{"origin": "hs3.test", "pdus": []any{}}, 403, "M_FORBIDDEN"},
		"pdu not object": {map[string]any{"origin": "hs2.test", "pdus": []any{1, "x", nil}}, 200, ""},
	} {
		r := f.FedDo(a, hs2, "", "PUT", "/_matrix/federation/v1/send/bad-"+strings.ReplaceAll(name, " ", "-"), tc.body)
		if r.Status != tc.status || r.Errcode() != tc.code {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
}

// A rejected event is remembered with its reason: sent again, it gets the
// same answer without being processed again.
func TestRejectedEventRemembered(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	hs2 := b.SigningKey()
	create := stateID(t, a, alice, room, "m.room.create", "")
	pl := stateID(t, a, alice, room, "m.room.power_levels", "")
	intruder := message(t, hs2, room, "@mallory:hs2.test", "intruder", []string{create, pl}, []string{latest(t, a, alice, room)})
	var first string
	for i, txn := range []string{"r1", "r2"} {
		r := f.FedDo(a, hs2, "", "PUT", "/_matrix/federation/v1/send/"+txn, map[string]any{"origin": "hs2.test", "pdus": []json.RawMessage{intruder.JSON()}})
		res, _ := r.JSON["pdus"].(map[string]any)
		m, _ := res[intruder.ID()].(map[string]any)
		e, _ := m["error"].(string)
		if e == "" {
			t.Fatalf("attempt %d: not rejected: %s", i+1, r.Body)
		}
		if i == 0 {
			first = e
		} else if e != first {
			t.Errorf("second answer %q differs from the first %q", e, first)
		}
	}
	// Never served: hs2 asking for it gets nothing.
	if r := f.FedDo(a, hs2, "", "GET", "/_matrix/federation/v1/event/"+url.PathEscape(intruder.ID()), nil); r.Status != http.StatusNotFound {
		t.Errorf("rejected event served: %d %s", r.Status, r.Body)
	}
}

// A server the room's ACL denies gets 403 on the room's endpoints and its
// PDUs are refused one by one; an allowed server is not affected.
func TestServerACL(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	hs2 := b.SigningKey()
	create := stateID(t, a, alice, room, "m.room.create", "")
	pl := stateID(t, a, alice, room, "m.room.power_levels", "")
	bobJoin := stateID(t, a, alice, room, "m.room.member", bob.ID)
	a.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.server_acl/"), alice.Token, map[string]any{"allow": []string{"*"}, "deny": []string{"hs2.test"}})
	msg := message(t, hs2, room, bob.ID, "denied", []string{create, pl, bobJoin}, []string{latest(t, a, alice, room)})
	r := f.FedDo(a, hs2, "", "PUT", "/_matrix/federation/v1/send/acl1", map[string]any{"origin": "hs2.test", "pdus": []json.RawMessage{msg.JSON()}})
	res, _ := r.JSON["pdus"].(map[string]any)
	if m, _ := res[msg.ID()].(map[string]any); m == nil || !strings.Contains(fmt.Sprint(m["error"]), "ACL") {
		t.Errorf("PDU from a denied server: %s", r.Body)
	}
	esc := url.PathEscape
	for _, path := range []string{
		"/_matrix/federation/v1/make_join/" + esc(room) + "/" + esc("@carol:hs2.test") + "?ver=10",
		"/_matrix/federation/v1/state_ids/" + esc(room) + "?event_id=" + esc(create),
		"/_matrix/federation/v1/backfill/" + esc(room) + "?v=" + esc(create) + "&limit=5",
		"/_matrix/federation/v1/event_auth/" + esc(room) + "/" + esc(create),
	} {
		if r := f.FedDo(a, hs2, "", "GET", path, nil); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("GET %s from a denied server: %d %s", path, r.Status, r.Body)
		}
	}
	if strings.Contains(string(a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=5"), alice.Token, nil).Body), "denied") {
		t.Error("the denied server's message is in the timeline")
	}
}
