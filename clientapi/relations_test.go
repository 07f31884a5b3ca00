package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const v1 = "/_matrix/client/v1"

var relTxn atomic.Int64

// relRoom creates a room through the API and returns its ID.
func relRoom(t *testing.T, s *testserver.Server, token string, body map[string]any) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", token, body)
	return r.String("room_id")
}

// relSend sends a message-like event and returns its ID.
func relSend(t *testing.T, s *testserver.Server, token, roomID, eventType string, content map[string]any) string {
	t.Helper()
	path := fmt.Sprintf("%s/rooms/%s/send/%s/txn%d", v3, url.PathEscape(roomID), eventType, relTxn.Add(1))
	return s.MustDo(http.StatusOK, "PUT", path, token, content).String("event_id")
}

func relText(t *testing.T, s *testserver.Server, token, roomID, body string) string {
	t.Helper()
	return relSend(t, s, token, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

// relChild sends an m.room.message relating to parent with relType.
func relChild(t *testing.T, s *testserver.Server, token, roomID, relType, parent, body string) string {
	t.Helper()
	return relSend(t, s, token, roomID, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": relType, "event_id": parent},
	})
}

func relEdit(t *testing.T, s *testserver.Server, token, roomID, target, body string) string {
	t.Helper()
	return relSend(t, s, token, roomID, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": target},
	})
}

func relReact(t *testing.T, s *testserver.Server, token, roomID, target, key string) string {
	t.Helper()
	return relSend(t, s, token, roomID, "m.reaction", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": key},
	})
}

func relJoin(t *testing.T, s *testserver.Server, token, roomID string) {
	t.Helper()
	s.MustDo(http.StatusOK, "POST", v3+"/rooms/"+url.PathEscape(roomID)+"/join", token, map[string]any{})
}

// relIDs returns the event IDs of a list of events.
func relIDs(v any) []string {
	ids := []string{}
	list, _ := v.([]any)
	for _, e := range list {
		id, _ := e.(map[string]any)["event_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

func wantIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func relContextPath(roomID, eventID, query string) string {
	return fmt.Sprintf("%s/rooms/%s/context/%s?%s", v3, url.PathEscape(roomID), url.PathEscape(eventID), query)
}

func relMessagesPath(roomID, query string) string {
	return fmt.Sprintf("%s/rooms/%s/messages?%s", v3, url.PathEscape(roomID), query)
}

func relRelationsPath(roomID, eventID, suffix, query string) string {
	return fmt.Sprintf("%s/rooms/%s/relations/%s%s?%s", v1, url.PathEscape(roomID), url.PathEscape(eventID), suffix, query)
}

func relThreadsPath(roomID, query string) string {
	return fmt.Sprintf("%s/rooms/%s/threads?%s", v1, url.PathEscape(roomID), query)
}

func relTimestampPath(roomID, query string) string {
	return fmt.Sprintf("%s/rooms/%s/timestamp_to_event?%s", v1, url.PathEscape(roomID), query)
}

// stateTypes lists "type|state_key" of state events.
func stateTypes(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, e := range list {
		m := e.(map[string]any)
		out = append(out, fmt.Sprintf("%s|%s", m["type"], m["state_key"]))
	}
	return out
}

// relations returns unsigned."m.relations" of an event.
func relationsOf(ev any) map[string]any {
	m, _ := ev.(map[string]any)
	u, _ := m["unsigned"].(map[string]any)
	r, _ := u["m.relations"].(map[string]any)
	return r
}

func TestEventContext(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	room := relRoom(t, s, alice.Token, map[string]any{"preset": "public_chat"})
	relJoin(t, s, bob.Token, room)

	var m []string
	for i := range 5 {
		m = append(m, relText(t, s, alice.Token, room, fmt.Sprint("m", i)))
	}
	topic := s.MustDo(http.StatusOK, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/state/m.room.topic", alice.Token,
		map[string]any{"topic": "context"}).String("event_id")
	for i := 5; i < 10; i++ {
		m = append(m, relText(t, s, alice.Token, room, fmt.Sprint("m", i)))
	}

	// limit 4 is split 2 before, 2 after.
	c := s.MustDo(http.StatusOK, "GET", relContextPath(room, m[5], "limit=4"), alice.Token, nil)
	if id := c.JSON["event"].(map[string]any)["event_id"]; id != m[5] {
		t.Fatalf("event: %v", id)
	}
	wantIDs(t, "events_before", relIDs(c.JSON["events_before"]), topic, m[4])
	wantIDs(t, "events_after", relIDs(c.JSON["events_after"]), m[6], m[7])

	// /messages carries on from both ends, without gap or overlap.
	back := s.MustDo(http.StatusOK, "GET", relMessagesPath(room, "dir=b&limit=3&from="+c.String("start")), alice.Token, nil)
	wantIDs(t, "messages before start", relIDs(back.JSON["chunk"]), m[3], m[2], m[1])
	fwd := s.MustDo(http.StatusOK, "GET", relMessagesPath(room, "dir=f&limit=5&from="+c.String("end")), alice.Token, nil)
	wantIDs(t, "messages after end", relIDs(fwd.JSON["chunk"]), m[8], m[9])

	// limit 0 still returns the event, and the tokens sit right beside it.
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[5], "limit=0"), alice.Token, nil)
	wantIDs(t, "events_before at limit 0", relIDs(c.JSON["events_before"]))
	wantIDs(t, "events_after at limit 0", relIDs(c.JSON["events_after"]))
	back = s.MustDo(http.StatusOK, "GET", relMessagesPath(room, "dir=b&limit=1&from="+c.String("start")), alice.Token, nil)
	wantIDs(t, "messages before limit-0 start", relIDs(back.JSON["chunk"]), topic)
	fwd = s.MustDo(http.StatusOK, "GET", relMessagesPath(room, "dir=f&limit=1&from="+c.String("end")), alice.Token, nil)
	wantIDs(t, "messages after limit-0 end", relIDs(fwd.JSON["chunk"]), m[6])

	// An odd limit gives the extra event to events_after.
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[2], "limit=3"), alice.Token, nil)
	wantIDs(t, "events_before at limit 3", relIDs(c.JSON["events_before"]), m[1])
	wantIDs(t, "events_after at limit 3", relIDs(c.JSON["events_after"]), m[3], m[4])

	// The filter applies to the surrounding events (and the tokens still
	// chain with the same filter).
	f := url.QueryEscape(`{"types":["m.room.message"]}`)
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[5], "limit=4&filter="+f), alice.Token, nil)
	wantIDs(t, "filtered events_before", relIDs(c.JSON["events_before"]), m[4], m[3])
	if st := stateTypes(c.JSON["state"]); len(st) != 0 {
		t.Fatalf("state passed a types filter: %v", st)
	}
	back = s.MustDo(http.StatusOK, "GET", relMessagesPath(room, "dir=b&limit=2&filter="+f+"&from="+c.String("start")), alice.Token, nil)
	wantIDs(t, "filtered messages before start", relIDs(back.JSON["chunk"]), m[2], m[1])

	// State is the state at the last event returned.
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[3], "limit=2"), alice.Token, nil)
	if st := stateTypes(c.JSON["state"]); slices.Contains(st, "m.room.topic|") || !slices.Contains(st, "m.room.create|") {
		t.Fatalf("state before the topic: %v", st)
	}
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[4], "limit=2"), alice.Token, nil)
	if st := stateTypes(c.JSON["state"]); !slices.Contains(st, "m.room.topic|") {
		t.Fatalf("state at the topic: %v", st)
	}

	// Lazy loading keeps the members of the senders only.
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[7], "limit=2&filter="+url.QueryEscape(`{"lazy_load_members":true}`)), alice.Token, nil)
	st := stateTypes(c.JSON["state"])
	if !slices.Contains(st, "m.room.member|"+alice.ID) || slices.Contains(st, "m.room.member|"+bob.ID) || !slices.Contains(st, "m.room.create|") {
		t.Fatalf("lazy-loaded state: %v", st)
	}
	c = s.MustDo(http.StatusOK, "GET", relContextPath(room, m[7], "limit=2"), alice.Token, nil)
	if st := stateTypes(c.JSON["state"]); !slices.Contains(st, "m.room.member|"+bob.ID) {
		t.Fatalf("full state lacks bob: %v", st)
	}

	// An unknown event, or one of another room, is not found.
	wantErr(t, s.Do("GET", relContextPath(room, "$nope", ""), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	other := relRoom(t, s, alice.Token, map[string]any{})
	wantErr(t, s.Do("GET", relContextPath(other, m[5], ""), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relContextPath(room, m[5], "limit=x"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestRelations(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	room := relRoom(t, s, alice.Token, map[string]any{"preset": "public_chat"})
	relJoin(t, s, bob.Token, room)

	root := relText(t, s, alice.Token, room, "root")
	t1 := relChild(t, s, alice.Token, room, "m.thread", root, "thread 1")
	t2 := relChild(t, s, bob.Token, room, "m.thread", root, "thread 2")
	edit := relEdit(t, s, alice.Token, room, root, "root, edited")
	react := relReact(t, s, bob.Token, room, root, "👍")
	ref := relChild(t, s, bob.Token, room, "m.reference", root, "see above")
	nested := relReact(t, s, alice.Token, room, t1, "👀")
	t2edit := relEdit(t, s, bob.Token, room, t2, "thread 2, edited")

	get := func(suffix, query string) *testserver.Response {
		t.Helper()
		return s.MustDo(http.StatusOK, "GET", relRelationsPath(room, root, suffix, query), bob.Token, nil)
	}
	r := get("", "")
	wantIDs(t, "all relations", relIDs(r.JSON["chunk"]), ref, react, edit, t2, t1)
	if _, ok := r.JSON["recursion_depth"]; ok {
		t.Fatalf("recursion_depth without recurse: %s", r.Body)
	}
	wantIDs(t, "forwards", relIDs(get("", "dir=f").JSON["chunk"]), t1, t2, edit, react, ref)
	wantIDs(t, "m.thread", relIDs(get("/m.thread", "").JSON["chunk"]), t2, t1)
	wantIDs(t, "m.replace", relIDs(get("/m.replace", "").JSON["chunk"]), edit)
	wantIDs(t, "m.annotation", relIDs(get("/m.annotation", "").JSON["chunk"]), react)
	wantIDs(t, "m.annotation/m.reaction", relIDs(get("/m.annotation/m.reaction", "").JSON["chunk"]), react)
	wantIDs(t, "m.annotation/m.room.message", relIDs(get("/m.annotation/m.room.message", "").JSON["chunk"]))

	// Thread events come with their own bundles: t2's latest edit.
	chunk := get("/m.thread", "").JSON["chunk"].([]any)
	rep, _ := relationsOf(chunk[0])["m.replace"].(map[string]any)
	if rep["event_id"] != t2edit {
		t.Fatalf("t2's bundled edit: %v", relationsOf(chunk[0]))
	}

	// Paging backwards, then forwards.
	p1 := get("", "limit=2")
	wantIDs(t, "page 1", relIDs(p1.JSON["chunk"]), ref, react)
	if p1.String("next_batch") == "" || p1.JSON["prev_batch"] != nil {
		t.Fatalf("page 1 tokens: %s", p1.Body)
	}
	p2 := get("", "limit=2&from="+p1.String("next_batch"))
	wantIDs(t, "page 2", relIDs(p2.JSON["chunk"]), edit, t2)
	if p2.String("prev_batch") != p1.String("next_batch") {
		t.Fatalf("page 2 prev_batch: %s", p2.Body)
	}
	p3 := get("", "limit=2&from="+p2.String("next_batch"))
	wantIDs(t, "page 3", relIDs(p3.JSON["chunk"]), t1)
	if p3.JSON["next_batch"] != nil {
		t.Fatalf("last page has next_batch: %s", p3.Body)
	}
	// from page 1 to page 2's start covers page 1 only.
	wantIDs(t, "from..to", relIDs(get("", "from="+p1.String("next_batch")+"&to="+p2.String("next_batch")).JSON["chunk"]), edit, t2)
	f1 := get("", "dir=f&limit=3")
	wantIDs(t, "forward page 1", relIDs(f1.JSON["chunk"]), t1, t2, edit)
	wantIDs(t, "forward page 2", relIDs(get("", "dir=f&limit=3&from="+f1.String("next_batch")).JSON["chunk"]), react, ref)

	// Recursion follows relations of relations, and the filters apply at
	// every level.
	r = get("", "recurse=true")
	wantIDs(t, "recursive", relIDs(r.JSON["chunk"]), t2edit, nested, ref, react, edit, t2, t1)
	if r.JSON["recursion_depth"] != float64(3) {
		t.Fatalf("recursion_depth: %s", r.Body)
	}
	r = get("", "recurse=false")
	wantIDs(t, "recurse=false", relIDs(r.JSON["chunk"]), ref, react, edit, t2, t1)
	if r.JSON["recursion_depth"] != float64(1) {
		t.Fatalf("recursion_depth with recurse=false: %s", r.Body)
	}
	wantIDs(t, "recursive m.annotation", relIDs(get("/m.annotation", "recurse=true").JSON["chunk"]), react)

	// A redacted child no longer relates to its parent.
	s.MustDo(http.StatusOK, "PUT", fmt.Sprintf("%s/rooms/%s/redact/%s/red1", v3, url.PathEscape(room), url.PathEscape(react)), bob.Token, map[string]any{})
	wantIDs(t, "after redaction", relIDs(get("/m.annotation", "").JSON["chunk"]))

	wantErr(t, s.Do("GET", relRelationsPath(room, root, "", "dir=x"), bob.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", relRelationsPath(room, root, "", "recurse=yes"), bob.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", relRelationsPath(room, root, "", "from=bogus"), bob.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", relRelationsPath(room, "$unknown", "", ""), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relRelationsPath(room, root, "", ""), "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestThreads(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	room := relRoom(t, s, alice.Token, map[string]any{"preset": "public_chat"})
	relJoin(t, s, bob.Token, room)

	root1 := relText(t, s, alice.Token, room, "first topic")
	root2 := relText(t, s, bob.Token, room, "second topic")
	relText(t, s, alice.Token, room, "no thread here")
	r1a := relChild(t, s, bob.Token, room, "m.thread", root1, "1a")
	r2a := relChild(t, s, bob.Token, room, "m.thread", root2, "2a")
	r1b := relChild(t, s, bob.Token, room, "m.thread", root1, "1b")
	edit := relEdit(t, s, alice.Token, room, root1, "first topic, edited")
	relEdit(t, s, bob.Token, room, root1, "not bob's to edit") // invalid: another sender
	r1bEdit := relEdit(t, s, bob.Token, room, r1b, "1b, edited")

	r := s.MustDo(http.StatusOK, "GET", relThreadsPath(room, ""), alice.Token, nil)
	chunk := r.JSON["chunk"].([]any)
	wantIDs(t, "threads", relIDs(chunk), root1, root2)
	if r.JSON["next_batch"] != nil {
		t.Fatalf("single page has next_batch: %s", r.Body)
	}
	th := relationsOf(chunk[0])["m.thread"].(map[string]any)
	latest := th["latest_event"].(map[string]any)
	if latest["event_id"] != r1b || th["count"] != float64(2) || th["current_user_participated"] != true {
		t.Fatalf("root1 summary: %v", th)
	}
	if rep, _ := relationsOf(latest)["m.replace"].(map[string]any); rep["event_id"] != r1bEdit {
		t.Fatalf("latest_event's edit: %v", latest)
	}
	if rep, _ := relationsOf(chunk[0])["m.replace"].(map[string]any); rep["event_id"] != edit {
		t.Fatalf("root1's edit: %v", relationsOf(chunk[0]))
	}
	th = relationsOf(chunk[1])["m.thread"].(map[string]any)
	if th["latest_event"].(map[string]any)["event_id"] != r2a || th["count"] != float64(1) || th["current_user_participated"] != false {
		t.Fatalf("root2 summary for alice: %v", th)
	}

	rel := s.MustDo(http.StatusOK, "GET", relRelationsPath(room, root1, "/m.thread", ""), alice.Token, nil)
	wantIDs(t, "thread of root1", relIDs(rel.JSON["chunk"]), r1b, r1a)

	part := s.MustDo(http.StatusOK, "GET", relThreadsPath(room, "include=participated"), alice.Token, nil)
	wantIDs(t, "alice's threads", relIDs(part.JSON["chunk"]), root1)
	part = s.MustDo(http.StatusOK, "GET", relThreadsPath(room, "include=participated"), bob.Token, nil)
	wantIDs(t, "bob's threads", relIDs(part.JSON["chunk"]), root1, root2)

	p1 := s.MustDo(http.StatusOK, "GET", relThreadsPath(room, "limit=1"), alice.Token, nil)
	wantIDs(t, "threads page 1", relIDs(p1.JSON["chunk"]), root1)
	p2 := s.MustDo(http.StatusOK, "GET", relThreadsPath(room, "limit=1&from="+p1.String("next_batch")), alice.Token, nil)
	wantIDs(t, "threads page 2", relIDs(p2.JSON["chunk"]), root2)
	if p2.JSON["next_batch"] != nil {
		t.Fatalf("last threads page has next_batch: %s", p2.Body)
	}

	wantErr(t, s.Do("GET", relThreadsPath(room, "include=mine"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", relThreadsPath(room, "limit=0"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", relThreadsPath(room, "from=zzz"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

// eventTS reads an event's origin_server_ts.
func eventTS(t *testing.T, s *testserver.Server, token, roomID, eventID string) int64 {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", fmt.Sprintf("%s/rooms/%s/event/%s", v3, url.PathEscape(roomID), url.PathEscape(eventID)), token, nil)
	return int64(r.JSON["origin_server_ts"].(float64))
}

// relTextLater sends a message at a later millisecond than anything before.
func relTextLater(t *testing.T, s *testserver.Server, token, roomID, body string) string {
	t.Helper()
	time.Sleep(5 * time.Millisecond)
	return relText(t, s, token, roomID, body)
}

func TestTimestampToEvent(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	room := relRoom(t, s, alice.Token, map[string]any{})
	m1 := relTextLater(t, s, alice.Token, room, "one")
	m2 := relTextLater(t, s, alice.Token, room, "two")
	m3 := relTextLater(t, s, alice.Token, room, "three")
	ts1, ts2, ts3 := eventTS(t, s, alice.Token, room, m1), eventTS(t, s, alice.Token, room, m2), eventTS(t, s, alice.Token, room, m3)

	find := func(ts int64, dir string) *testserver.Response {
		t.Helper()
		return s.Do("GET", relTimestampPath(room, fmt.Sprintf("ts=%d&dir=%s", ts, dir)), alice.Token, nil)
	}
	for _, c := range []struct {
		ts     int64
		dir    string
		want   string
		wantTS int64
	}{
		{ts2, "f", m2, ts2}, {ts2, "b", m2, ts2},
		{ts2 + 1, "f", m3, ts3}, {ts2 - 1, "b", m1, ts1},
		{ts3 + 1, "b", m3, ts3},
	} {
		r := find(c.ts, c.dir)
		if r.Status != http.StatusOK || r.String("event_id") != c.want || r.JSON["origin_server_ts"] != float64(c.wantTS) {
			t.Fatalf("ts=%d dir=%s: %d %s, want %s", c.ts, c.dir, r.Status, r.Body, c.want)
		}
	}
	nf := find(ts3+1, "f")
	wantErr(t, nf, http.StatusNotFound, "M_NOT_FOUND")
	if want := fmt.Sprintf("Unable to find event from %d in forward direction", ts3+1); nf.String("error") != want {
		t.Fatalf("error %q, want %q", nf.String("error"), want)
	}
	wantErr(t, find(0, "b"), http.StatusNotFound, "M_NOT_FOUND")

	wantErr(t, s.Do("GET", relTimestampPath(room, "ts=1"), alice.Token, nil), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("GET", relTimestampPath(room, "dir=f"), alice.Token, nil), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("GET", relTimestampPath(room, "ts=x&dir=f"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("GET", relTimestampPath(room, "ts=1&dir=up"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

// History visibility holds through every endpoint: a stranger gets the
// spec's errors, and a user who joined a "joined" room late sees nothing
// from before, nor from after they left.
func TestRelationsHistoryVisibility(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	eve := s.Register("eve", "pw")
	room := relRoom(t, s, alice.Token, map[string]any{
		"preset": "public_chat",
		"initial_state": []map[string]any{{
			"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"},
		}},
	})
	early := relTextLater(t, s, alice.Token, room, "before bob")
	earlyReply := relChild(t, s, alice.Token, room, "m.thread", early, "early reply")
	earlyTS := eventTS(t, s, alice.Token, room, earlyReply)

	// Someone who was never in the room.
	wantErr(t, s.Do("GET", relContextPath(room, early, ""), eve.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relRelationsPath(room, early, "", ""), eve.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relThreadsPath(room, ""), eve.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, s.Do("GET", relTimestampPath(room, "ts=0&dir=f"), eve.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	time.Sleep(5 * time.Millisecond)
	relJoin(t, s, bob.Token, room)
	late := relTextLater(t, s, alice.Token, room, "after bob")
	lateReply := relChild(t, s, alice.Token, room, "m.thread", late, "late reply")

	// Bob cannot reach the earlier events.
	wantErr(t, s.Do("GET", relContextPath(room, early, ""), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relContextPath(room, earlyReply, ""), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relRelationsPath(room, early, "", ""), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", relRelationsPath(room, early, "/m.thread", ""), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	r := s.MustDo(http.StatusOK, "GET", relThreadsPath(room, ""), bob.Token, nil)
	wantIDs(t, "bob's threads", relIDs(r.JSON["chunk"]), late)
	wantIDs(t, "alice's threads", relIDs(s.MustDo(http.StatusOK, "GET", relThreadsPath(room, ""), alice.Token, nil).JSON["chunk"]), late, early)
	// The room's first events, from before history_visibility was set,
	// were "shared" and so are visible to him; the two early messages are
	// not.
	hiddenFromBob := []string{early, earlyReply}
	back := s.MustDo(http.StatusOK, "GET", relTimestampPath(room, fmt.Sprintf("ts=%d&dir=b", earlyTS)), bob.Token, nil)
	if slices.Contains(hiddenFromBob, back.String("event_id")) {
		t.Fatalf("timestamp_to_event backwards found a hidden event: %s", back.Body)
	}
	next := s.MustDo(http.StatusOK, "GET", relTimestampPath(room, fmt.Sprintf("ts=%d&dir=f", earlyTS)), bob.Token, nil)
	c := s.MustDo(http.StatusOK, "GET", relContextPath(room, late, "limit=20"), bob.Token, nil)
	before := relIDs(c.JSON["events_before"])
	if len(before) == 0 || before[0] != next.String("event_id") || slices.ContainsFunc(before, func(id string) bool { return slices.Contains(hiddenFromBob, id) }) {
		t.Fatalf("bob's events_before %q: want his join (%s) first and no early messages", before, next.String("event_id"))
	}
	if ev := c.JSON["events_before"].([]any)[0].(map[string]any); ev["type"] != "m.room.member" || ev["state_key"] != bob.ID {
		t.Fatalf("bob's first visible event after the early messages is not his join: %v", ev)
	}
	wantIDs(t, "bob's events_after", relIDs(c.JSON["events_after"]), lateReply)
	msgs := s.MustDo(http.StatusOK, "GET", relMessagesPath(room, "dir=b&limit=50&from="+c.String("start")), bob.Token, nil)
	if ids := relIDs(msgs.JSON["chunk"]); slices.ContainsFunc(ids, func(id string) bool { return slices.Contains(hiddenFromBob, id) }) {
		t.Fatalf("bob's messages before the context: %q", ids)
	}
	wantIDs(t, "bob's relations", relIDs(s.MustDo(http.StatusOK, "GET", relRelationsPath(room, late, "", ""), bob.Token, nil).JSON["chunk"]), lateReply)

	// After bob leaves, the thread goes on without him: its latest visible
	// event for him is the one before he left.
	s.MustDo(http.StatusOK, "POST", v3+"/rooms/"+url.PathEscape(room)+"/leave", bob.Token, map[string]any{})
	hidden := relChild(t, s, alice.Token, room, "m.thread", late, "after bob left")
	wantIDs(t, "bob's relations after leaving", relIDs(s.MustDo(http.StatusOK, "GET", relRelationsPath(room, late, "", ""), bob.Token, nil).JSON["chunk"]), lateReply)
	wantIDs(t, "alice's relations", relIDs(s.MustDo(http.StatusOK, "GET", relRelationsPath(room, late, "", ""), alice.Token, nil).JSON["chunk"]), hidden, lateReply)
	r = s.MustDo(http.StatusOK, "GET", relThreadsPath(room, ""), bob.Token, nil)
	chunk := r.JSON["chunk"].([]any)
	wantIDs(t, "bob's threads after leaving", relIDs(chunk), late)
	th := relationsOf(chunk[0])["m.thread"].(map[string]any)
	if th["latest_event"].(map[string]any)["event_id"] != lateReply {
		t.Fatalf("bob's latest_event: %v", th)
	}
	wantErr(t, s.Do("GET", relContextPath(room, hidden, ""), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
}
