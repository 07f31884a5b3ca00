package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// The 2015 API (/initialSync, /events, /events/{eventId},
// /rooms/{roomId}/initialSync) is served under api/v1 as it was, and under
// r0 and v3 as the spec still lists it.

const lgV1 = "/_matrix/client/api/v1"

var lgPrefixes = []string{lgV1, "/_matrix/client/v3"}

var lgTxn atomic.Int64

type lgEvent struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	RoomID   string          `json:"room_id"`
	Sender   string          `json:"sender"`
	UserID   string          `json:"user_id"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func (e lgEvent) body() string {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Body
}

func (e lgEvent) membership() string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Membership
}

type lgMessages struct {
	Chunk []lgEvent `json:"chunk"`
	Start string    `json:"start"`
	End   *string   `json:"end"`
}

type lgRoom struct {
	RoomID      string      `json:"room_id"`
	Membership  string      `json:"membership"`
	Invite      *lgEvent    `json:"invite"`
	Messages    *lgMessages `json:"messages"`
	State       []lgEvent   `json:"state"`
	Presence    []lgEvent   `json:"presence"`
	AccountData []lgEvent   `json:"account_data"`
	Visibility  string      `json:"visibility"`
}

type lgInitial struct {
	End         string    `json:"end"`
	Presence    []lgEvent `json:"presence"`
	Rooms       []lgRoom  `json:"rooms"`
	AccountData []lgEvent `json:"account_data"`
}

type lgStream struct {
	Start string    `json:"start"`
	End   string    `json:"end"`
	Chunk []lgEvent `json:"chunk"`
}

func lgDecode(t testing.TB, r *testserver.Response, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

func lgWantErr(t testing.TB, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.Errcode(), status, errcode, r.Body)
	}
}

func lgRoomPath(prefix, roomID, rest string) string {
	return prefix + "/rooms/" + url.PathEscape(roomID) + rest
}

func lgCreateRoom(t testing.TB, s *testserver.Server, u testserver.User, body map[string]any) string {
	t.Helper()
	return s.MustDo(http.StatusOK, "POST", lgV1+"/createRoom", u.Token, body).String("room_id")
}

func lgText(t testing.TB, s *testserver.Server, u testserver.User, roomID, body string) string {
	t.Helper()
	path := lgRoomPath(lgV1, roomID, fmt.Sprintf("/send/m.room.message/lg%d", lgTxn.Add(1)))
	return s.MustDo(http.StatusOK, "PUT", path, u.Token, map[string]any{"msgtype": "m.text", "body": body}).String("event_id")
}

func lgJoin(t testing.TB, s *testserver.Server, u testserver.User, roomID string) {
	t.Helper()
	s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, roomID, "/join"), u.Token, map[string]any{})
}

func lgSetVisibility(t testing.TB, s *testserver.Server, u testserver.User, roomID, vis string) {
	t.Helper()
	s.MustDo(http.StatusOK, "PUT", lgRoomPath(lgV1, roomID, "/state/m.room.history_visibility"), u.Token,
		map[string]any{"history_visibility": vis})
}

func lgInitialSync(t testing.TB, s *testserver.Server, prefix string, u testserver.User, query string) lgInitial {
	t.Helper()
	var out lgInitial
	lgDecode(t, s.MustDo(http.StatusOK, "GET", prefix+"/initialSync"+query, u.Token, nil), &out)
	return out
}

func lgEvents(t testing.TB, s *testserver.Server, prefix string, u testserver.User, query string) lgStream {
	t.Helper()
	var out lgStream
	lgDecode(t, s.MustDo(http.StatusOK, "GET", prefix+"/events"+query, u.Token, nil), &out)
	return out
}

func lgFind(rooms []lgRoom, roomID string) *lgRoom {
	for i := range rooms {
		if rooms[i].RoomID == roomID {
			return &rooms[i]
		}
	}
	return nil
}

// lgCheckLegacy checks that every room event carries user_id = sender.
func lgCheckLegacy(t testing.TB, what string, evs []lgEvent) {
	t.Helper()
	for _, e := range evs {
		if e.EventID != "" && (e.UserID == "" || e.UserID != e.Sender) {
			t.Fatalf("%s: event %s has user_id %q, sender %q", what, e.EventID, e.UserID, e.Sender)
		}
	}
}

func lgHasState(evs []lgEvent, typ, key string) *lgEvent {
	for i, e := range evs {
		if e.Type == typ && e.StateKey != nil && *e.StateKey == key {
			return &evs[i]
		}
	}
	return nil
}

func lgBodies(evs []lgEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

func TestLegacyInitialSync(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	public := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Pub"})
	private := lgCreateRoom(t, s, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.ID}})
	left := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	for i := range 5 {
		lgText(t, s, alice, public, fmt.Sprintf("pub %d", i))
	}
	lgText(t, s, alice, left, "before leaving")
	s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, left, "/leave"), alice.Token, map[string]any{})
	lgText(t, s, alice, private, "secret")
	s.MustDo(http.StatusOK, "PUT", lgV1+"/user/"+url.PathEscape(alice.ID)+"/account_data/org.example.global", alice.Token, map[string]any{"k": "g"})
	s.MustDo(http.StatusOK, "PUT", lgV1+"/user/"+url.PathEscape(alice.ID)+"/rooms/"+url.PathEscape(public)+"/tags/work", alice.Token, map[string]any{"order": 1})
	s.MustDo(http.StatusOK, "PUT", lgV1+"/presence/"+url.PathEscape(alice.ID)+"/status", alice.Token, map[string]any{"presence": "online"})

	for _, prefix := range lgPrefixes {
		t.Run(strings.TrimPrefix(prefix, "/_matrix/client/"), func(t *testing.T) {
			got := lgInitialSync(t, s, prefix, alice, "?limit=2")
			if !strings.HasPrefix(got.End, "s") {
				t.Fatalf("end %q is not a stream token", got.End)
			}
			if len(got.Rooms) != 2 || lgFind(got.Rooms, left) != nil {
				t.Fatalf("rooms without archived: %+v", got.Rooms)
			}
			pub := lgFind(got.Rooms, public)
			if pub == nil || pub.Membership != "join" || pub.Visibility != "public" || pub.Messages == nil {
				t.Fatalf("public room: %+v", pub)
			}
			if b := lgBodies(pub.Messages.Chunk); !slices.Equal(b, []string{"pub 3", "pub 4"}) || len(pub.Messages.Chunk) != 2 {
				t.Fatalf("public room messages with limit 2: %v (%d events)", b, len(pub.Messages.Chunk))
			}
			if pub.Messages.End == nil || *pub.Messages.End != got.End || pub.Messages.Start == "" {
				t.Fatalf("messages tokens: start %q end %v, initialSync end %q", pub.Messages.Start, pub.Messages.End, got.End)
			}
			lgCheckLegacy(t, "messages", pub.Messages.Chunk)
			lgCheckLegacy(t, "state", pub.State)
			if lgHasState(pub.State, "m.room.create", "") == nil || lgHasState(pub.State, "m.room.member", alice.ID) == nil {
				t.Fatalf("public room state lacks create or alice's membership: %+v", pub.State)
			}
			if name := lgHasState(pub.State, "m.room.name", ""); name == nil || !strings.Contains(string(name.Content), "Pub") {
				t.Fatalf("public room name: %+v", name)
			}
			if len(pub.AccountData) != 1 || pub.AccountData[0].Type != "m.tag" {
				t.Fatalf("room account data: %+v", pub.AccountData)
			}
			priv := lgFind(got.Rooms, private)
			if priv == nil || priv.Visibility != "private" || !slices.Equal(lgBodies(priv.Messages.Chunk), []string{"secret"}) {
				t.Fatalf("private room: %+v", priv)
			}
			if priv.AccountData == nil || len(priv.AccountData) != 0 {
				t.Fatalf("private room account_data should be []: %+v", priv.AccountData)
			}
			if len(got.AccountData) != 1 || got.AccountData[0].Type != "org.example.global" {
				t.Fatalf("global account data: %+v", got.AccountData)
			}
			var sawAlice bool
			for _, p := range got.Presence {
				var c struct {
					UserID   string `json:"user_id"`
					Presence string `json:"presence"`
				}
				_ = json.Unmarshal(p.Content, &c)
				if p.Type == "m.presence" && c.UserID == alice.ID && c.Presence == "online" {
					sawAlice = true
				}
			}
			if !sawAlice {
				t.Fatalf("presence: %+v", got.Presence)
			}

			// start pages back into /messages.
			var page struct {
				Chunk []lgEvent `json:"chunk"`
			}
			lgDecode(t, s.MustDo(http.StatusOK, "GET", lgRoomPath(prefix, public, "/messages?dir=b&limit=1&from="+url.QueryEscape(pub.Messages.Start)), alice.Token, nil), &page)
			if b := lgBodies(page.Chunk); !slices.Equal(b, []string{"pub 2"}) {
				t.Fatalf("messages before start: %v", b)
			}

			// limit=0: no messages; archived: the room left, with the state
			// and messages up to the departure.
			zero := lgInitialSync(t, s, prefix, alice, "?limit=0&archived=true")
			if len(zero.Rooms) != 3 {
				t.Fatalf("archived rooms: %+v", zero.Rooms)
			}
			for _, r := range zero.Rooms {
				if r.Messages == nil || r.Messages.Chunk == nil || len(r.Messages.Chunk) != 0 {
					t.Fatalf("limit=0 in %s: %+v", r.RoomID, r.Messages)
				}
			}
			arch := lgInitialSync(t, s, prefix, alice, "?archived=true")
			lr := lgFind(arch.Rooms, left)
			if lr == nil || lr.Membership != "leave" {
				t.Fatalf("left room: %+v", lr)
			}
			if m := lgHasState(lr.State, "m.room.member", alice.ID); m == nil || m.membership() != "leave" {
				t.Fatalf("left room state: %+v", lr.State)
			}
			if b := lgBodies(lr.Messages.Chunk); !slices.Equal(b, []string{"before leaving"}) {
				t.Fatalf("left room messages: %v", b)
			}

			// Bob is invited to the private room: the invite event, no more.
			inv := lgInitialSync(t, s, prefix, bob, "")
			ir := lgFind(inv.Rooms, private)
			if len(inv.Rooms) != 1 || ir == nil || ir.Membership != "invite" || ir.Invite == nil || ir.Messages != nil || ir.State != nil {
				t.Fatalf("bob's invite: %s", mustJSON(inv))
			}
			if ir.Invite.Type != "m.room.member" || ir.Invite.membership() != "invite" || ir.Invite.UserID != alice.ID || *ir.Invite.StateKey != bob.ID {
				t.Fatalf("invite event: %+v", ir.Invite)
			}
		})
	}

	lgWantErr(t, s.Do("GET", lgV1+"/initialSync?limit=x", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	lgWantErr(t, s.Do("GET", lgV1+"/initialSync?limit=-1", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	lgWantErr(t, s.Do("GET", lgV1+"/initialSync?archived=maybe", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	lgWantErr(t, s.Do("GET", lgV1+"/initialSync", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestLegacyEventsLongPoll(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	room := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	lgJoin(t, s, bob, room)
	init := lgInitialSync(t, s, lgV1, alice, "")

	// Drain whatever is pending (alice's own presence going online).
	tok := init.End
	for range 5 {
		r := lgEvents(t, s, lgV1, alice, "?timeout=0&from="+url.QueryEscape(tok))
		if r.Start != tok {
			t.Fatalf("start %q, want the from token %q", r.Start, tok)
		}
		tok = r.End
		if len(r.Chunk) == 0 {
			break
		}
	}

	type result struct {
		r       lgStream
		elapsed time.Duration
	}
	done := make(chan result, 1)
	began := time.Now()
	go func() {
		var out lgStream
		r := s.Do("GET", "/_matrix/client/v3/events?timeout=20000&from="+url.QueryEscape(tok), alice.Token, nil)
		_ = json.Unmarshal(r.Body, &out)
		done <- result{out, time.Since(began)}
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case res := <-done:
		t.Fatalf("/events returned before anything happened: %+v", res.r)
	default:
	}
	id := lgText(t, s, bob, room, "wake up")
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("/events was not woken by the message")
	}
	if res.elapsed < 300*time.Millisecond {
		t.Fatalf("answered after %v", res.elapsed)
	}
	if len(res.r.Chunk) != 1 || res.r.Chunk[0].EventID != id || res.r.Chunk[0].UserID != bob.ID || res.r.Chunk[0].RoomID != room {
		t.Fatalf("woken with %+v", res.r)
	}
	if res.r.Start != tok || res.r.End == tok {
		t.Fatalf("tokens: start %q end %q from %q", res.r.Start, res.r.End, tok)
	}

	// Nothing new: an empty chunk after the timeout, the token unchanged
	// for room events.
	began = time.Now()
	empty := lgEvents(t, s, lgV1, alice, "?timeout=200&from="+url.QueryEscape(res.r.End))
	if len(empty.Chunk) != 0 || time.Since(began) < 200*time.Millisecond {
		t.Fatalf("idle /events: %+v after %v", empty, time.Since(began))
	}
	if strings.Split(empty.End, "_")[0] != strings.Split(res.r.End, "_")[0] {
		t.Fatalf("idle /events moved the event position: %q -> %q", res.r.End, empty.End)
	}
	// Without from, the stream starts now: what was sent before is not
	// replayed.
	now := lgEvents(t, s, lgV1, alice, "?timeout=0")
	if len(now.Chunk) != 0 || now.Start == "" || now.End == "" {
		t.Fatalf("/events without from: %+v", now)
	}

	// A /sync token is a valid starting point too.
	var sy struct {
		NextBatch string `json:"next_batch"`
	}
	lgDecode(t, s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", alice.Token, nil), &sy)
	id2 := lgText(t, s, alice, room, "after sync")
	fromSync := lgEvents(t, s, lgV1, alice, "?timeout=5000&from="+url.QueryEscape(sy.NextBatch))
	if ids := lgIDs(fromSync.Chunk); !slices.Equal(ids, []string{id2}) {
		t.Fatalf("/events from a /sync token: %+v", fromSync)
	}

	// From the beginning, in pages of three: the room from its creation.
	first := lgEvents(t, s, lgV1, alice, "?timeout=0&limit=3&from=s0_0_0_0_0")
	if len(first.Chunk) == 0 || first.Chunk[0].Type != "m.room.create" || first.Chunk[0].RoomID != room || len(lgIDs(first.Chunk)) > 3 {
		t.Fatalf("/events from the start: %+v", first)
	}

	// Bad tokens and timeouts.
	for _, q := range []string{"?from=garbage", "?from=s1_2_3", "?from=s99999999_0_0_0_0", "?from=sx_0_0_0_0", "?timeout=soon", "?timeout=-5", "?limit=-1"} {
		for _, prefix := range lgPrefixes {
			lgWantErr(t, s.Do("GET", prefix+"/events"+q, alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		}
	}
	lgWantErr(t, s.Do("GET", lgV1+"/events", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func lgIDs(evs []lgEvent) []string {
	var out []string
	for _, e := range evs {
		if e.EventID != "" {
			out = append(out, e.EventID)
		}
	}
	return out
}

// Chaining /events from end to end yields every message exactly once and
// in the order each sender sent them, while four clients send at once and
// the reader pages through with a small limit.
func TestLegacyEventsChainExactlyOnce(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	r1 := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	r2 := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	lgJoin(t, s, bob, r1)
	lgJoin(t, s, bob, r2)
	start := lgInitialSync(t, s, lgV1, alice, "?limit=0").End

	const perSender = 15
	type sender struct {
		u    testserver.User
		room string
	}
	senders := []sender{{alice, r1}, {bob, r1}, {alice, r2}, {bob, r2}}
	total := perSender * len(senders)
	var wg sync.WaitGroup
	for i, snd := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSender {
				path := lgRoomPath(lgV1, snd.room, fmt.Sprintf("/send/m.room.message/chain%d-%d", i, n))
				if r := s.Do("PUT", path, snd.u.Token, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d/%d", i, n)}); r.Status != http.StatusOK {
					t.Errorf("send: %d %s", r.Status, r.Body)
					return
				}
			}
		}()
	}

	read := func(limit int, timeout int, stopWhenEmpty bool) []lgEvent {
		var got []lgEvent
		tok := start
		deadline := time.Now().Add(30 * time.Second)
		for len(got) < total && time.Now().Before(deadline) {
			var r lgStream
			lgDecode(t, s.MustDo(http.StatusOK, "GET", fmt.Sprintf("%s/events?limit=%d&timeout=%d&from=%s", lgV1, limit, timeout, url.QueryEscape(tok)), alice.Token, nil), &r)
			if r.Start != tok {
				t.Fatalf("start %q, want %q", r.Start, tok)
			}
			var msgs int
			for _, e := range r.Chunk {
				if e.Type == "m.room.message" {
					got = append(got, e)
					msgs++
				}
			}
			if msgs > limit {
				t.Fatalf("%d messages in one answer with limit %d", msgs, limit)
			}
			tok = r.End
			if stopWhenEmpty && len(r.Chunk) == 0 {
				break
			}
		}
		return got
	}
	live := read(7, 2000, false)
	wg.Wait()
	check := func(what string, got []lgEvent) {
		t.Helper()
		seen := map[string]bool{}
		next := make([]int, len(senders))
		for _, e := range got {
			if seen[e.EventID] {
				t.Fatalf("%s: %s twice", what, e.EventID)
			}
			seen[e.EventID] = true
			var i, n int
			if _, err := fmt.Sscanf(e.body(), "%d/%d", &i, &n); err != nil {
				t.Fatalf("%s: unexpected message %q", what, e.body())
			}
			if n != next[i] || e.RoomID != senders[i].room || e.UserID != senders[i].u.ID {
				t.Fatalf("%s: message %q (room %s, user_id %s) out of order, want %d/%d", what, e.body(), e.RoomID, e.UserID, i, next[i])
			}
			next[i]++
		}
		if len(got) != total {
			t.Fatalf("%s: %d messages, want %d", what, len(got), total)
		}
	}
	check("live", live)
	// Reading the finished log again, in smaller pages, gives the same
	// sequence: the stream order.
	again := read(3, 0, true)
	check("replay", again)
	if !slices.Equal(lgIDs(live), lgIDs(again)) {
		t.Fatal("the replay's order differs from the live read's")
	}
}

func TestLegacyEventsMembershipAndEphemeral(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	room := lgCreateRoom(t, s, alice, map[string]any{"preset": "private_chat"})
	before := lgText(t, s, alice, room, "before bob")
	tok := lgEvents(t, s, lgV1, bob, "?timeout=0").End

	// The invite reaches bob though the room's history is for members.
	s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, room, "/invite"), alice.Token, map[string]any{"user_id": bob.ID})
	lgText(t, s, alice, room, "while invited")
	r := lgDrain(t, s, bob, &tok)
	if len(r) != 1 || r[0].Type != "m.room.member" || r[0].membership() != "invite" || r[0].UserID != alice.ID {
		t.Fatalf("bob's stream after the invite: %+v", r)
	}
	lgJoin(t, s, bob, room)
	during := lgText(t, s, alice, room, "bob is here")
	r = lgDrain(t, s, bob, &tok)
	if ids := lgIDs(r); len(ids) != 2 || r[0].membership() != "join" || ids[1] != during {
		t.Fatalf("bob's stream after joining: %+v", r)
	}
	// Once he has left, nothing more, though the room has become world
	// readable: the stream is of the rooms one is in.
	lgSetVisibility(t, s, alice, room, "world_readable")
	s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, room, "/leave"), bob.Token, map[string]any{})
	lgText(t, s, alice, room, "bob is gone")
	r = lgDrain(t, s, bob, &tok)
	if len(r) != 2 || r[0].Type != "m.room.history_visibility" || r[1].membership() != "leave" {
		t.Fatalf("bob's stream after leaving: %+v", r)
	}
	lgSetVisibility(t, s, alice, room, "shared")

	// Joining a room whose history is shared brings what the window holds
	// from before the join too.
	dave := s.Register("dave", "pw-dave")
	dtok := lgEvents(t, s, lgV1, dave, "?timeout=0").End
	shared := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	early := lgText(t, s, alice, shared, "early")
	lgJoin(t, s, dave, shared)
	r = lgDrain(t, s, dave, &dtok)
	if len(r) < 3 || r[0].Type != "m.room.create" || !slices.Contains(lgIDs(r), early) || r[len(r)-1].membership() != "join" || *r[len(r)-1].StateKey != dave.ID {
		t.Fatalf("dave's stream after joining: %+v", r)
	}

	// Single events: alice sees hers; bob what he may (shared history),
	// nothing after he left, nothing of rooms he was never in.
	for _, prefix := range lgPrefixes {
		var ev lgEvent
		lgDecode(t, s.MustDo(http.StatusOK, "GET", prefix+"/events/"+url.PathEscape(during), alice.Token, nil), &ev)
		if ev.EventID != during || ev.UserID != alice.ID || ev.Sender != alice.ID || ev.RoomID != room || ev.body() != "bob is here" {
			t.Fatalf("GET /events/{id}: %+v", ev)
		}
		lgDecode(t, s.MustDo(http.StatusOK, "GET", prefix+"/events/"+url.PathEscape(before), bob.Token, nil), &ev)
		if ev.EventID != before || ev.UserID != alice.ID {
			t.Fatalf("bob reading shared history: %+v", ev)
		}
	}
	after := lgText(t, s, alice, room, "behind bob's back")
	lgWantErr(t, s.Do("GET", lgV1+"/events/"+url.PathEscape(after), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	carol := s.Register("carol", "pw-carol")
	lgWantErr(t, s.Do("GET", lgV1+"/events/"+url.PathEscape(before), carol.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	lgWantErr(t, s.Do("GET", lgV1+"/events/"+url.PathEscape("$nonexistent"), alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	lgWantErr(t, s.Do("GET", "/_matrix/client/v3/events/not-an-id", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// Typing, receipts and presence in their 2015 shapes.
	other := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	lgJoin(t, s, carol, other)
	atok := lgEvents(t, s, lgV1, alice, "?timeout=0").End
	lgDrain(t, s, alice, &atok)
	s.MustDo(http.StatusOK, "PUT", lgRoomPath(lgV1, other, "/typing/"+url.PathEscape(carol.ID)), carol.Token, map[string]any{"typing": true, "timeout": 30000})
	msg := lgText(t, s, alice, other, "read me")
	s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, other, "/receipt/m.read/"+url.PathEscape(msg)), carol.Token, map[string]any{})
	s.MustDo(http.StatusOK, "PUT", lgV1+"/presence/"+url.PathEscape(carol.ID)+"/status", carol.Token, map[string]any{"presence": "unavailable"})
	var typing, receipt, pres bool
	deadline := time.Now().Add(10 * time.Second)
	for !(typing && receipt && pres) && time.Now().Before(deadline) {
		got := lgEvents(t, s, lgV1, alice, "?timeout=2000&from="+url.QueryEscape(atok))
		atok = got.End
		for _, e := range got.Chunk {
			var c map[string]any
			_ = json.Unmarshal(e.Content, &c)
			switch e.Type {
			case "m.typing":
				if e.RoomID != other || fmt.Sprint(c["user_ids"]) != fmt.Sprint([]any{carol.ID}) {
					t.Fatalf("typing event: %s", mustJSON(e))
				}
				typing = true
			case "m.receipt":
				if e.RoomID != other || !strings.Contains(string(e.Content), carol.ID) || c[msg] == nil {
					t.Fatalf("receipt event: %s", mustJSON(e))
				}
				receipt = true
			case "m.presence":
				if c["user_id"] == carol.ID && c["presence"] == "unavailable" {
					pres = true
				}
			}
		}
	}
	if !(typing && receipt && pres) {
		t.Fatalf("ephemeral events seen: typing %v receipt %v presence %v", typing, receipt, pres)
	}
}

// lgDrain reads bob's (or anyone's) stream until an answer comes back
// empty, returning the room events read.
func lgDrain(t *testing.T, s *testserver.Server, u testserver.User, tok *string) []lgEvent {
	t.Helper()
	var out []lgEvent
	for range 20 {
		r := lgEvents(t, s, lgV1, u, "?timeout=0&from="+url.QueryEscape(*tok))
		*tok = r.End
		if len(r.Chunk) == 0 {
			return out
		}
		for _, e := range r.Chunk {
			if e.EventID != "" {
				out = append(out, e)
			}
		}
	}
	t.Fatal("the stream did not run dry")
	return nil
}

func TestLegacyRoomInitialSync(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice")
	bob := s.Register("bob", "pw-bob")
	room := lgCreateRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	for i := range 4 {
		lgText(t, s, alice, room, fmt.Sprintf("m%d", i))
	}
	s.MustDo(http.StatusOK, "PUT", lgV1+"/user/"+url.PathEscape(alice.ID)+"/rooms/"+url.PathEscape(room)+"/tags/fav", alice.Token, map[string]any{})

	for _, prefix := range lgPrefixes {
		var got lgRoom
		lgDecode(t, s.MustDo(http.StatusOK, "GET", lgRoomPath(prefix, room, "/initialSync?limit=3"), alice.Token, nil), &got)
		if got.RoomID != room || got.Membership != "join" || got.Visibility != "private" {
			t.Fatalf("%s room initialSync: %+v", prefix, got)
		}
		if b := lgBodies(got.Messages.Chunk); len(got.Messages.Chunk) != 3 || !slices.Equal(b, []string{"m1", "m2", "m3"}) {
			t.Fatalf("%s messages: %v", prefix, b)
		}
		if got.Messages.End == nil || !strings.HasPrefix(*got.Messages.End, "s") || got.Messages.Start == "" {
			t.Fatalf("%s tokens: %+v", prefix, got.Messages)
		}
		lgCheckLegacy(t, "messages", got.Messages.Chunk)
		lgCheckLegacy(t, "state", got.State)
		if lgHasState(got.State, "m.room.join_rules", "") == nil || got.Presence == nil || len(got.AccountData) != 1 {
			t.Fatalf("%s room initialSync: %+v", prefix, got)
		}
		// Not a member, not world readable.
		lgWantErr(t, s.Do("GET", lgRoomPath(prefix, room, "/initialSync"), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
		lgWantErr(t, s.Do("GET", lgRoomPath(prefix, "!nowhere:test.local", "/initialSync"), alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	}
	lgWantErr(t, s.Do("GET", lgRoomPath(lgV1, room, "/initialSync?limit=many"), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// An invitee of a room for members is refused too.
	closed := lgCreateRoom(t, s, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.ID}})
	lgWantErr(t, s.Do("GET", lgRoomPath(lgV1, closed, "/initialSync"), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	// World readable: anyone may peek, and stream the room.
	lgSetVisibility(t, s, alice, room, "world_readable")
	var peek lgRoom
	lgDecode(t, s.MustDo(http.StatusOK, "GET", lgRoomPath(lgV1, room, "/initialSync"), bob.Token, nil), &peek)
	if peek.Membership != "" || len(peek.Messages.Chunk) == 0 || lgHasState(peek.State, "m.room.create", "") == nil || peek.AccountData == nil || len(peek.AccountData) != 0 {
		t.Fatalf("peek: %+v", peek)
	}
	ptok := lgEvents(t, s, lgV1, bob, "?timeout=0&room_id="+url.QueryEscape(room)).End
	peeked := lgText(t, s, alice, room, "for the world")
	pr := lgEvents(t, s, lgV1, bob, "?timeout=5000&room_id="+url.QueryEscape(room)+"&from="+url.QueryEscape(ptok))
	if ids := lgIDs(pr.Chunk); !slices.Equal(ids, []string{peeked}) {
		t.Fatalf("peeking stream: %+v", pr)
	}
	lgWantErr(t, s.Do("GET", lgV1+"/events?timeout=0&room_id="+url.QueryEscape(closed), s.Register("carol", "pw-carol").Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	// Bob joins, then leaves: he keeps the room as it was when he left.
	lgSetVisibility(t, s, alice, room, "shared")
	lgJoin(t, s, bob, room)
	lgText(t, s, alice, room, "with bob")
	s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, room, "/leave"), bob.Token, map[string]any{})
	lgText(t, s, alice, room, "without bob")
	var gone lgRoom
	lgDecode(t, s.MustDo(http.StatusOK, "GET", lgRoomPath(lgV1, room, "/initialSync"), bob.Token, nil), &gone)
	if gone.Membership != "leave" {
		t.Fatalf("after leaving: %+v", gone)
	}
	if b := lgBodies(gone.Messages.Chunk); len(b) == 0 || b[len(b)-1] != "with bob" {
		t.Fatalf("messages after leaving: %v", b)
	}
	if last := gone.Messages.Chunk[len(gone.Messages.Chunk)-1]; last.Type != "m.room.member" || last.membership() != "leave" {
		t.Fatalf("last message should be bob's leave: %+v", last)
	}
	if m := lgHasState(gone.State, "m.room.member", bob.ID); m == nil || m.membership() != "leave" {
		t.Fatalf("state after leaving: %+v", gone.State)
	}
}
