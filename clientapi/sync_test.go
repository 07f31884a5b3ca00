package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/racedetect"
	"homeserver/internal/testserver"
	"homeserver/rooms"
)

// Helpers of the /sync tests; their names start with sy so as not to clash
// with other test files of the package.

// syTxn makes every transaction ID of a test run unique.
var syTxn atomic.Int64

func syNextTxn() string { return "sytxn" + strconv.FormatInt(syTxn.Add(1), 10) }

// syEvent is an event as /sync serves it; Raw holds every field.
type syEvent struct {
	EventID  string         `json:"event_id"`
	Type     string         `json:"type"`
	Sender   string         `json:"sender"`
	RoomID   string         `json:"room_id"`
	StateKey *string        `json:"state_key"`
	Content  map[string]any `json:"content"`
	Unsigned map[string]any `json:"unsigned"`
	Raw      map[string]any `json:"-"`
}

func (e *syEvent) UnmarshalJSON(b []byte) error {
	type plain syEvent
	if err := json.Unmarshal(b, (*plain)(e)); err != nil {
		return err
	}
	return json.Unmarshal(b, &e.Raw)
}

func (e syEvent) body() string { s, _ := e.Content["body"].(string); return s }

// key is "type|state_key" of a state event.
func (e syEvent) key() string {
	if e.StateKey == nil {
		return e.Type
	}
	return e.Type + "|" + *e.StateKey
}

type syEvents struct {
	Events []syEvent `json:"events"`
}

type syTimeline struct {
	Events    []syEvent `json:"events"`
	Limited   bool      `json:"limited"`
	PrevBatch string    `json:"prev_batch"`
}

type syJoined struct {
	Summary     map[string]any `json:"summary"`
	State       syEvents       `json:"state"`
	Timeline    syTimeline     `json:"timeline"`
	Ephemeral   syEvents       `json:"ephemeral"`
	AccountData syEvents       `json:"account_data"`
}

type syLeft struct {
	State       syEvents   `json:"state"`
	Timeline    syTimeline `json:"timeline"`
	AccountData syEvents   `json:"account_data"`
}

type syResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]syJoined `json:"join"`
		Invite map[string]struct {
			InviteState syEvents `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]syLeft `json:"leave"`
	} `json:"rooms"`
	AccountData syEvents        `json:"account_data"`
	Presence    syEvents        `json:"presence"`
	Raw         json.RawMessage `json:"-"`
}

// empty reports whether nothing of what the tests look at is in r.
func (r syResponse) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0
}

func syDecode(t *testing.T, body []byte) syResponse {
	t.Helper()
	var r syResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/sync answer: %v: %s", err, body)
	}
	if r.NextBatch == "" {
		t.Fatalf("/sync answered no next_batch: %s", body)
	}
	r.Raw = body
	return r
}

// sySync calls /sync with the query (url-encoded by the caller) and wants 200.
func sySync(t *testing.T, s *testserver.Server, u testserver.User, query string) syResponse {
	t.Helper()
	return syDecode(t, s.MustDo(http.StatusOK, "GET", v3+"/sync?"+query, u.Token, nil).Body)
}

// sySince is the query of an incremental sync that does not wait.
func sySince(since string, extra ...string) string {
	q := url.Values{"since": {since}, "timeout": {"0"}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q.Encode()
}

// syFilterQuery is the query of an initial sync with an inline filter.
func syFilterQuery(filter string, extra ...string) string {
	q := url.Values{"filter": {filter}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q.Encode()
}

func syRoomPath(roomID, rest string) string { return v3 + "/rooms/" + url.PathEscape(roomID) + rest }

func syState(t *testing.T, s *testserver.Server, u testserver.User, roomID, eventType, key string, content any) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "PUT", syRoomPath(roomID, "/state/"+url.PathEscape(eventType)+"/"+url.PathEscape(key)), u.Token, content)
	return r.String("event_id")
}

// syIDs lists the event IDs of evs.
func syIDs(evs []syEvent) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

// syBodies lists the bodies of the messages of evs, in order.
func syBodies(evs []syEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

// syKeys lists "type|state_key" of evs, sorted.
func syKeys(evs []syEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.key())
	}
	slices.Sort(out)
	return out
}

func syFind(evs []syEvent, typ string) (syEvent, bool) {
	for _, e := range evs {
		if e.Type == typ {
			return e, true
		}
	}
	return syEvent{}, false
}

// syDo is an HTTP call that reports failure instead of failing the test, for
// goroutines other than the test's.
func syDo(s *testserver.Server, client *http.Client, method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// syWait is a /sync started in the background.
type syWait struct {
	done chan struct{}
	resp syResponse
	err  error
}

// syStart starts a long-polling /sync; result waits for its answer.
func syStart(s *testserver.Server, u testserver.User, query string) *syWait {
	w := &syWait{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		status, body, err := syDo(s, s.Client, "GET", v3+"/sync?"+query, u.Token, nil)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d: %s", status, body)
		}
		if err == nil {
			err = json.Unmarshal(body, &w.resp)
			w.resp.Raw = body
		}
		w.err = err
	}()
	return w
}

func (w *syWait) result(t *testing.T) syResponse {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second): // a safety net, not a measurement
		t.Fatal("/sync did not answer")
	}
	if w.err != nil {
		t.Fatalf("/sync: %v", w.err)
	}
	return w.resp
}

// syUsers registers users with these localparts.
func syUsers(s *testserver.Server, names ...string) []testserver.User {
	out := make([]testserver.User, len(names))
	for i, n := range names {
		out[i] = s.Register(n, "password "+n)
	}
	return out
}

func syWantErr(t *testing.T, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("got %d %q, want %d %s: %s", r.Status, r.Errcode(), status, errcode, r.Body)
	}
}

// ---------------------------------------------------------------------------
// Initial sync

func TestSyncInitial(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]

	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Initial"})
	s.Join(bob, room)
	syState(t, s, alice, room, "m.room.topic", "", map[string]any{"topic": "before the timeline"})
	var sent []string
	for i := range 12 {
		sent = append(sent, s.SendText(alice, room, fmt.Sprintf("m%d", i)))
	}
	// A room Carol is invited to, and one Bob left.
	private := s.CreateRoom(alice, map[string]any{"preset": "private_chat", "name": "Secret", "invite": []string{carol.ID}})
	left := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Left"})
	s.Join(bob, left)
	leftMsg := s.SendText(alice, left, "before bob left")
	s.MustDo(http.StatusOK, "POST", syRoomPath(left, "/leave"), bob.Token, map[string]any{})
	afterLeave := s.SendText(alice, left, "after bob left")

	// Account data: global, per room, and a tag.
	s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(bob.ID)+"/account_data/com.example.global", bob.Token, map[string]any{"g": 1})
	s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(bob.ID)+"/rooms/"+url.PathEscape(room)+"/account_data/com.example.room", bob.Token, map[string]any{"r": 2})
	s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(bob.ID)+"/rooms/"+url.PathEscape(room)+"/tags/u.work", bob.Token, map[string]any{"order": 0.5})

	r := sySync(t, s, bob, syFilterQuery(`{"room":{"timeline":{"limit":5}}}`))
	jr, ok := r.Rooms.Join[room]
	if !ok {
		t.Fatalf("joined room missing: %s", r.Raw)
	}
	if got := syIDs(jr.Timeline.Events); !slices.Equal(got, sent[len(sent)-5:]) {
		t.Fatalf("timeline %v, want the last five messages %v", got, sent[len(sent)-5:])
	}
	if !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
		t.Fatalf("timeline limited=%v prev_batch=%q, want limited with a prev_batch", jr.Timeline.Limited, jr.Timeline.PrevBatch)
	}
	wantState := []string{
		"m.room.create|", "m.room.guest_access|", "m.room.history_visibility|", "m.room.join_rules|",
		"m.room.member|" + alice.ID, "m.room.member|" + bob.ID, "m.room.name|",
		"m.room.power_levels|", "m.room.topic|",
	}
	if got := syKeys(jr.State.Events); !slices.Equal(got, wantState) {
		t.Fatalf("state %v, want %v", got, wantState)
	}
	if topic, _ := syFind(jr.State.Events, "m.room.topic"); topic.Content["topic"] != "before the timeline" {
		t.Fatalf("topic in state: %v", topic.Raw)
	}
	for _, e := range jr.State.Events {
		if slices.Contains(sent, e.EventID) {
			t.Fatalf("state holds timeline event %s", e.EventID)
		}
	}
	if jc, _ := jr.Summary["m.joined_member_count"].(float64); jc != 2 {
		t.Fatalf("summary %v, want 2 joined", jr.Summary)
	}
	if ic, ok := jr.Summary["m.invited_member_count"].(float64); !ok || ic != 0 {
		t.Fatalf("summary %v, want 0 invited", jr.Summary)
	}
	if heroes := syStrings(jr.Summary["m.heroes"]); !slices.Equal(heroes, []string{alice.ID}) {
		t.Fatalf("heroes %v, want [%s]", heroes, alice.ID)
	}
	if _, ok := r.Rooms.Leave[left]; ok {
		t.Fatalf("left room served without include_leave: %s", r.Raw)
	}
	if _, ok := r.Rooms.Join[left]; ok {
		t.Fatal("left room served as joined")
	}
	if _, ok := r.Rooms.Join[private]; ok {
		t.Fatal("Bob sees a room he is not in")
	}
	global, ok := syFind(r.AccountData.Events, "com.example.global")
	if !ok || global.Content["g"] != float64(1) {
		t.Fatalf("global account data: %s", r.Raw)
	}
	roomData, ok := syFind(jr.AccountData.Events, "com.example.room")
	if !ok || roomData.Content["r"] != float64(2) {
		t.Fatalf("room account data: %v", jr.AccountData.Events)
	}
	tag, ok := syFind(jr.AccountData.Events, "m.tag")
	if !ok {
		t.Fatalf("no m.tag: %v", jr.AccountData.Events)
	}
	tags, _ := tag.Content["tags"].(map[string]any)
	if work, _ := tags["u.work"].(map[string]any); work["order"] != 0.5 {
		t.Fatalf("m.tag content %v", tag.Content)
	}

	// With include_leave, the room Bob left, up to his leave and no further.
	r = sySync(t, s, bob, syFilterQuery(`{"room":{"include_leave":true}}`))
	lr, ok := r.Rooms.Leave[left]
	if !ok {
		t.Fatalf("include_leave: no leave entry: %s", r.Raw)
	}
	last := lr.Timeline.Events[len(lr.Timeline.Events)-1]
	if last.Type != "m.room.member" || *last.StateKey != bob.ID || last.Content["membership"] != "leave" {
		t.Fatalf("left room's timeline ends with %v, want bob's leave", last.Raw)
	}
	ids := syIDs(lr.Timeline.Events)
	if !slices.Contains(ids, leftMsg) || slices.Contains(ids, afterLeave) {
		t.Fatalf("left room's timeline %v: want %s, not %s", ids, leftMsg, afterLeave)
	}

	// Carol is invited: stripped state, and nothing else of the room.
	r = sySync(t, s, carol, "")
	inv, ok := r.Rooms.Invite[private]
	if !ok {
		t.Fatalf("no invite: %s", r.Raw)
	}
	if _, ok := r.Rooms.Join[private]; ok {
		t.Fatal("invited room also served as joined")
	}
	keys := syKeys(inv.InviteState.Events)
	for _, want := range []string{"m.room.create|", "m.room.join_rules|", "m.room.name|", "m.room.member|" + carol.ID} {
		if !slices.Contains(keys, want) {
			t.Fatalf("invite_state %v lacks %s", keys, want)
		}
	}
	for _, e := range inv.InviteState.Events {
		if e.Type == "m.room.member" && *e.StateKey == carol.ID && e.Content["membership"] != "invite" {
			t.Fatalf("carol's member event in invite_state: %v", e.Raw)
		}
		if _, has := e.Raw["event_id"]; has {
			t.Fatalf("stripped state carries event_id: %v", e.Raw)
		}
		if e.Type == "m.room.name" && e.Content["name"] != "Secret" {
			t.Fatalf("name in invite_state: %v", e.Raw)
		}
	}
	// Alice sees Carol's invite in the summary of the private room.
	r = sySync(t, s, alice, "")
	sum := r.Rooms.Join[private].Summary
	if ic, _ := sum["m.invited_member_count"].(float64); ic != 1 {
		t.Fatalf("summary of the private room %v, want 1 invited", sum)
	}
}

// ---------------------------------------------------------------------------
// Incremental sync under concurrent sends

// Three users send 50 messages each into each of three rooms, all at once,
// while a fourth follows the chain of next_batch tokens: every message comes
// exactly once, in each room's order. With a small timeline limit most
// syncs are limited and the gaps are paged through with /messages from
// prev_batch back to the previous token.
func TestSyncIncrementalChainUnderConcurrentSends(t *testing.T) {
	for _, limit := range []int{50, 3} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) { syChain(t, limit) })
	}
}

func syChain(t *testing.T, limit int) {
	s := testserver.Start(t, "")
	senders := syUsers(s, "alice", "bob", "carol")
	dave := s.Register("dave", "password dave")
	var roomIDs []string
	for i := range 3 {
		room := s.CreateRoom(senders[0], map[string]any{"preset": "public_chat", "name": fmt.Sprintf("r%d", i)})
		for _, u := range append(senders[1:], dave) {
			s.Join(u, room)
		}
		roomIDs = append(roomIDs, room)
	}
	const perPair = 50
	filter := fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, limit)
	first := sySync(t, s, dave, syFilterQuery(filter))
	since := first.NextBatch

	// 3 senders x 3 rooms x 50 messages, all at once.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var mu sync.Mutex
	sentByRoom := map[string][]string{} // event IDs in the order of the sends' answers, per room
	bodyOf := map[string]string{}       // event ID -> body
	sendErrs := make(chan error, len(senders)*len(roomIDs))
	var wg sync.WaitGroup
	for _, u := range senders {
		for _, room := range roomIDs {
			wg.Go(func() {
				for i := range perPair {
					body := fmt.Sprintf("%s %d", u.ID, i)
					status, data, err := syDo(s, client, "PUT", syRoomPath(room, "/send/m.room.message/"+syNextTxn()), u.Token,
						map[string]any{"msgtype": "m.text", "body": body})
					if err == nil && status != http.StatusOK {
						err = fmt.Errorf("send: %d %s", status, data)
					}
					if err != nil {
						sendErrs <- err
						return
					}
					var ans struct {
						EventID string `json:"event_id"`
					}
					_ = json.Unmarshal(data, &ans)
					mu.Lock()
					sentByRoom[room] = append(sentByRoom[room], ans.EventID)
					bodyOf[ans.EventID] = body
					mu.Unlock()
				}
			})
		}
	}
	sendsDone := make(chan struct{})
	go func() { wg.Wait(); close(sendsDone) }()

	// Dave follows the chain of next_batch tokens while the sends go on.
	want := len(senders) * len(roomIDs) * perPair
	seen := map[string]int{}
	chain := map[string][]string{} // room -> message event IDs in the order served
	syncs, limitedSyncs := 0, 0
	deadline := time.Now().Add(2 * time.Minute) // a safety net
	for {
		r := sySync(t, s, dave, url.Values{"since": {since}, "timeout": {"1000"}, "filter": {filter}}.Encode())
		syncs++
		for roomID, jr := range r.Rooms.Join {
			evs := jr.Timeline.Events
			if jr.Timeline.Limited {
				// The gap is there to page back through, from prev_batch
				// to the token this sync started from.
				limitedSyncs++
				evs = append(syBackfill(t, s, dave, roomID, jr.Timeline.PrevBatch, since), evs...)
			}
			for _, e := range evs {
				if e.Type != "m.room.message" {
					continue
				}
				seen[e.EventID]++
				chain[roomID] = append(chain[roomID], e.EventID)
			}
		}
		since = r.NextBatch
		if limit < 10 {
			// Let events pile up, so that syncs are limited and their gaps
			// are paged through (the outcome must be the same either way).
			time.Sleep(20 * time.Millisecond)
		}
		done := false
		select {
		case <-sendsDone:
			done = len(seen) >= want
		default:
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d syncs: saw %d of %d messages", syncs, len(seen), want)
		}
	}
	close(sendErrs)
	for err := range sendErrs {
		t.Fatal(err)
	}
	// One more sync: nothing is left over and nothing comes twice. A room
	// may come again for its unread counts alone: the push evaluator
	// counts after the events reached /sync.
	r := sySync(t, s, dave, sySince(since, "filter", filter))
	for roomID, jr := range r.Rooms.Join {
		if len(jr.Timeline.Events) > 0 || len(jr.State.Events) > 0 || jr.Timeline.Limited {
			t.Fatalf("sync after the chain has events of %s: %s", roomID, r.Raw)
		}
	}
	t.Logf("%d syncs, %d of them limited", syncs, limitedSyncs)

	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s (%s) served %d times", id, bodyOf[id], n)
		}
		if _, ok := bodyOf[id]; !ok {
			t.Errorf("served an event nobody sent: %s", id)
		}
	}
	if len(seen) != want {
		t.Fatalf("saw %d distinct messages, want %d", len(seen), want)
	}
	for _, room := range roomIDs {
		// Each room's chain is the room's order, as /messages pages it.
		var order []string
		for _, e := range syAllEvents(t, s, dave, room) {
			if e.Type == "m.room.message" {
				order = append(order, e.EventID)
			}
		}
		if !slices.Equal(chain[room], order) {
			t.Fatalf("room %s: chain order differs from the room's order\nchain %v\nroom  %v", room, chain[room], order)
		}
		// And each sender's messages come in the order they were sent.
		next := map[string]int{}
		for _, id := range chain[room] {
			b := bodyOf[id]
			sp := strings.LastIndexByte(b, ' ')
			n, _ := strconv.Atoi(b[sp+1:])
			if n != next[b[:sp]] {
				t.Fatalf("room %s: %q out of order, want %s %d", room, b, b[:sp], next[b[:sp]])
			}
			next[b[:sp]]++
		}
		if len(chain[room]) != len(sentByRoom[room]) {
			t.Fatalf("room %s: %d in chain, %d sent", room, len(chain[room]), len(sentByRoom[room]))
		}
	}
}

// syBackfill pages /messages backwards from from to to and returns the
// events oldest first.
func syBackfill(t *testing.T, s *testserver.Server, u testserver.User, roomID, from, to string) []syEvent {
	t.Helper()
	var out []syEvent
	for range 1000 {
		q := url.Values{"dir": {"b"}, "from": {from}, "to": {to}, "limit": {"100"}}
		page := syMessages(t, s, u, roomID, q)
		for _, e := range page.Chunk {
			out = append(out, e)
		}
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	slices.Reverse(out)
	return out
}

type syPage struct {
	Chunk []syEvent `json:"chunk"`
	Start string    `json:"start"`
	End   string    `json:"end"`
}

func syMessages(t *testing.T, s *testserver.Server, u testserver.User, roomID string, q url.Values) syPage {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", syRoomPath(roomID, "/messages?"+q.Encode()), u.Token, nil)
	var p syPage
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("/messages: %v: %s", err, r.Body)
	}
	return p
}

// syAllEvents pages the whole room forwards from its start.
func syAllEvents(t *testing.T, s *testserver.Server, u testserver.User, roomID string) []syEvent {
	t.Helper()
	var out []syEvent
	from := "p0"
	for range 1000 {
		page := syMessages(t, s, u, roomID, url.Values{"dir": {"f"}, "from": {from}, "limit": {"100"}})
		out = append(out, page.Chunk...)
		if page.End == "" || len(page.Chunk) == 0 {
			return out
		}
		from = page.End
	}
	t.Fatal("/messages did not end")
	return nil
}

// ---------------------------------------------------------------------------
// Long-polling

func TestSyncLongPollWakesForRoomEvent(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	since := sySync(t, s, bob, "").NextBatch

	// A long timeout: the answer comes from the event, not the clock. Had
	// the sync timed out, it would be empty.
	w := syStart(s, bob, url.Values{"since": {since}, "timeout": {"60000"}}.Encode())
	time.Sleep(100 * time.Millisecond) // give it time to park; correct either way
	id := s.SendText(alice, room, "wake up")
	r := w.result(t)
	if got := syIDs(r.Rooms.Join[room].Timeline.Events); !slices.Contains(got, id) {
		t.Fatalf("woken sync's timeline %v lacks %s: %s", got, id, r.Raw)
	}
}

// What happens between an answer and the client's next long-poll is not
// waited past: the long-poll answers at once (a 60 s timeout would
// otherwise fail the test's deadline), a join between polls included, and
// the newly joined room's events wake it.
func TestSyncLongPollAfterEventBetweenPolls(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	other := s.CreateRoom(bob, nil)
	since := sySync(t, s, bob, "").NextBatch
	for i := range 3 {
		id := s.SendText(alice, room, fmt.Sprintf("between %d", i))
		r := syStart(s, bob, url.Values{"since": {since}, "timeout": {"60000"}}.Encode()).result(t)
		if got := syIDs(r.Rooms.Join[room].Timeline.Events); !slices.Equal(got, []string{id}) {
			t.Fatalf("round %d: timeline %v, want [%s]: %s", i, got, id, r.Raw)
		}
		since = r.NextBatch
	}
	// A join between polls wakes too, and the new room's events follow.
	third := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, third)
	r := syStart(s, bob, url.Values{"since": {since}, "timeout": {"60000"}}.Encode()).result(t)
	if _, ok := r.Rooms.Join[third]; !ok {
		t.Fatalf("join between polls not answered: %s", r.Raw)
	}
	w := syStart(s, bob, url.Values{"since": {r.NextBatch}, "timeout": {"60000"}}.Encode())
	time.Sleep(100 * time.Millisecond)
	id := s.SendText(alice, third, "in the new room")
	// Updated unread counts of the first room may come first, each in an
	// answer of its own.
	for range 5 {
		r = w.result(t)
		if _, ok := r.Rooms.Join[other]; ok {
			t.Fatalf("quiet room in the answer: %s", r.Raw)
		}
		if got := syIDs(r.Rooms.Join[third].Timeline.Events); len(got) > 0 {
			if !slices.Equal(got, []string{id}) {
				t.Fatalf("new room's timeline %v, want [%s]: %s", got, id, r.Raw)
			}
			return
		}
		w = syStart(s, bob, url.Values{"since": {r.NextBatch}, "timeout": {"60000"}}.Encode())
	}
	t.Fatalf("the new room's event never came: %s", r.Raw)
}

func TestSyncLongPollIgnoresOtherRooms(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	mine := s.CreateRoom(bob, nil)
	theirs := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	since := sySync(t, s, bob, "").NextBatch

	w := syStart(s, bob, url.Values{"since": {since}, "timeout": {"1500"}}.Encode())
	time.Sleep(100 * time.Millisecond)
	for i := range 3 {
		s.SendText(alice, theirs, fmt.Sprintf("not for bob %d", i))
	}
	r := w.result(t)
	if !r.empty() {
		t.Fatalf("sync answered with events of a room bob is not in: %s", r.Raw)
	}
	// The token still works and nothing was lost: the next event in Bob's
	// own room comes with it.
	id := s.SendText(bob, mine, "mine")
	r = sySync(t, s, bob, sySince(r.NextBatch))
	if got := syIDs(r.Rooms.Join[mine].Timeline.Events); !slices.Equal(got, []string{id}) {
		t.Fatalf("timeline %v, want [%s]", got, id)
	}
	if _, ok := r.Rooms.Join[theirs]; ok {
		t.Fatalf("bob sees alice's room: %s", r.Raw)
	}
}

func TestSyncLongPollWakesInvitee(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "carol")
	alice, carol := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"name": "Come in"})
	since := sySync(t, s, carol, "").NextBatch

	w := syStart(s, carol, url.Values{"since": {since}, "timeout": {"60000"}}.Encode())
	time.Sleep(100 * time.Millisecond)
	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/invite"), alice.Token, map[string]any{"user_id": carol.ID})
	r := w.result(t)
	inv, ok := r.Rooms.Invite[room]
	if !ok {
		t.Fatalf("invitee's sync: %s", r.Raw)
	}
	if name, _ := syFind(inv.InviteState.Events, "m.room.name"); name.Content["name"] != "Come in" {
		t.Fatalf("invite_state: %s", r.Raw)
	}
	// The invite is served once.
	if r := sySync(t, s, carol, sySince(r.NextBatch)); len(r.Rooms.Invite) != 0 {
		t.Fatalf("invite served again: %s", r.Raw)
	}
}

// ---------------------------------------------------------------------------
// Limited timelines and prev_batch

func TestSyncLimitedTimelineChainsIntoMessages(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Old name"})
	s.Join(bob, room)
	filter := `{"room":{"timeline":{"limit":5}}}`
	since := sySync(t, s, bob, syFilterQuery(filter)).NextBatch

	var sent []string // every event after since, in order
	for i := range 10 {
		sent = append(sent, s.SendText(alice, room, fmt.Sprintf("m%d", i)))
	}
	rename := syState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "New name"})
	sent = append(sent, rename)
	for i := 10; i < 20; i++ {
		sent = append(sent, s.SendText(alice, room, fmt.Sprintf("m%d", i)))
	}

	r := sySync(t, s, bob, sySince(since, "filter", filter))
	jr := r.Rooms.Join[room]
	if !jr.Timeline.Limited {
		t.Fatalf("20 new messages with limit 5: not limited: %s", r.Raw)
	}
	if got := syIDs(jr.Timeline.Events); !slices.Equal(got, sent[len(sent)-5:]) {
		t.Fatalf("timeline %v, want %v", got, sent[len(sent)-5:])
	}
	// The state changed in the gap is in the state section.
	name, ok := syFind(jr.State.Events, "m.room.name")
	if !ok || name.EventID != rename || name.Content["name"] != "New name" {
		t.Fatalf("state of a limited sync lacks the rename made in the gap: %v", jr.State.Events)
	}
	if len(jr.State.Events) != 1 {
		t.Fatalf("state %v, want only the rename", syKeys(jr.State.Events))
	}

	// /messages from prev_batch continues just before the timeline.
	page := syMessages(t, s, bob, room, url.Values{"dir": {"b"}, "from": {jr.Timeline.PrevBatch}, "limit": {"7"}})
	want := slices.Clone(sent[len(sent)-12 : len(sent)-5])
	slices.Reverse(want)
	if got := syIDs(page.Chunk); !slices.Equal(got, want) {
		t.Fatalf("/messages from prev_batch %v, want %v", got, want)
	}
	// Paged back to the old token, the gap is exactly the events not in
	// the timeline.
	gap := syBackfill(t, s, bob, room, jr.Timeline.PrevBatch, since)
	if got := syIDs(gap); !slices.Equal(got, sent[:len(sent)-5]) {
		t.Fatalf("gap %v, want %v", got, sent[:len(sent)-5])
	}

	// Unlimited: the whole of a small gap, no state.
	id := s.SendText(alice, room, "one more")
	r = sySync(t, s, bob, sySince(r.NextBatch, "filter", filter))
	jr = r.Rooms.Join[room]
	if jr.Timeline.Limited || !slices.Equal(syIDs(jr.Timeline.Events), []string{id}) || len(jr.State.Events) != 0 {
		t.Fatalf("one new message: %s", r.Raw)
	}
	page = syMessages(t, s, bob, room, url.Values{"dir": {"b"}, "from": {jr.Timeline.PrevBatch}, "limit": {"1"}})
	if got := syIDs(page.Chunk); !slices.Equal(got, []string{sent[len(sent)-1]}) {
		t.Fatalf("/messages before the one new message: %v, want %s", got, sent[len(sent)-1])
	}
}

// ---------------------------------------------------------------------------
// Filters

func TestSyncFilterAPI(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	path := v3 + "/user/" + url.PathEscape(alice.ID) + "/filter"

	syWantErr(t, s.Do("POST", path, bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	syWantErr(t, s.Do("POST", path, alice.Token, "{not json"), http.StatusBadRequest, "M_NOT_JSON")
	syWantErr(t, s.Do("POST", path, alice.Token, `{"room": 5}`), http.StatusBadRequest, "M_BAD_JSON")
	syWantErr(t, s.Do("POST", path, alice.Token, `{"event_format": "xml"}`), http.StatusBadRequest, "M_BAD_JSON")
	syWantErr(t, s.Do("POST", path, alice.Token, `[]`), http.StatusBadRequest, "M_BAD_JSON")

	body := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3, "types": []string{"m.room.message"}}}}
	id := s.MustDo(http.StatusOK, "POST", path, alice.Token, body).String("filter_id")
	if id == "" {
		t.Fatal("no filter_id")
	}
	got := s.MustDo(http.StatusOK, "GET", path+"/"+url.PathEscape(id), alice.Token, nil)
	tl, _ := got.JSON["room"].(map[string]any)["timeline"].(map[string]any)
	if tl["limit"] != float64(3) || !slices.Equal(syStrings(tl["types"]), []string{"m.room.message"}) {
		t.Fatalf("stored filter: %s", got.Body)
	}
	syWantErr(t, s.Do("GET", path+"/"+url.PathEscape(id), bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	syWantErr(t, s.Do("GET", path+"/12345", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	syWantErr(t, s.Do("GET", path+"/nonsense", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	// Bob's filters are his own: the same ID names nothing of his.
	syWantErr(t, s.Do("GET", v3+"/user/"+url.PathEscape(bob.ID)+"/filter/"+url.PathEscape(id), bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// /sync with the filter's ID, with an unknown ID, with bad inline JSON.
	room := s.CreateRoom(alice, nil)
	for i := range 5 {
		s.SendText(alice, room, fmt.Sprintf("m%d", i))
	}
	r := sySync(t, s, alice, url.Values{"filter": {id}}.Encode())
	if got := syBodies(r.Rooms.Join[room].Timeline.Events); !slices.Equal(got, []string{"m2", "m3", "m4"}) {
		t.Fatalf("timeline by filter ID: %v", got)
	}
	if n := len(r.Rooms.Join[room].Timeline.Events); n != 3 {
		t.Fatalf("timeline by filter ID has %d events, want 3 messages", n)
	}
	syWantErr(t, s.Do("GET", v3+"/sync?filter=999", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	syWantErr(t, s.Do("GET", v3+"/sync?"+url.Values{"filter": {`{"room":`}}.Encode(), alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	// Bob may not use Alice's filter.
	syWantErr(t, s.Do("GET", v3+"/sync?filter="+url.QueryEscape(id), bob.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestSyncFilters(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	other := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	for _, x := range []testserver.User{bob, carol, dave} {
		s.Join(x, room)
	}
	s.SendText(alice, other, "elsewhere")
	var bobs []string
	for i := range 3 {
		s.SendText(carol, room, fmt.Sprintf("carol %d", i))
		bobs = append(bobs, s.SendText(bob, room, fmt.Sprintf("bob %d", i)))
		s.MustDo(http.StatusOK, "PUT", syRoomPath(room, "/send/com.example.custom/"+syNextTxn()), bob.Token, map[string]any{"n": i})
	}

	t.Run("types", func(t *testing.T) {
		r := sySync(t, s, alice, syFilterQuery(`{"room":{"timeline":{"types":["m.room.message"],"limit":50}}}`))
		for _, e := range r.Rooms.Join[room].Timeline.Events {
			if e.Type != "m.room.message" {
				t.Fatalf("types filter let %s through", e.Type)
			}
		}
		if n := len(r.Rooms.Join[room].Timeline.Events); n != 6 {
			t.Fatalf("%d messages, want 6", n)
		}
		r = sySync(t, s, alice, syFilterQuery(`{"room":{"timeline":{"types":["com.example.*"],"limit":50}}}`))
		if n := len(r.Rooms.Join[room].Timeline.Events); n != 3 {
			t.Fatalf("wildcard types: %d events, want 3", n)
		}
	})
	t.Run("not_types", func(t *testing.T) {
		r := sySync(t, s, alice, syFilterQuery(`{"room":{"timeline":{"not_types":["m.room.message","m.room.member"],"limit":50}}}`))
		evs := r.Rooms.Join[room].Timeline.Events
		if len(evs) == 0 {
			t.Fatal("not_types left nothing")
		}
		for _, e := range evs {
			if e.Type == "m.room.message" || e.Type == "m.room.member" {
				t.Fatalf("not_types let %s through", e.Type)
			}
		}
	})
	t.Run("senders", func(t *testing.T) {
		r := sySync(t, s, alice, syFilterQuery(`{"room":{"timeline":{"senders":["`+bob.ID+`"],"types":["m.room.message"]}}}`))
		if got := syIDs(r.Rooms.Join[room].Timeline.Events); !slices.Equal(got, bobs) {
			t.Fatalf("senders filter: %v, want %v", got, bobs)
		}
	})
	t.Run("rooms", func(t *testing.T) {
		r := sySync(t, s, alice, syFilterQuery(`{"room":{"rooms":["`+other+`"]}}`))
		if _, ok := r.Rooms.Join[other]; !ok || len(r.Rooms.Join) != 1 {
			t.Fatalf("rooms filter: %s", r.Raw)
		}
		r = sySync(t, s, alice, syFilterQuery(`{"room":{"not_rooms":["`+other+`"]}}`))
		if _, ok := r.Rooms.Join[room]; !ok || len(r.Rooms.Join) != 1 {
			t.Fatalf("not_rooms filter: %s", r.Raw)
		}
	})
	t.Run("lazy_load_members", func(t *testing.T) {
		// Only Bob sends in the last events: the state has his membership
		// and the syncing user's, not Carol's or Dave's.
		f := `{"room":{"timeline":{"limit":2,"types":["m.room.message"],"senders":["` + bob.ID + `"]},"state":{"lazy_load_members":true}}}`
		r := sySync(t, s, alice, syFilterQuery(f))
		jr := r.Rooms.Join[room]
		var members []string
		for _, e := range jr.State.Events {
			if e.Type == "m.room.member" {
				members = append(members, *e.StateKey)
			}
		}
		slices.Sort(members)
		if want := []string{alice.ID, bob.ID}; !slices.Equal(members, want) {
			t.Fatalf("lazy-loaded members %v, want %v", members, want)
		}
		if _, ok := syFind(jr.State.Events, "m.room.create"); !ok {
			t.Fatal("lazy loading dropped non-member state")
		}
		// Incrementally: Carol speaks; her membership comes with it.
		since := r.NextBatch
		s.SendText(carol, room, "carol again")
		r = sySync(t, s, alice, sySince(since, "filter", f))
		r2 := sySync(t, s, alice, sySince(since, "filter", `{"room":{"state":{"lazy_load_members":true}}}`))
		if n := len(r.Rooms.Join[room].Timeline.Events); n != 0 {
			t.Fatalf("senders filter let carol through: %s", r.Raw)
		}
		members = nil
		for _, e := range r2.Rooms.Join[room].State.Events {
			if e.Type == "m.room.member" {
				members = append(members, *e.StateKey)
			}
		}
		if !slices.Contains(members, carol.ID) || slices.Contains(members, dave.ID) {
			t.Fatalf("incremental lazy-loaded members %v: want carol's, not dave's", members)
		}
	})
	t.Run("event_fields", func(t *testing.T) {
		r := sySync(t, s, alice, syFilterQuery(`{"event_fields":["type","content.body"],"room":{"timeline":{"types":["m.room.message"]}}}`))
		evs := r.Rooms.Join[room].Timeline.Events
		if len(evs) == 0 {
			t.Fatal("no events")
		}
		for _, e := range evs {
			if len(e.Raw) != 2 || e.Type != "m.room.message" || len(e.Content) != 1 || e.body() == "" {
				t.Fatalf("event_fields [type content.body]: %v", e.Raw)
			}
		}
	})
	t.Run("event_format", func(t *testing.T) {
		r := sySync(t, s, alice, syFilterQuery(`{"event_format":"federation","room":{"timeline":{"types":["m.room.message"]}}}`))
		evs := r.Rooms.Join[room].Timeline.Events
		if len(evs) == 0 {
			t.Fatal("no events")
		}
		for _, e := range evs {
			for _, k := range []string{"auth_events", "prev_events", "depth", "hashes", "signatures", "room_id"} {
				if _, ok := e.Raw[k]; !ok {
					t.Fatalf("federation format lacks %s: %v", k, e.Raw)
				}
			}
		}
		r = sySync(t, s, alice, syFilterQuery(`{"event_format":"client","room":{"timeline":{"types":["m.room.message"]}}}`))
		for _, e := range r.Rooms.Join[room].Timeline.Events {
			if _, ok := e.Raw["hashes"]; ok || e.EventID == "" {
				t.Fatalf("client format: %v", e.Raw)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Parameters

func TestSyncBadParameters(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "password alice")
	room := s.CreateRoom(alice, map[string]any{"name": "Full"})
	tok := sySync(t, s, alice, "").NextBatch

	for _, q := range []string{
		"since=garbage", "since=s", "since=s1_2_3", "since=s-1_0_0_0_0", "since=s1_2_3_4_x", "since=p5",
		"since=s999999_0_0_0_0", "since=s0_999999_0_0_0", "since=s0_0_999999_0_0", "since=s0_0_0_999999_0",
		"timeout=abc", "timeout=-1", "timeout=1.5",
		"full_state=maybe", "full_state=1",
		"set_presence=busy",
	} {
		syWantErr(t, s.Do("GET", v3+"/sync?"+q, alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	syWantErr(t, s.Do("GET", v3+"/sync", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

	// A typing position ahead of the server's (as after a restart) is not
	// an error: typing lives in memory.
	parts := strings.Split(tok, "_")
	parts[4] = "99999999999999999"
	sySync(t, s, alice, sySince(strings.Join(parts, "_")))

	// full_state=true answers at once with the whole state.
	r := sySync(t, s, alice, url.Values{"since": {tok}, "full_state": {"true"}, "timeout": {"60000"}}.Encode())
	jr, ok := r.Rooms.Join[room]
	if !ok {
		t.Fatalf("full_state: room missing: %s", r.Raw)
	}
	for _, want := range []string{"m.room.create|", "m.room.name|", "m.room.power_levels|", "m.room.member|" + alice.ID} {
		if !slices.Contains(syKeys(jr.State.Events), want) && !slices.Contains(syKeys(jr.Timeline.Events), want) {
			t.Fatalf("full_state lacks %s: %v", want, syKeys(jr.State.Events))
		}
	}
	// Without it, an idle incremental sync is empty.
	if r := sySync(t, s, alice, sySince(tok)); !r.empty() {
		t.Fatalf("idle incremental sync: %s", r.Raw)
	}
}

// ---------------------------------------------------------------------------
// History visibility

func TestSyncLeaverSeesUpToTheirLeave(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	s.SendText(alice, room, "before")
	since := sySync(t, s, bob, "").NextBatch

	seen := s.SendText(alice, room, "while bob is here")
	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/leave"), bob.Token, map[string]any{})
	after1 := s.SendText(alice, room, "after bob left 1")
	syState(t, s, alice, room, "m.room.topic", "", map[string]any{"topic": "after bob left"})
	after2 := s.SendText(alice, room, "after bob left 2")

	r := sySync(t, s, bob, sySince(since))
	if _, ok := r.Rooms.Join[room]; ok {
		t.Fatalf("room still joined: %s", r.Raw)
	}
	lr, ok := r.Rooms.Leave[room]
	if !ok {
		t.Fatalf("no leave section: %s", r.Raw)
	}
	ids := syIDs(lr.Timeline.Events)
	if len(ids) != 2 || ids[0] != seen {
		t.Fatalf("left room timeline %v, want [%s, bob's leave]", ids, seen)
	}
	if last := lr.Timeline.Events[1]; last.Type != "m.room.member" || *last.StateKey != bob.ID || last.Content["membership"] != "leave" {
		t.Fatalf("left room timeline ends with %v", last.Raw)
	}
	for _, e := range append(lr.Timeline.Events, lr.State.Events...) {
		if e.EventID == after1 || e.EventID == after2 || e.Type == "m.room.topic" {
			t.Fatalf("bob sees %v, sent after he left", e.Raw)
		}
	}
	// Later syncs say nothing more of the room, whatever happens in it.
	next := r.NextBatch
	s.SendText(alice, room, "after bob left 3")
	r = sySync(t, s, bob, sySince(next))
	if _, ok := r.Rooms.Leave[room]; ok || len(r.Rooms.Join) != 0 {
		t.Fatalf("room served after the leave was: %s", r.Raw)
	}
	// Nor does a full_state sync, or an initial one with include_leave,
	// show anything after the leave.
	r = sySync(t, s, bob, syFilterQuery(`{"room":{"include_leave":true,"timeline":{"limit":50}}}`))
	for _, e := range append(r.Rooms.Leave[room].Timeline.Events, r.Rooms.Leave[room].State.Events...) {
		if e.EventID == after1 || e.EventID == after2 || e.Type == "m.room.topic" {
			t.Fatalf("initial sync with include_leave shows %v", e.Raw)
		}
	}
	// /messages from the leave section's prev_batch works and stops before
	// the leave, too.
	page := syMessages(t, s, bob, room, url.Values{"dir": {"b"}, "from": {lr.Timeline.PrevBatch}, "limit": {"1"}})
	if len(page.Chunk) != 1 || page.Chunk[0].body() != "before" {
		t.Fatalf("/messages before the leave section: %v", syBodies(page.Chunk))
	}
}

// ---------------------------------------------------------------------------
// Typing and receipts

func TestSyncTyping(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob", "eve")
	alice, bob, eve := u[0], u[1], u[2]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	elsewhere := s.CreateRoom(eve, nil)
	bobSince := sySync(t, s, bob, "").NextBatch
	eveSince := sySync(t, s, eve, "").NextBatch

	typingPath := syRoomPath(room, "/typing/"+url.PathEscape(alice.ID))
	s.MustDo(http.StatusOK, "PUT", typingPath, alice.Token, map[string]any{"typing": true, "timeout": 30000})
	// Not a member: refused, and Eve cannot type for Alice.
	syWantErr(t, s.Do("PUT", syRoomPath(room, "/typing/"+url.PathEscape(eve.ID)), eve.Token, map[string]any{"typing": true, "timeout": 30000}),
		http.StatusForbidden, "M_FORBIDDEN")
	syWantErr(t, s.Do("PUT", typingPath, eve.Token, map[string]any{"typing": true}), http.StatusForbidden, "M_FORBIDDEN")

	r := sySync(t, s, bob, sySince(bobSince))
	ev, ok := syFind(r.Rooms.Join[room].Ephemeral.Events, "m.typing")
	if !ok || !slices.Equal(syStrings(ev.Content["user_ids"]), []string{alice.ID}) {
		t.Fatalf("bob's ephemeral: %s", r.Raw)
	}
	if r := sySync(t, s, eve, sySince(eveSince)); len(r.Rooms.Join) != 0 {
		t.Fatalf("eve, in another room, sees typing: %s", r.Raw)
	}
	if r := sySync(t, s, eve, ""); len(r.Rooms.Join[elsewhere].Ephemeral.Events) != 0 {
		t.Fatalf("eve's room has typing: %s", r.Raw)
	}
	// Alice stops: Bob learns the set is empty.
	bobSince = r.NextBatch
	s.MustDo(http.StatusOK, "PUT", typingPath, alice.Token, map[string]any{"typing": false})
	r = sySync(t, s, bob, sySince(bobSince))
	ev, ok = syFind(r.Rooms.Join[room].Ephemeral.Events, "m.typing")
	if !ok || len(syStrings(ev.Content["user_ids"])) != 0 {
		t.Fatalf("typing stopped: %s", r.Raw)
	}
	// A typing change wakes a waiting sync.
	w := syStart(s, bob, url.Values{"since": {r.NextBatch}, "timeout": {"60000"}}.Encode())
	time.Sleep(100 * time.Millisecond)
	s.MustDo(http.StatusOK, "PUT", typingPath, alice.Token, map[string]any{"typing": true, "timeout": 30000})
	r = w.result(t)
	if ev, ok := syFind(r.Rooms.Join[room].Ephemeral.Events, "m.typing"); !ok || len(syStrings(ev.Content["user_ids"])) != 1 {
		t.Fatalf("woken by typing: %s", r.Raw)
	}
}

func TestSyncReceipts(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	msg := s.SendText(alice, room, "read me")
	priv := s.SendText(alice, room, "read me privately")
	aliceSince := sySync(t, s, alice, "").NextBatch
	bobSince := sySync(t, s, bob, "").NextBatch

	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/receipt/m.read/"+url.PathEscape(msg)), bob.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/receipt/m.read.private/"+url.PathEscape(priv)), bob.Token, map[string]any{})

	receiptsOf := func(r syResponse) map[string]any {
		t.Helper()
		ev, ok := syFind(r.Rooms.Join[room].Ephemeral.Events, "m.receipt")
		if !ok {
			return nil
		}
		return ev.Content
	}
	readers := func(content map[string]any, eventID, typ string) []string {
		byType, _ := content[eventID].(map[string]any)
		users, _ := byType[typ].(map[string]any)
		var out []string
		for u := range users {
			out = append(out, u)
		}
		return out
	}
	r := sySync(t, s, alice, sySince(aliceSince))
	c := receiptsOf(r)
	if got := readers(c, msg, "m.read"); !slices.Equal(got, []string{bob.ID}) {
		t.Fatalf("alice's receipts: %v (%s)", c, r.Raw)
	}
	if _, ok := c[priv]; ok {
		t.Fatalf("alice sees bob's private receipt: %v", c)
	}
	r = sySync(t, s, bob, sySince(bobSince))
	c = receiptsOf(r)
	if got := readers(c, priv, "m.read.private"); !slices.Equal(got, []string{bob.ID}) {
		t.Fatalf("bob's own private receipt: %v (%s)", c, r.Raw)
	}
	if got := readers(c, msg, "m.read"); !slices.Equal(got, []string{bob.ID}) {
		t.Fatalf("bob's own public receipt: %v", c)
	}
	// An initial sync has them too, each to those who may see it.
	if got := readers(receiptsOf(sySync(t, s, alice, "")), priv, "m.read.private"); len(got) != 0 {
		t.Fatalf("alice's initial sync shows the private receipt: %v", got)
	}
	if got := readers(receiptsOf(sySync(t, s, alice, "")), msg, "m.read"); !slices.Equal(got, []string{bob.ID}) {
		t.Fatalf("alice's initial sync lacks bob's receipt: %v", got)
	}
}

// ---------------------------------------------------------------------------
// Transaction IDs

func TestSyncTransactionIDOnlyForSendingDevice(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "password alice")
	phone := s.Login("alice", "password alice")
	bob := s.Register("bob", "password bob")
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	r := s.MustDo(http.StatusOK, "PUT", syRoomPath(room, "/send/m.room.message/my-txn-1"), alice.Token,
		map[string]any{"msgtype": "m.text", "body": "hi"})
	id := r.String("event_id")

	txnOf := func(u testserver.User, filter string) (string, bool) {
		t.Helper()
		r := sySync(t, s, u, syFilterQuery(filter))
		for _, e := range r.Rooms.Join[room].Timeline.Events {
			if e.EventID == id {
				txn, ok := e.Unsigned["transaction_id"].(string)
				return txn, ok
			}
		}
		t.Fatalf("%s's sync lacks %s: %s", u.ID, id, r.Raw)
		return "", false
	}
	if txn, ok := txnOf(alice, ""); !ok || txn != "my-txn-1" {
		t.Fatalf("sending device: transaction_id %q, %v", txn, ok)
	}
	if txn, ok := txnOf(phone, ""); ok {
		t.Fatalf("other device of the sender sees transaction_id %q", txn)
	}
	if txn, ok := txnOf(bob, ""); ok {
		t.Fatalf("other user sees transaction_id %q", txn)
	}
	// In the federation format there is no unsigned.transaction_id.
	rr := sySync(t, s, alice, syFilterQuery(`{"event_format":"federation"}`))
	if strings.Contains(string(rr.Raw), "my-txn-1") {
		t.Fatalf("federation format carries the transaction ID: %s", rr.Raw)
	}
}

// syStrings reads a JSON array of strings (nil when v is not one).
func syStrings(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// A user who left and came back between two syncs missed what happened
// while away: the room comes whole again, with the state changed meanwhile.
func TestSyncRejoinBetweenSyncsSendsState(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	syState(t, s, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	s.Join(bob, room)
	since := sySync(t, s, bob, "").NextBatch

	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/leave"), bob.Token, map[string]any{})
	topic := syState(t, s, alice, room, "m.room.topic", "", map[string]any{"topic": "set while bob was away"})
	away := s.SendText(alice, room, "while bob was away")
	s.Join(bob, room)
	back := s.SendText(alice, room, "bob is back")

	r := sySync(t, s, bob, sySince(since))
	jr, ok := r.Rooms.Join[room]
	if !ok {
		t.Fatalf("rejoined room missing: %s", r.Raw)
	}
	all := append(slices.Clone(jr.State.Events), jr.Timeline.Events...)
	if got, ok := syFind(all, "m.room.topic"); !ok || got.EventID != topic {
		t.Fatalf("the topic set while bob was away is in neither state nor timeline: state %v timeline %v",
			syKeys(jr.State.Events), syIDs(jr.Timeline.Events))
	}
	ids := syIDs(jr.Timeline.Events)
	if slices.Contains(ids, away) || !slices.Contains(ids, back) {
		t.Fatalf("timeline %v: want %s and not %s (history is for joined members)", ids, back, away)
	}
}

// Forgotten rooms are not listed with include_leave.
func TestSyncForgottenRoomsHidden(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	kept := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	forgotten := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	for _, room := range []string{kept, forgotten} {
		s.Join(bob, room)
	}
	since := sySync(t, s, bob, "").NextBatch
	for _, room := range []string{kept, forgotten} {
		s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/leave"), bob.Token, map[string]any{})
	}
	// The leave itself is news to a client that had the room joined.
	r := sySync(t, s, bob, sySince(since))
	if _, ok := r.Rooms.Leave[forgotten]; !ok {
		t.Fatalf("leave not served: %s", r.Raw)
	}
	s.MustDo(http.StatusOK, "POST", syRoomPath(forgotten, "/forget"), bob.Token, map[string]any{})
	filter := `{"room":{"include_leave":true}}`
	r = sySync(t, s, bob, syFilterQuery(filter))
	if _, ok := r.Rooms.Leave[kept]; !ok {
		t.Fatalf("left room not listed with include_leave: %s", r.Raw)
	}
	if _, ok := r.Rooms.Leave[forgotten]; ok {
		t.Fatalf("forgotten room listed: %s", r.Raw)
	}
	r = sySync(t, s, bob, sySince(r.NextBatch, "filter", filter, "full_state", "true"))
	if _, ok := r.Rooms.Leave[forgotten]; ok {
		t.Fatalf("forgotten room listed by full_state: %s", r.Raw)
	}
	if _, ok := r.Rooms.Leave[kept]; !ok {
		t.Fatalf("left room not listed by full_state with include_leave: %s", r.Raw)
	}
}

// What changed in a room after the user left stays hidden, whatever the
// filter leaves of the timeline.
func TestSyncLeftRoomStateStopsAtLeave(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	since := sySync(t, s, bob, "").NextBatch
	s.SendText(alice, room, "before the leave")
	s.MustDo(http.StatusOK, "POST", syRoomPath(room, "/leave"), bob.Token, map[string]any{})
	syState(t, s, alice, room, "m.room.topic", "", map[string]any{"topic": "after bob left"})
	syState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "after bob left"})
	s.SendText(alice, room, "after the leave")

	for _, c := range []struct{ name, query string }{
		{"initial", syFilterQuery(`{"room":{"include_leave":true,"timeline":{"types":["m.nothing"]}}}`)},
		{"initial limited", syFilterQuery(`{"room":{"include_leave":true,"timeline":{"limit":1}}}`)},
		{"incremental", sySince(since, "filter", `{"room":{"timeline":{"types":["m.nothing"]}}}`)},
		{"incremental limited", sySince(since, "filter", `{"room":{"timeline":{"limit":1}}}`)},
		{"full_state", sySince(since, "full_state", "true", "filter", `{"room":{"include_leave":true,"timeline":{"types":["m.nothing"]}}}`)},
	} {
		r := sySync(t, s, bob, c.query)
		lr, ok := r.Rooms.Leave[room]
		if !ok {
			t.Fatalf("%s: no leave section: %s", c.name, r.Raw)
		}
		for _, e := range append(lr.State.Events, lr.Timeline.Events...) {
			if e.Type == "m.room.topic" || e.Type == "m.room.name" || e.body() == "after the leave" {
				t.Fatalf("%s: bob sees %v, sent after he left", c.name, e.Raw)
			}
		}
		// His own leave is there, in the state or the timeline.
		var left bool
		for _, e := range append(lr.State.Events, lr.Timeline.Events...) {
			left = left || (e.Type == "m.room.member" && *e.StateKey == bob.ID && e.Content["membership"] == "leave")
		}
		if !left {
			t.Fatalf("%s: the leave itself is missing: %s", c.name, r.Raw)
		}
	}
}

// State changed where the timeline filter does not look is still served.
func TestSyncFilteredTimelineKeepsState(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "name": "Old"})
	s.Join(bob, room)
	filter := `{"room":{"timeline":{"types":["m.room.message"]}}}`
	since := sySync(t, s, bob, syFilterQuery(filter)).NextBatch

	s.SendText(alice, room, "one")
	rename := syState(t, s, alice, room, "m.room.name", "", map[string]any{"name": "New"})
	s.SendText(alice, room, "two")
	for _, q := range []string{sySince(since, "filter", filter), syFilterQuery(filter)} {
		r := sySync(t, s, bob, q)
		jr := r.Rooms.Join[room]
		name, ok := syFind(jr.State.Events, "m.room.name")
		if !ok || name.EventID != rename {
			t.Fatalf("%s: the rename is lost: state %v, timeline %v", q, syKeys(jr.State.Events), syBodies(jr.Timeline.Events))
		}
	}
	// Only state changed: the room is there with it.
	since = sySync(t, s, bob, sySince(since, "filter", filter)).NextBatch
	topic := syState(t, s, alice, room, "m.room.topic", "", map[string]any{"topic": "t"})
	r := sySync(t, s, bob, sySince(since, "filter", filter))
	if got, ok := syFind(r.Rooms.Join[room].State.Events, "m.room.topic"); !ok || got.EventID != topic {
		t.Fatalf("a state change alone is lost: %s", r.Raw)
	}
}

// A filtered timeline that stops looking (after thousands of events the
// filter rejects) says it is limited: older matching events are left to
// /messages, not silently dropped.
func TestSyncFilteredTimelineScanCapIsLimited(t *testing.T) {
	if testing.Short() || racedetect.Enabled {
		// The race detector finds nothing in a cap on a scan, and makes
		// its thousands of events cost a minute and a half.
		t.Skip("sends thousands of events")
	}
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob")
	alice, bob := u[0], u[1]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	s.Join(bob, room)
	filter := `{"room":{"timeline":{"types":["m.room.message"],"limit":5}}}`
	since := sySync(t, s, bob, syFilterQuery(filter)).NextBatch
	old := s.SendText(alice, room, "old but matching")
	// Bulk events through the service: the HTTP path is not under test.
	ctx := t.Context()
	for i := range 5010 { // more than rooms.maxScan (5000)
		_, err := s.Srv.Rooms().Send(ctx, rooms.SendRequest{Sender: alice.ID, RoomID: room, Type: "com.example.noise",
			Content: json.RawMessage(`{"n":` + strconv.Itoa(i) + `}`)})
		if err != nil {
			t.Fatal(err)
		}
	}
	r := sySync(t, s, bob, sySince(since, "filter", filter))
	jr := r.Rooms.Join[room]
	if slices.Contains(syIDs(jr.Timeline.Events), old) {
		return // found it after all
	}
	if !jr.Timeline.Limited {
		t.Fatalf("timeline lacks %s and is not limited: %s", old, r.Raw)
	}
	// And /messages from prev_batch with the same filter finds it.
	q := url.Values{"dir": {"b"}, "from": {jr.Timeline.PrevBatch}, "to": {since}, "limit": {"5"},
		"filter": {`{"types":["m.room.message"]}`}}
	var found bool
	for range 100 {
		page := syMessages(t, s, bob, room, q)
		found = found || slices.Contains(syIDs(page.Chunk), old)
		if found || page.End == "" {
			break
		}
		q.Set("from", page.End)
	}
	if !found {
		t.Fatalf("/messages from prev_batch %s never reaches %s", jr.Timeline.PrevBatch, old)
	}
}

// The members of a room woken by one message read alike (the room's new
// events, its membership changes) and may share those reads; what is each
// one's own must stay so: the sender's transaction ID, an ignored sender's
// messages, a member's own leave. Two rounds: a message, then a leave.
func TestSyncWokenTogetherKeepWhatIsTheirs(t *testing.T) {
	s := testserver.Start(t, "")
	u := syUsers(s, "alice", "bob", "carol", "dan", "erin", "frank")
	alice, frank := u[0], u[5]
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	for _, m := range u[1:] {
		s.Join(m, room)
	}
	s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(frank.ID)+"/account_data/m.ignored_user_list", frank.Token,
		map[string]any{"ignored_users": map[string]any{alice.ID: map[string]any{}}})
	const lazy = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":20}}}`
	since := map[string]string{}
	for _, m := range u {
		since[m.ID] = sySync(t, s, m, url.Values{"filter": {lazy}}.Encode()).NextBatch
	}
	poll := func(m testserver.User, timeout string) *syWait {
		return syStart(s, m, url.Values{"since": {since[m.ID]}, "timeout": {timeout}, "filter": {lazy}}.Encode())
	}
	// waitFor long-polls until the answer has the event in the room (in
	// the timeline of a joined room, or of a left one), skipping answers
	// that bring only unread counts.
	waitFor := func(m testserver.User, w *syWait, id string) syEvent {
		t.Helper()
		for range 5 {
			r := w.result(t)
			since[m.ID] = r.NextBatch
			evs := append(r.Rooms.Join[room].Timeline.Events, r.Rooms.Leave[room].Timeline.Events...)
			for _, e := range evs {
				if e.EventID == id {
					return e
				}
			}
			if len(evs) > 0 {
				t.Fatalf("%s: timeline without %s: %s", m.ID, id, r.Raw)
			}
			w = poll(m, "60000")
		}
		t.Fatalf("%s never got %s", m.ID, id)
		return syEvent{}
	}

	waits := map[string]*syWait{}
	for _, m := range u[:5] {
		waits[m.ID] = poll(m, "60000")
	}
	frankWait := poll(frank, "1500")
	time.Sleep(100 * time.Millisecond)
	r := s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/send/m.room.message/shared-1"), alice.Token,
		map[string]any{"msgtype": "m.text", "body": "to all of you"})
	id := r.String("event_id")
	for _, m := range u[:5] {
		e := waitFor(m, waits[m.ID], id)
		txn, has := e.Unsigned["transaction_id"]
		if m.ID == alice.ID && txn != "shared-1" {
			t.Errorf("the sender's own echo lacks its transaction ID: %v", e.Unsigned)
		}
		if m.ID != alice.ID && has {
			t.Errorf("%s sees the sender's transaction ID: %v", m.ID, e.Unsigned)
		}
		if e.Unsigned["membership"] != "join" {
			t.Errorf("%s: unsigned.membership %v, want join", m.ID, e.Unsigned["membership"])
		}
	}
	for range 5 {
		fr := frankWait.result(t)
		since[frank.ID] = fr.NextBatch
		for _, e := range fr.Rooms.Join[room].Timeline.Events {
			if e.Sender == alice.ID {
				t.Fatalf("frank ignores alice, yet got her message: %s", fr.Raw)
			}
		}
		if len(fr.Rooms.Join) == 0 {
			break
		}
		frankWait = poll(frank, "1500")
	}

	// Bob leaves: he gets his leave in rooms.leave, the others in their
	// timelines.
	bob := u[1]
	for _, m := range u[:5] {
		waits[m.ID] = poll(m, "60000")
	}
	time.Sleep(100 * time.Millisecond)
	leave := s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.member/"+url.PathEscape(bob.ID)), bob.Token,
		map[string]any{"membership": "leave"}).String("event_id")
	for _, m := range u[:5] {
		w := waits[m.ID]
		if m.ID == bob.ID {
			// Answers with only the first round's unread counts may come
			// first.
			for i := 0; ; i++ {
				lr := w.result(t)
				since[bob.ID] = lr.NextBatch
				if _, ok := lr.Rooms.Leave[room]; ok || i == 4 {
					if got := syIDs(lr.Rooms.Leave[room].Timeline.Events); !slices.Contains(got, leave) {
						t.Errorf("bob's own leave not in rooms.leave: %s", lr.Raw)
					}
					break
				}
				w = poll(bob, "60000")
			}
			continue
		}
		if e := waitFor(m, w, leave); e.Content["membership"] != "leave" {
			t.Errorf("%s: the leave reads %v", m.ID, e.Content)
		}
	}
}
