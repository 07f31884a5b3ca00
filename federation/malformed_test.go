package federation_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"homeserver/internal/testserver"
)

// Every federation endpoint answers malformed requests with the specified
// errors: never a 500, and nothing is written.
func TestMalformedFederationRequests(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	room := a.CreatePublicRoom(alice)
	hs2 := b.SigningKey()
	esc := url.PathEscape
	bigEvent := `{"type":"m.room.member","content":{"membership":"join","pad":"` + strings.Repeat("x", 70000) + `"}}`
	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"make_join other server's user", "GET", "/_matrix/federation/v1/make_join/" + esc(room) + "/" + esc("@eve:hs1.test") + "?ver=10", nil, 403, "M_FORBIDDEN"},
		{"make_join bad user", "GET", "/_matrix/federation/v1/make_join/" + esc(room) + "/nobody?ver=10", nil, 400, "M_INVALID_PARAM"},
		{"make_join bad room", "GET", "/_matrix/federation/v1/make_join/room/" + esc("@bob:hs2.test") + "?ver=10", nil, 400, "M_INVALID_PARAM"},
		{"make_join unknown room", "GET", "/_matrix/federation/v1/make_join/" + esc("!nope:hs1.test") + "/" + esc("@bob:hs2.test") + "?ver=10", nil, 404, "M_NOT_FOUND"},
		{"make_join unsupported version", "GET", "/_matrix/federation/v1/make_join/" + esc(room) + "/" + esc("@bob:hs2.test") + "?ver=1", nil, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"send_join not json", "PUT", "/_matrix/federation/v2/send_join/" + esc(room) + "/$x", "{nope", 400, "M_NOT_JSON"},
		{"send_join not an event", "PUT", "/_matrix/federation/v2/send_join/" + esc(room) + "/$x", `{"a":1}`, 400, "M_BAD_JSON"},
		{"send_join wrong types", "PUT", "/_matrix/federation/v2/send_join/" + esc(room) + "/$x", `{"type":1,"content":[],"sender":true}`, 400, "M_BAD_JSON"},
		{"send_join unsigned", "PUT", "/_matrix/federation/v2/send_join/" + esc(room) + "/$x", `{"type":"m.room.member","room_id":"` + room + `","sender":"@bob:hs2.test","state_key":"@bob:hs2.test","content":{"membership":"join"},"depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":1,"hashes":{"sha256":"x"}}`, 400, "M_BAD_JSON"},
		{"send_join oversized", "PUT", "/_matrix/federation/v2/send_join/" + esc(room) + "/$x", bigEvent, 413, "M_TOO_LARGE"},
		{"send_join unknown room", "PUT", "/_matrix/federation/v2/send_join/" + esc("!nope:hs1.test") + "/$x", `{}`, 404, "M_NOT_FOUND"},
		{"make_leave other server's user", "GET", "/_matrix/federation/v1/make_leave/" + esc(room) + "/" + esc("@alice:hs1.test"), nil, 403, "M_FORBIDDEN"},
		{"send_leave not json", "PUT", "/_matrix/federation/v2/send_leave/" + esc(room) + "/$x", "[", 400, "M_NOT_JSON"},
		{"invite not json", "PUT", "/_matrix/federation/v2/invite/" + esc(room) + "/$x", "nope", 400, "M_NOT_JSON"},
		{"invite missing fields", "PUT", "/_matrix/federation/v2/invite/" + esc(room) + "/$x", `{}`, 400, "M_BAD_JSON"},
		{"invite wrong types", "PUT", "/_matrix/federation/v2/invite/" + esc(room) + "/$x", `{"room_version":10,"event":"x"}`, 400, "M_BAD_JSON"},
		{"invite unknown version", "PUT", "/_matrix/federation/v2/invite/" + esc(room) + "/$x", `{"room_version":"99","event":{}}`, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"invite unsigned", "PUT", "/_matrix/federation/v2/invite/" + esc(room) + "/$x", `{"room_version":"10","event":{"type":"m.room.member","room_id":"` + room + `","sender":"@bob:hs2.test","state_key":"@alice:hs1.test","content":{"membership":"invite"},"depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":1,"hashes":{"sha256":"x"}}}`, 400, "M_BAD_JSON"},
		{"directory without alias", "GET", "/_matrix/federation/v1/query/directory", nil, 400, "M_MISSING_PARAM"},
		{"directory other server", "GET", "/_matrix/federation/v1/query/directory?room_alias=" + url.QueryEscape("#x:hs2.test"), nil, 404, "M_NOT_FOUND"},
		{"directory bad alias", "GET", "/_matrix/federation/v1/query/directory?room_alias=nope", nil, 404, "M_NOT_FOUND"},
		{"profile without user", "GET", "/_matrix/federation/v1/query/profile", nil, 400, "M_MISSING_PARAM"},
		{"profile unknown user", "GET", "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape("@ghost:hs1.test"), nil, 404, "M_NOT_FOUND"},
		{"profile unknown field", "GET", "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(alice.ID) + "&field=nope", nil, 404, "M_NOT_FOUND"},
		{"event unknown", "GET", "/_matrix/federation/v1/event/" + esc("$nope"), nil, 404, "M_NOT_FOUND"},
		{"get_missing_events not json", "POST", "/_matrix/federation/v1/get_missing_events/" + esc(room), "{", 400, "M_NOT_JSON"},
		{"get_missing_events without lists", "POST", "/_matrix/federation/v1/get_missing_events/" + esc(room), `{"limit":5}`, 400, "M_BAD_JSON"},
		{"get_missing_events wrong types", "POST", "/_matrix/federation/v1/get_missing_events/" + esc(room), `{"earliest_events":"x","latest_events":[1]}`, 400, "M_BAD_JSON"},
		{"get_missing_events unknown room", "POST", "/_matrix/federation/v1/get_missing_events/" + esc("!nope:hs1.test"), `{"earliest_events":[],"latest_events":[]}`, 404, "M_NOT_FOUND"},
		{"get_missing_events not in room", "POST", "/_matrix/federation/v1/get_missing_events/" + esc(room), `{"earliest_events":[],"latest_events":[]}`, 403, "M_FORBIDDEN"},
		{"state_ids without event", "GET", "/_matrix/federation/v1/state_ids/" + esc(room), nil, 400, "M_MISSING_PARAM"},
		{"state not in room", "GET", "/_matrix/federation/v1/state/" + esc(room) + "?event_id=$x", nil, 403, "M_FORBIDDEN"},
		{"event_auth unknown room", "GET", "/_matrix/federation/v1/event_auth/" + esc("!nope:hs1.test") + "/$x", nil, 404, "M_NOT_FOUND"},
		{"backfill not in room", "GET", "/_matrix/federation/v1/backfill/" + esc(room) + "?v=$x&limit=5", nil, 403, "M_FORBIDDEN"},
		{"query_auth not json", "POST", "/_matrix/federation/v1/query_auth/" + esc(room) + "/$x", "{", 400, "M_NOT_JSON"},
		{"query_auth without chain", "POST", "/_matrix/federation/v1/query_auth/" + esc(room) + "/$x", `{"missing":[]}`, 400, "M_BAD_JSON"},
		{"query_auth wrong types", "POST", "/_matrix/federation/v1/query_auth/" + esc(room) + "/$x", `{"auth_chain":{}}`, 400, "M_BAD_JSON"},
		{"query_auth not in room", "POST", "/_matrix/federation/v1/query_auth/" + esc(room) + "/$x", `{"auth_chain":[]}`, 403, "M_FORBIDDEN"},
		{"timestamp_to_event without ts", "GET", "/_matrix/federation/v1/timestamp_to_event/" + esc(room) + "?dir=f", nil, 400, "M_MISSING_PARAM"},
		{"timestamp_to_event bad ts", "GET", "/_matrix/federation/v1/timestamp_to_event/" + esc(room) + "?ts=x&dir=f", nil, 400, "M_INVALID_PARAM"},
		{"timestamp_to_event bad dir", "GET", "/_matrix/federation/v1/timestamp_to_event/" + esc(room) + "?ts=1&dir=up", nil, 400, "M_INVALID_PARAM"},
		{"timestamp_to_event not in room", "GET", "/_matrix/federation/v1/timestamp_to_event/" + esc(room) + "?ts=1&dir=f", nil, 403, "M_FORBIDDEN"},
		{"public rooms not listed to other servers by default", "GET", "/_matrix/federation/v1/publicRooms", nil, 403, "M_FORBIDDEN"},
		{"unknown endpoint", "GET", "/_matrix/federation/v1/nonsense", nil, 404, "M_UNRECOGNIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.FedDo(a, hs2, "", tc.method, tc.path, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	// Nothing above changed the room: still alice alone.
	members := a.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/joined_members"), alice.Token, nil)
	if joined, _ := members.JSON["joined"].(map[string]any); len(joined) != 1 {
		t.Errorf("members after the bad requests: %s", members.Body)
	}
	// The event of another room's server: a server not in the room may
	// not read it.
	id := latest(t, a, alice, room)
	if r := f.FedDo(a, hs2, "", "GET", "/_matrix/federation/v1/event/"+esc(id), nil); r.Status != http.StatusForbidden {
		t.Errorf("event for a server not in the room: %d %s", r.Status, r.Body)
	}
}
