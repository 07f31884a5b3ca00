package adminapi_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/server"
	"homeserver/storage"
)

const roomAdminV1, roomAdminV2 = "/_synapse/admin/v1", "/_synapse/admin/v2"

func roomAdminPath(version, roomID, rest string) string {
	return version + "/rooms/" + url.PathEscape(roomID) + rest
}

// roomSetup starts a server with an admin and two users.
func roomSetup(t *testing.T) (s *testserver.Server, admin, alice, bob testserver.User) {
	t.Helper()
	s = testserver.Start(t, "")
	admin = s.Register("boss", "bosspw")
	if err := s.Srv.Accounts().SetAdmin(context.Background(), admin.ID, true); err != nil {
		t.Fatal(err)
	}
	return s, admin, s.Register("alice", "alicepw"), s.Register("bob", "bobpw")
}

func roomWantErr(t *testing.T, what string, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.Status, r.Body, status, errcode)
	}
}

// roomDB opens the server's database for the test to read what it holds.
func roomDB(t *testing.T, s *testserver.Server) *sql.DB {
	t.Helper()
	opts := server.StorageOptions(s.Config.Database)
	// The server writes meanwhile: wait for its lock rather than fail.
	driver, dsn := "sqlite", "file:"+opts.Path+"?_pragma=busy_timeout(10000)"
	if opts.Engine == storage.Postgres {
		driver, dsn = "pgx", opts.DSN
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func roomCount(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func roomExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// roomSearch reads the server's search index: SQLite's file of its own
// (storage.SearchIndexPath), or PostgreSQL's event_search table.
type roomSearch struct {
	t      *testing.T
	main   *sql.DB
	sqlite *sql.DB // nil on PostgreSQL
}

func openRoomSearch(t *testing.T, s *testserver.Server, main *sql.DB) roomSearch {
	t.Helper()
	opts := server.StorageOptions(s.Config.Database)
	if opts.Engine == storage.Postgres {
		return roomSearch{t: t, main: main}
	}
	db, err := sql.Open("sqlite", "file:"+storage.SearchIndexPath(opts.Path)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return roomSearch{t: t, main: main, sqlite: db}
}

// inRoom counts the room's entries.
func (x roomSearch) inRoom(roomID string) int {
	x.t.Helper()
	if x.sqlite == nil {
		return roomCount(x.t, x.main, `SELECT COUNT(*) FROM event_search WHERE room_id = $1`, roomID)
	}
	return roomCount(x.t, x.sqlite, `SELECT COUNT(*) FROM search_entries WHERE room_id = $1`, roomID)
}

// ofEvent counts the event's entries.
func (x roomSearch) ofEvent(eventID string) int {
	x.t.Helper()
	if x.sqlite == nil {
		return roomCount(x.t, x.main, `SELECT COUNT(*) FROM event_search WHERE event_id = $1`, eventID)
	}
	var pos int64
	if err := x.main.QueryRow(`SELECT stream_pos FROM events WHERE event_id = $1`, eventID).Scan(&pos); err != nil {
		x.t.Fatal(err)
	}
	return roomCount(x.t, x.sqlite, `SELECT COUNT(*) FROM search_entries WHERE stream_pos = $1`, pos)
}

// checkNoOrphans checks that the index holds no entry of an event that
// is gone, and, on SQLite, no full-text row without its entry.
func (x roomSearch) checkNoOrphans() {
	x.t.Helper()
	if x.sqlite == nil {
		if n := roomCount(x.t, x.main, `SELECT COUNT(*) FROM event_search WHERE event_id NOT IN (SELECT event_id FROM events)`); n != 0 {
			x.t.Errorf("search entries of purged events: %d", n)
		}
		return
	}
	if n := roomCount(x.t, x.sqlite, `SELECT COUNT(*) FROM event_search_fts WHERE rowid NOT IN (SELECT stream_pos FROM search_entries)`); n != 0 {
		x.t.Errorf("full-text entries of purged events left: %d", n)
	}
	rows, err := x.sqlite.Query(`SELECT stream_pos FROM search_entries`)
	if err != nil {
		x.t.Fatal(err)
	}
	var positions []int64
	for rows.Next() {
		var pos int64
		if err := rows.Scan(&pos); err != nil {
			x.t.Fatal(err)
		}
		positions = append(positions, pos)
	}
	rows.Close()
	for _, pos := range positions {
		if roomCount(x.t, x.main, `SELECT COUNT(*) FROM events WHERE stream_pos = $1`, pos) == 0 {
			x.t.Errorf("search entry of a purged event at %d", pos)
		}
	}
}

func roomListIDs(r *testserver.Response) []string {
	var ids []string
	for _, x := range r.JSON["rooms"].([]any) {
		ids = append(ids, x.(map[string]any)["room_id"].(string))
	}
	return ids
}

func roomEntry(t *testing.T, r *testserver.Response, roomID string) map[string]any {
	t.Helper()
	for _, x := range r.JSON["rooms"].([]any) {
		if m := x.(map[string]any); m["room_id"] == roomID {
			return m
		}
	}
	t.Fatalf("room %s not in %s", roomID, r.Body)
	return nil
}

func TestAdminRoomList(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	alpha := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Alpha", "room_alias_name": "alpharoom", "visibility": "public"})
	beta := s.CreateRoom(alice, map[string]any{"name": "Beta", "initial_state": []any{
		map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
	}, "creation_content": map[string]any{"m.federate": false}})
	gamma := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Gamma"})
	s.Join(bob, gamma)
	space := s.CreateRoom(bob, map[string]any{"creation_content": map[string]any{"type": "m.space"}})

	list := func(query string) *testserver.Response {
		return s.MustDo(http.StatusOK, "GET", roomAdminV1+"/rooms"+query, admin.Token, nil)
	}
	r := list("")
	// By name, rooms without one last.
	if got, want := roomListIDs(r), []string{alpha, beta, gamma, space}; !slices.Equal(got, want) {
		t.Fatalf("default order: %v, want %v", got, want)
	}
	if r.JSON["total_rooms"] != 4.0 || r.JSON["offset"] != 0.0 || r.JSON["next_batch"] != nil || r.JSON["prev_batch"] != nil {
		t.Fatalf("pagination fields: %s", r.Body)
	}
	a := roomEntry(t, r, alpha)
	want := map[string]any{
		"name": "Alpha", "canonical_alias": "#alpharoom:" + s.Config.ServerName, "joined_members": 1.0, "joined_local_members": 1.0,
		"creator": alice.ID, "encryption": nil, "federatable": true, "public": true, "join_rules": "public",
		"history_visibility": "shared", "room_type": nil,
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("alpha %s = %v, want %v", k, a[k], v)
		}
	}
	if a["state_events"].(float64) < 5 || a["version"] == "" {
		t.Errorf("alpha: %v", a)
	}
	b := roomEntry(t, r, beta)
	if b["encryption"] != "m.megolm.v1.aes-sha2" || b["federatable"] != false || b["public"] != false || b["join_rules"] != "invite" {
		t.Errorf("beta: %v", b)
	}
	if g := roomEntry(t, r, gamma); g["joined_members"] != 2.0 || g["joined_local_members"] != 2.0 {
		t.Errorf("gamma: %v", g)
	}
	if sp := roomEntry(t, r, space); sp["room_type"] != "m.space" || sp["name"] != nil {
		t.Errorf("space: %v", sp)
	}

	// Pagination.
	r = list("?limit=2")
	if got := roomListIDs(r); !slices.Equal(got, []string{alpha, beta}) || r.JSON["next_batch"] != 2.0 || r.JSON["prev_batch"] != nil {
		t.Fatalf("first page: %s", r.Body)
	}
	r = list("?limit=2&from=2")
	if got := roomListIDs(r); !slices.Equal(got, []string{gamma, space}) || r.JSON["next_batch"] != nil || r.JSON["prev_batch"] != 0.0 || r.JSON["offset"] != 2.0 {
		t.Fatalf("second page: %s", r.Body)
	}
	// Orders and directions.
	if got := roomListIDs(list("?order_by=joined_members&limit=1")); !slices.Equal(got, []string{gamma}) {
		t.Fatalf("by joined_members: %v", got)
	}
	if got := roomListIDs(list("?dir=b")); !slices.Equal(got, []string{gamma, beta, alpha, space}) {
		t.Fatalf("by name backwards: %v", got)
	}
	if got := roomListIDs(list("?order_by=encryption&limit=1")); !slices.Equal(got, []string{beta}) {
		t.Fatalf("by encryption: %v", got)
	}
	for _, o := range []string{"alphabetical", "size", "canonical_alias", "joined_local_members", "version", "creator", "federatable",
		"public", "join_rules", "guest_access", "history_visibility", "state_events"} {
		if r := list("?order_by=" + o); r.JSON["total_rooms"] != 4.0 || len(roomListIDs(r)) != 4 {
			t.Fatalf("order_by=%s: %s", o, r.Body)
		}
	}
	// Search: name (any case), alias, room ID.
	if got := roomListIDs(list("?search_term=GAM")); !slices.Equal(got, []string{gamma}) {
		t.Fatalf("search by name: %v", got)
	}
	if got := roomListIDs(list("?search_term=alpharoom")); !slices.Equal(got, []string{alpha}) {
		t.Fatalf("search by alias: %v", got)
	}
	if r := list("?search_term=" + url.QueryEscape(beta)); !slices.Equal(roomListIDs(r), []string{beta}) || r.JSON["total_rooms"] != 1.0 {
		t.Fatalf("search by room ID: %s", r.Body)
	}
	if got := roomListIDs(list("?public_rooms=true")); !slices.Equal(got, []string{alpha}) {
		t.Fatalf("public rooms: %v", got)
	}

	for _, q := range []string{"?from=-1", "?limit=-5", "?limit=abc", "?order_by=bogus", "?dir=x", "?search_term=", "?public_rooms=maybe"} {
		roomWantErr(t, q, s.Do("GET", roomAdminV1+"/rooms"+q, admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	roomWantErr(t, "non-admin", s.Do("GET", roomAdminV1+"/rooms", alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
}

func TestAdminRoomDetailsMembersState(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Details", "topic": "About things"})
	s.Join(bob, room)
	s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.avatar/"), alice.Token, map[string]any{"url": "mxc://x/y"})

	r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, ""), admin.Token, nil)
	want := map[string]any{
		"room_id": room, "name": "Details", "topic": "About things", "avatar": "mxc://x/y", "joined_members": 2.0,
		"joined_local_members": 2.0, "joined_local_devices": 2.0, "forgotten": false, "creator": alice.ID, "public": false,
	}
	for k, v := range want {
		if r.JSON[k] != v {
			t.Errorf("details %s = %v, want %v (%s)", k, r.JSON[k], v, r.Body)
		}
	}

	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/members"), admin.Token, nil)
	members := r.JSON["members"].([]any)
	if r.JSON["total"] != 2.0 || !slices.Contains(members, any(alice.ID)) || !slices.Contains(members, any(bob.ID)) {
		t.Fatalf("members: %s", r.Body)
	}

	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/state"), admin.Token, nil)
	types := map[string]int{}
	for _, e := range r.JSON["state"].([]any) {
		ev := e.(map[string]any)
		types[ev["type"].(string)]++
		if ev["event_id"] == nil || ev["sender"] == nil {
			t.Fatalf("state event not in client format: %v", ev)
		}
	}
	if types["m.room.create"] != 1 || types["m.room.member"] != 2 || types["m.room.topic"] != 1 {
		t.Fatalf("state types: %v", types)
	}
	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/state?type=m.room.member"), admin.Token, nil)
	if n := len(r.JSON["state"].([]any)); n != 2 {
		t.Fatalf("state of type m.room.member: %s", r.Body)
	}

	// Bob leaves and forgets; alice too: the room is forgotten.
	for _, u := range []testserver.User{alice, bob} {
		s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/leave"), u.Token, map[string]any{})
		s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/forget"), u.Token, map[string]any{})
	}
	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, ""), admin.Token, nil)
	if r.JSON["forgotten"] != true || r.JSON["joined_members"] != 0.0 || r.JSON["joined_local_devices"] != 0.0 {
		t.Fatalf("details after all left and forgot: %s", r.Body)
	}

	unknown := "!nowhere:" + s.Config.ServerName
	for _, rest := range []string{"", "/members", "/state"} {
		roomWantErr(t, "unknown"+rest, s.Do("GET", roomAdminPath(roomAdminV1, unknown, rest), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
		roomWantErr(t, "malformed"+rest, s.Do("GET", roomAdminPath(roomAdminV1, "not-a-room", rest), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
		roomWantErr(t, "non-admin"+rest, s.Do("GET", roomAdminPath(roomAdminV1, room, rest), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	}
}

func TestAdminRoomMessagesContext(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	room := s.CreateRoom(alice, map[string]any{"initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}},
	}})
	var ids []string
	for i := range 5 {
		ids = append(ids, s.SendText(alice, room, fmt.Sprintf("msg %d", i)))
	}
	// Bob, not in the room, may not read it; the admin, not in it either, may.
	roomWantErr(t, "bob's /messages", s.Do("GET", testserver.RoomPath(room, "/messages?dir=b"), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/messages?dir=b&limit=3"), admin.Token, nil)
	chunk := r.JSON["chunk"].([]any)
	if len(chunk) != 3 || chunk[0].(map[string]any)["event_id"] != ids[4] || chunk[2].(map[string]any)["event_id"] != ids[2] || r.String("end") == "" {
		t.Fatalf("backwards page: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/messages?dir=b&limit=100&from="+url.QueryEscape(r.String("end"))), admin.Token, nil)
	chunk = r.JSON["chunk"].([]any)
	if len(chunk) < 2 || chunk[0].(map[string]any)["event_id"] != ids[1] {
		t.Fatalf("second page: %s", r.Body)
	}
	// Forwards by default, filtered.
	filter := url.QueryEscape(`{"types":["m.room.message"]}`)
	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/messages?filter="+filter), admin.Token, nil)
	chunk = r.JSON["chunk"].([]any)
	if len(chunk) != 5 || chunk[0].(map[string]any)["event_id"] != ids[0] {
		t.Fatalf("forwards, filtered: %s", r.Body)
	}

	r = s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, room, "/context/"+url.PathEscape(ids[2])+"?limit=2"), admin.Token, nil)
	if r.JSON["event"].(map[string]any)["event_id"] != ids[2] || len(r.JSON["events_before"].([]any)) != 1 || len(r.JSON["events_after"].([]any)) != 1 ||
		r.JSON["events_after"].([]any)[0].(map[string]any)["event_id"] != ids[3] || len(r.JSON["state"].([]any)) == 0 || r.String("start") == "" {
		t.Fatalf("context: %s", r.Body)
	}

	other := s.CreateRoom(bob, nil)
	otherEvent := s.SendText(bob, other, "elsewhere")
	unknown := "!nowhere:" + s.Config.ServerName
	roomWantErr(t, "unknown room", s.Do("GET", roomAdminPath(roomAdminV1, unknown, "/messages"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "malformed room", s.Do("GET", roomAdminPath(roomAdminV1, "bad", "/messages"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "bad dir", s.Do("GET", roomAdminPath(roomAdminV1, room, "/messages?dir=up"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	roomWantErr(t, "bad limit", s.Do("GET", roomAdminPath(roomAdminV1, room, "/messages?limit=-1"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	roomWantErr(t, "bad filter", s.Do("GET", roomAdminPath(roomAdminV1, room, "/messages?filter=%7Bnope"), admin.Token, nil), http.StatusBadRequest, "M_NOT_JSON")
	roomWantErr(t, "bad token", s.Do("GET", roomAdminPath(roomAdminV1, room, "/messages?from=zzz"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	roomWantErr(t, "non-admin", s.Do("GET", roomAdminPath(roomAdminV1, room, "/messages"), alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "unknown event", s.Do("GET", roomAdminPath(roomAdminV1, room, "/context/$nope"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "event of another room", s.Do("GET", roomAdminPath(roomAdminV1, room, "/context/"+url.PathEscape(otherEvent)), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "context non-admin", s.Do("GET", roomAdminPath(roomAdminV1, room, "/context/"+url.PathEscape(ids[0])), alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "context bad limit", s.Do("GET", roomAdminPath(roomAdminV1, room, "/context/"+url.PathEscape(ids[0])+"?limit=x"), admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestAdminRoomBlock(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	room := s.CreatePublicRoom(alice)
	block := roomAdminPath(roomAdminV1, room, "/block")
	if r := s.MustDo(http.StatusOK, "GET", block, admin.Token, nil); r.JSON["block"] != false || r.JSON["user_id"] != nil {
		t.Fatalf("initial status: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "PUT", block, admin.Token, map[string]any{"block": true}); r.JSON["block"] != true {
		t.Fatalf("block: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", block, admin.Token, nil); r.JSON["block"] != true || r.JSON["user_id"] != admin.ID {
		t.Fatalf("status after block: %s", r.Body)
	}
	if n := roomCount(t, roomDB(t, s), `SELECT COUNT(*) FROM blocked_rooms WHERE room_id = $1 AND user_id = $2`, room, admin.ID); n != 1 {
		t.Fatalf("blocked_rooms rows: %d", n)
	}
	roomWantErr(t, "join blocked", s.Do("POST", testserver.RoomPath(room, "/join"), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "invite into blocked", s.Do("POST", testserver.RoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": bob.ID}),
		http.StatusForbidden, "M_FORBIDDEN")
	// Members stay, and can still talk and leave.
	s.SendText(alice, room, "still here")

	s.MustDo(http.StatusOK, "PUT", block, admin.Token, map[string]any{"block": false})
	if r := s.MustDo(http.StatusOK, "GET", block, admin.Token, nil); r.JSON["block"] != false {
		t.Fatalf("status after unblock: %s", r.Body)
	}
	s.Join(bob, room)

	// A room never seen can be blocked ahead.
	ahead := "!future:elsewhere.example"
	s.MustDo(http.StatusOK, "PUT", roomAdminPath(roomAdminV1, ahead, "/block"), admin.Token, map[string]any{"block": true})
	if r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, ahead, "/block"), admin.Token, nil); r.JSON["block"] != true {
		t.Fatalf("blocked ahead: %s", r.Body)
	}
	roomWantErr(t, "join blocked ahead", s.Do("POST", testserver.RoomPath(ahead, "/join"), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

	roomWantErr(t, "malformed GET", s.Do("GET", roomAdminPath(roomAdminV1, "nope", "/block"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "malformed PUT", s.Do("PUT", roomAdminPath(roomAdminV1, "nope", "/block"), admin.Token, map[string]any{"block": true}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "missing block", s.Do("PUT", block, admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	roomWantErr(t, "non-bool block", s.Do("PUT", block, admin.Token, map[string]any{"block": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	roomWantErr(t, "not JSON", s.Do("PUT", block, admin.Token, "{"), http.StatusBadRequest, "M_NOT_JSON")
	roomWantErr(t, "non-admin GET", s.Do("GET", block, alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "non-admin PUT", s.Do("PUT", block, alice.Token, map[string]any{"block": true}), http.StatusForbidden, "M_FORBIDDEN")
}

// roomWaitDelete polls a deletion's status until it ends.
func roomWaitDelete(t *testing.T, s *testserver.Server, admin testserver.User, deleteID string) *testserver.Response {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.MustDo(http.StatusOK, "GET", roomAdminV2+"/rooms/delete_status/"+url.PathEscape(deleteID), admin.Token, nil)
		if st := r.String("status"); st == "complete" || st == "failed" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("deletion %s still running: %s", deleteID, r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// roomTables are the tables holding rows of a room, and the query that
// counts them.
var roomTables = map[string]string{
	"rooms":                        `SELECT COUNT(*) FROM rooms WHERE room_id = $1`,
	"events":                       `SELECT COUNT(*) FROM events WHERE room_id = $1`,
	"current_state":                `SELECT COUNT(*) FROM current_state WHERE room_id = $1`,
	"state_groups":                 `SELECT COUNT(*) FROM state_groups WHERE room_id = $1`,
	"forward_extremities":          `SELECT COUNT(*) FROM forward_extremities WHERE room_id = $1`,
	"backward_extremities":         `SELECT COUNT(*) FROM backward_extremities WHERE room_id = $1`,
	"event_relations":              `SELECT COUNT(*) FROM event_relations WHERE room_id = $1`,
	"event_search":                 `SELECT COUNT(*) FROM event_search WHERE room_id = $1`,
	"receipts":                     `SELECT COUNT(*) FROM receipts WHERE room_id = $1`,
	"account_data":                 `SELECT COUNT(*) FROM account_data WHERE room_id = $1`,
	"push_event_notifications":     `SELECT COUNT(*) FROM push_event_notifications WHERE room_id = $1`,
	"push_room_slots":              `SELECT COUNT(*) FROM push_room_slots WHERE room_id = $1`,
	"room_aliases":                 `SELECT COUNT(*) FROM room_aliases WHERE room_id = $1`,
	"room_servers":                 `SELECT COUNT(*) FROM room_servers WHERE room_id = $1`,
	"forgotten_rooms":              `SELECT COUNT(*) FROM forgotten_rooms WHERE room_id = $1`,
	"user_directory_public_rooms":  `SELECT COUNT(*) FROM user_directory_public_rooms WHERE room_id = $1`,
	"invite_stripped_state":        `SELECT COUNT(*) FROM invite_stripped_state WHERE room_id = $1`,
	"rejected_events":              `SELECT COUNT(*) FROM rejected_events WHERE room_id = $1`,
	"appservice_room_list":         `SELECT COUNT(*) FROM appservice_room_list WHERE room_id = $1`,
	"key_backup_keys":              `SELECT COUNT(*) FROM key_backup_keys WHERE room_id = $1`,
	"federation_destination_rooms": `SELECT COUNT(*) FROM federation_destination_rooms WHERE room_id = $1`,
}

func TestAdminRoomDelete(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	db := roomDB(t, s)
	server := s.Config.ServerName
	doomed := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Doomed", "room_alias_name": "doomed", "visibility": "public"})
	keep := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Keep"})
	for _, room := range []string{doomed, keep} {
		s.Join(bob, room)
		s.SendText(alice, room, "searchable words in "+room)
		ev := s.SendText(bob, room, "reply")
		s.Send(alice, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": ev, "key": "+1"}})
		s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/receipt/m.read/"+url.PathEscape(ev)), alice.Token, map[string]any{})
		s.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.ID)+"/rooms/"+url.PathEscape(room)+"/tags/u.work",
			alice.Token, map[string]any{"order": 0.5})
	}
	keepEvent := s.SendText(alice, keep, "after all")
	// The search index and push notifications fill in the background.
	deadline := time.Now().Add(10 * time.Second)
	idx := openRoomSearch(t, s, db)
	for idx.inRoom(doomed) == 0 ||
		roomCount(t, db, `SELECT COUNT(*) FROM push_event_notifications WHERE room_id = $1`, doomed) == 0 ||
		idx.ofEvent(keepEvent) == 0 ||
		roomCount(t, db, `SELECT COUNT(*) FROM push_event_notifications WHERE event_id = $1`, keepEvent) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("search index or notifications never filled")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The room's rows are there to go.
	for _, table := range []string{"rooms", "events", "current_state", "state_groups", "forward_extremities", "event_relations",
		"receipts", "account_data", "push_event_notifications", "push_room_slots", "room_aliases", "room_servers"} {
		if roomCount(t, db, roomTables[table], doomed) == 0 {
			t.Fatalf("%s holds no rows of the room before its deletion", table)
		}
	}
	keepCounts := map[string]int{}
	for table, q := range roomTables {
		keepCounts[table] = roomCount(t, db, q, keep)
	}
	keepIndexed := idx.inRoom(keep)

	r := s.MustDo(http.StatusOK, "DELETE", roomAdminPath(roomAdminV2, doomed, ""), admin.Token, map[string]any{
		"new_room_user_id": "@moderator:" + server, "room_name": "Gone", "message": "This room is gone", "block": true,
	})
	deleteID := r.String("delete_id")
	if deleteID == "" {
		t.Fatalf("no delete_id: %s", r.Body)
	}
	r = roomWaitDelete(t, s, admin, deleteID)
	if r.String("status") != "complete" || r.String("room_id") != doomed || r.String("delete_id") != deleteID {
		t.Fatalf("status: %s", r.Body)
	}
	res := r.JSON["shutdown_room"].(map[string]any)
	kicked := res["kicked_users"].([]any)
	newRoom, _ := res["new_room_id"].(string)
	if len(kicked) != 2 || !slices.Contains(kicked, any(alice.ID)) || !slices.Contains(kicked, any(bob.ID)) ||
		len(res["failed_to_kick_users"].([]any)) != 0 || newRoom == "" ||
		!slices.Equal(res["local_aliases"].([]any), []any{"#doomed:" + server}) {
		t.Fatalf("shutdown_room: %s", r.Body)
	}
	byRoom := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV2, doomed, "/delete_status"), admin.Token, nil)
	if results := byRoom.JSON["results"].([]any); len(results) != 1 || results[0].(map[string]any)["delete_id"] != deleteID {
		t.Fatalf("status by room: %s", byRoom.Body)
	}

	// Nothing of the room remains.
	for table, q := range roomTables {
		if n := roomCount(t, db, q, doomed); n != 0 {
			t.Errorf("%s still holds %d rows of the room", table, n)
		}
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM state_group_entries WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)
		OR group_id NOT IN (SELECT id FROM state_groups)`, doomed); n != 0 {
		t.Errorf("state_group_entries left: %d", n)
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM event_txns WHERE event_id NOT IN (SELECT event_id FROM events)`); n != 0 {
		t.Errorf("event_txns of purged events left: %d", n)
	}
	if n := idx.inRoom(doomed); n != 0 {
		t.Errorf("search index still holds %d entries of the room", n)
	}
	idx.checkNoOrphans()
	if n := idx.inRoom(keep); n != keepIndexed {
		t.Errorf("search index: the other room's entries went from %d to %d", keepIndexed, n)
	}
	// The other room is untouched.
	for table, q := range roomTables {
		if n := roomCount(t, db, q, keep); n != keepCounts[table] {
			t.Errorf("%s: the other room's rows went from %d to %d", table, keepCounts[table], n)
		}
	}
	// The room is blocked, its alias points at the new room, which the
	// users joined and which says why.
	if r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, doomed, "/block"), admin.Token, nil); r.JSON["block"] != true {
		t.Fatalf("not blocked: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#doomed:"+server), alice.Token, nil); r.String("room_id") != newRoom {
		t.Fatalf("alias: %s", r.Body)
	}
	joined := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/joined_rooms", alice.Token, nil).JSON["joined_rooms"].([]any)
	if !slices.Contains(joined, any(newRoom)) || !slices.Contains(joined, any(keep)) || slices.Contains(joined, any(doomed)) {
		t.Fatalf("alice's rooms: %v", joined)
	}
	msgs := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(newRoom, "/messages?dir=b&limit=50"), bob.Token, nil)
	found := false
	for _, e := range msgs.JSON["chunk"].([]any) {
		if c, _ := e.(map[string]any)["content"].(map[string]any); c["body"] == "This room is gone" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no shutdown message in the new room: %s", msgs.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, newRoom, ""), admin.Token, nil); r.JSON["name"] != "Gone" {
		t.Fatalf("new room: %s", r.Body)
	}
	roomWantErr(t, "details of purged room", s.Do("GET", roomAdminPath(roomAdminV1, doomed, ""), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "rejoin purged room", s.Do("POST", testserver.RoomPath(doomed, "/join"), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

	// The users' other data still reads: the other room's history, sync,
	// search and tags.
	msgs = s.MustDo(http.StatusOK, "GET", testserver.RoomPath(keep, "/messages?dir=b&limit=1"), bob.Token, nil)
	if c := msgs.JSON["chunk"].([]any); len(c) != 1 || c[0].(map[string]any)["event_id"] != keepEvent {
		t.Fatalf("other room's messages: %s", msgs.Body)
	}
	sync := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync", alice.Token, nil)
	join := sync.JSON["rooms"].(map[string]any)["join"].(map[string]any)
	if join[keep] == nil || join[newRoom] == nil || join[doomed] != nil {
		t.Fatalf("sync rooms: %v", join)
	}
	tags := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.ID)+"/rooms/"+url.PathEscape(keep)+"/tags", alice.Token, nil)
	if tags.JSON["tags"].(map[string]any)["u.work"] == nil {
		t.Fatalf("other room's tags: %s", tags.Body)
	}
	search := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/search", alice.Token, map[string]any{
		"search_categories": map[string]any{"room_events": map[string]any{"search_term": "searchable"}},
	})
	results := search.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)["results"].([]any)
	if len(results) != 1 || results[0].(map[string]any)["result"].(map[string]any)["room_id"] != keep {
		t.Fatalf("search: %s", search.Body)
	}

	// Errors.
	roomWantErr(t, "non-admin", s.Do("DELETE", roomAdminPath(roomAdminV2, keep, ""), alice.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "malformed", s.Do("DELETE", roomAdminPath(roomAdminV2, "bad", ""), admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "unknown room", s.Do("DELETE", roomAdminPath(roomAdminV2, "!nowhere:"+server, ""), admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "non-bool purge", s.Do("DELETE", roomAdminPath(roomAdminV2, keep, ""), admin.Token, map[string]any{"purge": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	roomWantErr(t, "no body", s.Do("DELETE", roomAdminPath(roomAdminV2, keep, ""), admin.Token, nil), http.StatusBadRequest, "M_NOT_JSON")
	roomWantErr(t, "remote new room user", s.Do("DELETE", roomAdminPath(roomAdminV2, keep, ""), admin.Token, map[string]any{"new_room_user_id": "@x:elsewhere.example"}),
		http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "unknown delete id", s.Do("GET", roomAdminV2+"/rooms/delete_status/nope", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "no tasks for room", s.Do("GET", roomAdminPath(roomAdminV2, keep, "/delete_status"), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "status malformed room", s.Do("GET", roomAdminPath(roomAdminV2, "bad", "/delete_status"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "status non-admin", s.Do("GET", roomAdminV2+"/rooms/delete_status/"+deleteID, alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	// Without purge nor new room: the members leave, the aliases go, the
	// room stays; an unknown room can be deleted when blocking it.
	s.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#keep:"+server), alice.Token, map[string]any{"room_id": keep})
	r = s.MustDo(http.StatusOK, "DELETE", roomAdminPath(roomAdminV2, keep, ""), admin.Token, map[string]any{"purge": false})
	r = roomWaitDelete(t, s, admin, r.String("delete_id"))
	res = r.JSON["shutdown_room"].(map[string]any)
	if r.String("status") != "complete" || len(res["kicked_users"].([]any)) != 2 || res["new_room_id"] != nil ||
		!slices.Equal(res["local_aliases"].([]any), []any{"#keep:" + server}) {
		t.Fatalf("shutdown without purge: %s", r.Body)
	}
	if d := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, keep, ""), admin.Token, nil); d.JSON["joined_members"] != 0.0 || d.JSON["forgotten"] != true {
		t.Fatalf("room after shutdown: %s", d.Body)
	}
	roomWantErr(t, "alias removed", s.Do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#keep:"+server), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	if r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, keep, "/block"), admin.Token, nil); r.JSON["block"] != false {
		t.Fatalf("blocked without asking: %s", r.Body)
	}
	// A deletion still running refuses another; one whose process died
	// (no heartbeat for long) is reported failed and refuses nothing.
	keepTask := r.String("delete_id")
	roomExec(t, db, `UPDATE room_delete_tasks SET status = 'active', updated_ts = $1 WHERE delete_id = $2`, time.Now().UnixMilli(), keepTask)
	roomWantErr(t, "already running", s.Do("DELETE", roomAdminPath(roomAdminV2, keep, ""), admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
	roomExec(t, db, `UPDATE room_delete_tasks SET updated_ts = $1 WHERE delete_id = $2`, time.Now().Add(-time.Hour).UnixMilli(), keepTask)
	if r := s.MustDo(http.StatusOK, "GET", roomAdminV2+"/rooms/delete_status/"+keepTask, admin.Token, nil); r.String("status") != "failed" || r.String("error") == "" {
		t.Fatalf("abandoned task: %s", r.Body)
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM room_delete_tasks WHERE delete_id = $1 AND status = 'failed'`, keepTask); n != 1 {
		t.Fatal("abandoned task not recorded as failed")
	}
	r = s.MustDo(http.StatusOK, "DELETE", roomAdminPath(roomAdminV2, keep, ""), admin.Token, map[string]any{"purge": false})
	if r = roomWaitDelete(t, s, admin, r.String("delete_id")); r.String("status") != "complete" {
		t.Fatalf("deletion after an abandoned one: %s", r.Body)
	}

	unknown := "!unseen:elsewhere.example"
	r = s.MustDo(http.StatusOK, "DELETE", roomAdminPath(roomAdminV2, unknown, ""), admin.Token, map[string]any{"block": true})
	if r = roomWaitDelete(t, s, admin, r.String("delete_id")); r.String("status") != "complete" {
		t.Fatalf("deleting an unknown room: %s", r.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, unknown, "/block"), admin.Token, nil); r.JSON["block"] != true {
		t.Fatalf("unknown room not blocked: %s", r.Body)
	}
}

func TestAdminRoomJoinMakeAdminExtremities(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	server := s.Config.ServerName
	public := s.CreatePublicRoom(alice)
	private := s.CreateRoom(alice, map[string]any{"preset": "private_chat", "room_alias_name": "secret"})

	join := func(room string) string { return roomAdminV1 + "/join/" + url.PathEscape(room) }
	if r := s.MustDo(http.StatusOK, "POST", join(public), admin.Token, map[string]any{"user_id": bob.ID}); r.String("room_id") != public {
		t.Fatalf("join: %s", r.Body)
	}
	if m := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, public, "/members"), admin.Token, nil); m.JSON["total"] != 2.0 {
		t.Fatalf("members after force join: %s", m.Body)
	}
	// Into a private room, the admin must be able to invite: not a member, they cannot.
	roomWantErr(t, "join private", s.Do("POST", join(private), admin.Token, map[string]any{"user_id": bob.ID}), http.StatusForbidden, "M_FORBIDDEN")

	// make_room_admin: the admin gets alice's power (and an invite).
	s.MustDo(http.StatusOK, "POST", roomAdminPath(roomAdminV1, "#secret:"+server, "/make_room_admin"), admin.Token, map[string]any{})
	pl := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(private, "/state/m.room.power_levels/"), alice.Token, nil)
	if users := pl.JSON["users"].(map[string]any); users[admin.ID] != 100.0 || users[alice.ID] != 100.0 {
		t.Fatalf("power levels: %s", pl.Body)
	}
	inv := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(private, "/state/m.room.member/"+url.PathEscape(admin.ID)), alice.Token, nil)
	if inv.String("membership") != "invite" {
		t.Fatalf("admin's membership: %s", inv.Body)
	}
	s.Join(admin, private)
	if r := s.MustDo(http.StatusOK, "POST", join("#secret:"+server), admin.Token, map[string]any{"user_id": bob.ID}); r.String("room_id") != private {
		t.Fatalf("join by alias: %s", r.Body)
	}
	// Another user, already in the room: power only.
	s.MustDo(http.StatusOK, "POST", roomAdminPath(roomAdminV1, private, "/make_room_admin"), admin.Token, map[string]any{"user_id": bob.ID})
	pl = s.MustDo(http.StatusOK, "GET", testserver.RoomPath(private, "/state/m.room.power_levels/"), alice.Token, nil)
	if pl.JSON["users"].(map[string]any)[bob.ID] != 100.0 {
		t.Fatalf("bob's power: %s", pl.Body)
	}

	last := s.SendText(alice, public, "latest")
	r := s.MustDo(http.StatusOK, "GET", roomAdminPath(roomAdminV1, public, "/forward_extremities"), admin.Token, nil)
	results := r.JSON["results"].([]any)
	if r.JSON["count"] != 1.0 || len(results) != 1 {
		t.Fatalf("forward extremities: %s", r.Body)
	}
	x := results[0].(map[string]any)
	if x["event_id"] != last || x["depth"].(float64) < 5 || x["state_group"].(float64) <= 0 || x["received_ts"].(float64) <= 0 {
		t.Fatalf("extremity: %v", x)
	}

	// Errors.
	unknownRoom := "!nowhere:" + server
	roomWantErr(t, "join non-admin", s.Do("POST", join(public), alice.Token, map[string]any{"user_id": bob.ID}), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "join missing user", s.Do("POST", join(public), admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	roomWantErr(t, "join bad user", s.Do("POST", join(public), admin.Token, map[string]any{"user_id": "bob"}), http.StatusBadRequest, "M_INVALID_PARAM")
	roomWantErr(t, "join remote user", s.Do("POST", join(public), admin.Token, map[string]any{"user_id": "@x:elsewhere.example"}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "join unknown user", s.Do("POST", join(public), admin.Token, map[string]any{"user_id": "@ghost:" + server}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "join unknown alias", s.Do("POST", join("#none:"+server), admin.Token, map[string]any{"user_id": bob.ID}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "join malformed room", s.Do("POST", join("junk"), admin.Token, map[string]any{"user_id": bob.ID}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "join unknown room", s.Do("POST", join(unknownRoom), admin.Token, map[string]any{"user_id": bob.ID}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "join not JSON", s.Do("POST", join(public), admin.Token, "nope"), http.StatusBadRequest, "M_NOT_JSON")
	mra := func(room string) string { return roomAdminPath(roomAdminV1, room, "/make_room_admin") }
	roomWantErr(t, "make_room_admin non-admin", s.Do("POST", mra(public), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "make_room_admin unknown room", s.Do("POST", mra(unknownRoom), admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "make_room_admin malformed", s.Do("POST", mra("junk"), admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "make_room_admin bad user", s.Do("POST", mra(public), admin.Token, map[string]any{"user_id": 5}), http.StatusBadRequest, "M_BAD_JSON")
	fx := func(room string) string { return roomAdminPath(roomAdminV1, room, "/forward_extremities") }
	roomWantErr(t, "extremities non-admin", s.Do("GET", fx(public), alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "extremities unknown", s.Do("GET", fx(unknownRoom), admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "extremities malformed", s.Do("GET", fx("junk"), admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
}

// roomWaitPurge polls a history purge's status until it ends.
func roomWaitPurge(t *testing.T, s *testserver.Server, admin testserver.User, purgeID string) *testserver.Response {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.MustDo(http.StatusOK, "GET", roomAdminV1+"/purge_history_status/"+url.PathEscape(purgeID), admin.Token, nil)
		if st := r.String("status"); st == "complete" || st == "failed" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge %s still running: %s", purgeID, r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAdminRoomPurgeHistory(t *testing.T) {
	s, admin, alice, bob := roomSetup(t)
	db := roomDB(t, s)
	room := s.CreatePublicRoom(alice)
	s.Join(bob, room)
	var ids []string
	for i := range 5 {
		ids = append(ids, s.SendText(alice, room, fmt.Sprintf("history %d", i)))
	}
	other := s.CreatePublicRoom(bob)
	otherEvent := s.SendText(bob, other, "elsewhere")
	// The history is indexed for search (in order) before it is purged.
	idx := openRoomSearch(t, s, db)
	for deadline := time.Now().Add(10 * time.Second); idx.ofEvent(otherEvent) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("search index never filled")
		}
	}
	stateBefore := roomCount(t, db, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND state_key IS NOT NULL`, room)
	currentBefore := roomCount(t, db, `SELECT COUNT(*) FROM current_state WHERE room_id = $1`, room)
	purge := func(rest string, body any) *testserver.Response {
		return s.Do("POST", roomAdminV1+"/purge_history/"+url.PathEscape(room)+rest, admin.Token, body)
	}

	// Local events stay unless asked.
	r := purge("", map[string]any{"purge_up_to_event_id": ids[3]})
	if r.Status != http.StatusOK || r.String("purge_id") == "" {
		t.Fatalf("purge: %s", r.Body)
	}
	if st := roomWaitPurge(t, s, admin, r.String("purge_id")); st.String("status") != "complete" {
		t.Fatalf("status: %s", st.Body)
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND state_key IS NULL`, room); n != 5 {
		t.Fatalf("local messages purged without delete_local_events: %d left", n)
	}

	r = purge("/"+url.PathEscape(ids[3]), map[string]any{"delete_local_events": true})
	if st := roomWaitPurge(t, s, admin, r.String("purge_id")); st.String("status") != "complete" {
		t.Fatalf("status: %s", st.Body)
	}
	for i, id := range ids {
		n := roomCount(t, db, `SELECT COUNT(*) FROM events WHERE event_id = $1`, id)
		if (i < 3 && n != 0) || (i >= 3 && n != 1) {
			t.Errorf("event %d: %d rows", i, n)
		}
	}
	// State is kept whole, and the room works on.
	if n := roomCount(t, db, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND state_key IS NOT NULL`, room); n != stateBefore {
		t.Fatalf("state events: %d, want %d", n, stateBefore)
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM current_state c WHERE room_id = $1 AND EXISTS (SELECT 1 FROM events e WHERE e.event_id = c.event_id)`, room); n != currentBefore {
		t.Fatalf("current state: %d, want %d", n, currentBefore)
	}
	idx.checkNoOrphans()
	if n := idx.ofEvent(ids[3]); n != 1 {
		t.Errorf("search entries of a kept event: %d", n)
	}
	msgs := s.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=100"), bob.Token, nil)
	var bodies []string
	for _, e := range msgs.JSON["chunk"].([]any) {
		if c, _ := e.(map[string]any)["content"].(map[string]any); c["body"] != nil {
			bodies = append(bodies, c["body"].(string))
		}
	}
	if !slices.Equal(bodies, []string{"history 4", "history 3"}) {
		t.Fatalf("history after purge: %v", bodies)
	}
	s.SendText(bob, room, "still works")
	s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync", bob.Token, nil)

	// Up to a time after everything: the latest event stays.
	r = purge("", map[string]any{"purge_up_to_ts": time.Now().Add(time.Hour).UnixMilli(), "delete_local_events": true})
	if st := roomWaitPurge(t, s, admin, r.String("purge_id")); st.String("status") != "complete" {
		t.Fatalf("status: %s", st.Body)
	}
	msgs = s.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=1&filter="+url.QueryEscape(`{"types":["m.room.message"]}`)), bob.Token, nil)
	if c := msgs.JSON["chunk"].([]any); len(c) != 1 || c[0].(map[string]any)["content"].(map[string]any)["body"] != "still works" {
		t.Fatalf("latest message: %s", msgs.Body)
	}
	if n := roomCount(t, db, `SELECT COUNT(*) FROM events WHERE event_id = $1`, otherEvent); n != 1 {
		t.Fatal("another room's event was purged")
	}

	// Errors.
	roomWantErr(t, "non-admin", s.Do("POST", roomAdminV1+"/purge_history/"+url.PathEscape(room), alice.Token, map[string]any{"purge_up_to_ts": 1}),
		http.StatusForbidden, "M_FORBIDDEN")
	roomWantErr(t, "malformed room", s.Do("POST", roomAdminV1+"/purge_history/bad", admin.Token, map[string]any{"purge_up_to_ts": 1}),
		http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "unknown room", s.Do("POST", roomAdminV1+"/purge_history/"+url.PathEscape("!nowhere:"+s.Config.ServerName), admin.Token,
		map[string]any{"purge_up_to_ts": 1}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "unknown event", purge("/$nope", map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "event of another room", purge("", map[string]any{"purge_up_to_event_id": otherEvent}), http.StatusBadRequest, "M_UNKNOWN")
	roomWantErr(t, "no point", purge("", map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
	roomWantErr(t, "ts not an int", purge("", map[string]any{"purge_up_to_ts": "soon"}), http.StatusBadRequest, "M_BAD_JSON")
	roomWantErr(t, "nothing before ts", purge("", map[string]any{"purge_up_to_ts": 1}), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "unknown purge id", s.Do("GET", roomAdminV1+"/purge_history_status/nope", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	roomWantErr(t, "status non-admin", s.Do("GET", roomAdminV1+"/purge_history_status/"+url.PathEscape(r.String("purge_id")), alice.Token, nil),
		http.StatusForbidden, "M_FORBIDDEN")
}

// TestAdminRoomBlockRemoteInvite checks that another server cannot invite
// a local user into a blocked room either.
func TestAdminRoomBlockRemoteInvite(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	admin := b.Register("boss", "pw")
	if err := b.Srv.Accounts().SetAdmin(context.Background(), admin.ID, true); err != nil {
		t.Fatal(err)
	}
	room := a.CreateRoom(alice, nil)
	b.MustDo(http.StatusOK, "PUT", roomAdminPath(roomAdminV1, room, "/block"), admin.Token, map[string]any{"block": true})
	r := a.Do("POST", testserver.RoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": bob.ID})
	if r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), "blocked") {
		t.Fatalf("invite into a room blocked by the invitee's server: %d %s", r.Status, r.Body)
	}
	b.MustDo(http.StatusOK, "PUT", roomAdminPath(roomAdminV1, room, "/block"), admin.Token, map[string]any{"block": false})
	a.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": bob.ID})
}
