package appservice_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/rooms"
)

const (
	asToken = "as-secret-token"
	hsToken = "hs-secret-token"
)

// safetyNet bounds every wait so that a broken queue fails the test rather
// than hanging it; no assertion depends on it.
const safetyNet = 2 * time.Minute

// fakeAS is an application service that records what it acknowledged, the
// way a real one would: a transaction ID it has already processed is
// answered 200 and ignored.
type fakeAS struct {
	t   testing.TB
	srv *httptest.Server
	// legacyOnly makes it answer 404 on the prefixed path and serve the
	// unprefixed one (a 2015-era service).
	legacyOnly bool
	// down makes it answer 503.
	down atomic.Bool

	mu        sync.Mutex
	changed   chan struct{}
	done      map[string]bool
	events    []map[string]any
	ephemeral []map[string]any
	// failures counts answers other than 2xx; prefixed and legacy count
	// requests per path; retries counts acknowledged IDs sent again.
	failures, prefixed, legacy, retries int
	badAuth                             []string
}

func newFakeAS(t testing.TB, legacyOnly bool) *fakeAS {
	as := &fakeAS{t: t, legacyOnly: legacyOnly, changed: make(chan struct{}), done: map[string]bool{}}
	as.srv = httptest.NewServer(http.HandlerFunc(as.serve))
	t.Cleanup(as.srv.Close)
	return as
}

func (as *fakeAS) serve(w http.ResponseWriter, r *http.Request) {
	as.mu.Lock()
	defer as.mu.Unlock()
	defer func() {
		close(as.changed)
		as.changed = make(chan struct{})
	}()
	var txnID string
	switch {
	case strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"):
		as.prefixed++
		if as.legacyOnly {
			as.failures++
			http.NotFound(w, r)
			return
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+hsToken {
			as.badAuth = append(as.badAuth, "prefixed path: Authorization "+got)
			as.failures++
			w.WriteHeader(http.StatusForbidden)
			return
		}
		txnID = strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	case strings.HasPrefix(r.URL.Path, "/transactions/"):
		as.legacy++
		if !as.legacyOnly {
			as.failures++
			http.NotFound(w, r)
			return
		}
		if got := r.URL.Query().Get("access_token"); got != hsToken {
			as.badAuth = append(as.badAuth, "legacy path: access_token "+got)
			as.failures++
			w.WriteHeader(http.StatusForbidden)
			return
		}
		txnID = strings.TrimPrefix(r.URL.Path, "/transactions/")
	default:
		as.failures++
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPut {
		as.failures++
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if as.down.Load() {
		as.failures++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var body struct {
		Events    []map[string]any `json:"events"`
		Ephemeral []map[string]any `json:"ephemeral"`
		MSC2409   []map[string]any `json:"de.sorunome.msc2409.ephemeral"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Events == nil {
		as.t.Errorf("transaction %s: bad body (err %v, events %v)", txnID, err, body.Events)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if len(body.Ephemeral) != len(body.MSC2409) {
		as.t.Errorf("transaction %s: %d ephemeral but %d under the MSC2409 name", txnID, len(body.Ephemeral), len(body.MSC2409))
	}
	if len(body.Events) == 0 && len(body.Ephemeral) == 0 {
		as.t.Errorf("transaction %s is empty", txnID)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
	if as.done[txnID] {
		as.retries++
		return
	}
	as.done[txnID] = true
	as.events = append(as.events, body.Events...)
	as.ephemeral = append(as.ephemeral, body.Ephemeral...)
}

// waitFor waits until cond holds of the service's state.
func (as *fakeAS) waitFor(what string, cond func(as *fakeAS) bool) {
	as.t.Helper()
	deadline := time.After(safetyNet)
	for {
		as.mu.Lock()
		ok, ch := cond(as), as.changed
		as.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			as.t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// eventIDs returns the IDs of the events received, in order.
func (as *fakeAS) eventIDs() []string {
	as.mu.Lock()
	defer as.mu.Unlock()
	ids := make([]string, len(as.events))
	for i, e := range as.events {
		ids[i], _ = e["event_id"].(string)
	}
	return ids
}

func (as *fakeAS) has(eventID string) bool {
	for _, e := range as.events {
		if e["event_id"] == eventID {
			return true
		}
	}
	return false
}

// startHS starts a homeserver with one application service pointing at as.
func startHS(t *testing.T, as *fakeAS, extraReg string) *testserver.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	reg := fmt.Sprintf(`id: bridge
url: %s
as_token: %s
hs_token: %s
sender_localpart: _bridge_bot
namespaces:
  users: [{exclusive: false, regex: "@bridge_.*"}]
  aliases: [{exclusive: false, regex: "#bridge_.*"}]
  rooms: []
%s`, as.srv.URL, asToken, hsToken, extraReg)
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := testserver.Start(t, "app_service_config_files: ["+path+"]\n")
	fastBackoff(ts)
	return ts
}

func fastBackoff(ts *testserver.Server) {
	ts.Srv.AppServiceQueues().SetBackoff(2*time.Millisecond, 20*time.Millisecond)
}

// eventLog records every event the server persists, in stream order.
type eventLog struct {
	mu  sync.Mutex
	evs []rooms.Persisted
}

func watch(ts *testserver.Server) *eventLog {
	l := &eventLog{}
	ts.Srv.Rooms().OnPersist(func(p rooms.Persisted) {
		l.mu.Lock()
		l.evs = append(l.evs, p)
		l.mu.Unlock()
	})
	return l
}

// last returns the last event persisted in the room.
func (l *eventLog) last(t *testing.T, roomID string) rooms.Persisted {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.evs) - 1; i >= 0; i-- {
		if l.evs[i].RoomID == roomID {
			return l.evs[i]
		}
	}
	t.Fatalf("no event in %s", roomID)
	return rooms.Persisted{}
}

func (l *eventLog) all() []rooms.Persisted {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

var txnCounter atomic.Int64

func roomPath(roomID, rest string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + rest
}

// checkOrder checks that the events received are distinct and in stream
// order, and returns the set of their IDs.
func checkOrder(t *testing.T, received []string, log []rooms.Persisted) map[string]bool {
	t.Helper()
	pos := map[string]int64{}
	for _, p := range log {
		pos[p.EventID] = p.Pos
	}
	seen := map[string]bool{}
	last := int64(-1)
	for _, id := range received {
		if seen[id] {
			t.Errorf("event %s received twice (in different transactions)", id)
		}
		seen[id] = true
		p, ok := pos[id]
		if !ok {
			t.Errorf("received %s, which the server did not write", id)
			continue
		}
		if p <= last {
			t.Errorf("event %s at position %d received after position %d", id, p, last)
		}
		last = p
	}
	return seen
}

func TestDeliversInterestingEventsInOrder(t *testing.T) {
	as := newFakeAS(t, false)
	ts := startHS(t, as, "")
	log := watch(ts)
	alice := ts.Register("alice", "password-alice")
	bob := ts.Register("bob", "password-bob")
	carol := ts.Register("bridge_carol", "password-carol")

	// Q: nobody of the namespace, no alias: nothing is sent.
	quiet := ts.CreatePublicRoom(alice)
	ts.Join(bob, quiet)
	ts.SendText(alice, quiet, "q1")
	ts.SendText(bob, quiet, "q2")

	// M: interesting while carol (of the namespace) is joined.
	member := ts.CreatePublicRoom(alice)
	ts.SendText(alice, member, "before carol")
	ts.Join(carol, member)
	joinPos := log.last(t, member).Pos
	ts.SendText(alice, member, "m1")
	ts.Join(bob, member)
	ts.SendText(bob, member, "m2")
	ts.MustDo(http.StatusOK, "POST", roomPath(member, "/leave"), carol.Token, map[string]any{})
	leavePos := log.last(t, member).Pos
	ts.SendText(alice, member, "after carol left")
	ts.SendText(bob, member, "after carol left 2")

	// C: created by carol: everything in it is sent.
	carols := ts.CreatePublicRoom(carol)
	ts.Join(alice, carols)
	ts.SendText(alice, carols, "c1")

	// A: interesting from when its canonical alias is in the namespace.
	aliased := ts.CreatePublicRoom(alice)
	ts.SendText(alice, aliased, "before alias")
	alias := "#bridge_a:" + testserver.ServerName
	ts.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), alice.Token, map[string]any{"room_id": aliased})
	ts.MustDo(http.StatusOK, "PUT", roomPath(aliased, "/state/m.room.canonical_alias"), alice.Token, map[string]any{"alias": alias})
	canonPos := log.last(t, aliased).Pos
	ts.SendText(alice, aliased, "a1")
	lastID := ts.SendText(alice, aliased, "a2")

	var required, forbidden []string
	for _, p := range log.all() {
		switch {
		case p.RoomID == quiet:
			forbidden = append(forbidden, p.EventID)
		case p.RoomID == member && p.Pos >= joinPos && p.Pos <= leavePos:
			required = append(required, p.EventID)
		case p.RoomID == member && p.Pos > leavePos:
			forbidden = append(forbidden, p.EventID)
		case p.RoomID == carols:
			required = append(required, p.EventID)
		case p.RoomID == aliased && p.Pos >= canonPos:
			required = append(required, p.EventID)
		}
	}
	as.waitFor("the last event", func(as *fakeAS) bool { return as.has(lastID) })
	// Flush: an event after every other one, in a room of the namespace.
	flush := ts.SendText(carol, carols, "flush")
	as.waitFor("the flush event", func(as *fakeAS) bool { return as.has(flush) })

	got := checkOrder(t, as.eventIDs(), log.all())
	for _, id := range required {
		if !got[id] {
			t.Errorf("interesting event %s was not sent", id)
		}
	}
	for _, id := range forbidden {
		if got[id] {
			t.Errorf("uninteresting event %s was sent", id)
		}
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if len(as.badAuth) > 0 {
		t.Errorf("bad authentication: %v", as.badAuth)
	}
	if as.prefixed == 0 || as.legacy != 0 {
		t.Errorf("requests: %d prefixed, %d legacy; want prefixed only", as.prefixed, as.legacy)
	}
	for _, e := range as.events {
		if _, ok := e["user_id"]; ok {
			t.Errorf("event on the prefixed path has user_id: %v", e)
		}
		if e["sender"] == nil || e["room_id"] == nil || e["origin_server_ts"] == nil || e["type"] == nil {
			t.Errorf("event not in the client format: %v", e)
		}
	}
}

// burst sends n messages as u and returns their IDs in order.
func burst(ts *testserver.Server, u testserver.User, roomID string, n int, label string) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = ts.SendText(u, roomID, fmt.Sprintf("%s %d", label, i))
	}
	return ids
}

// messagesIn returns the IDs of the messages received in a room, in order.
func (as *fakeAS) messagesIn(roomID string) []string {
	as.mu.Lock()
	defer as.mu.Unlock()
	var ids []string
	for _, e := range as.events {
		if e["room_id"] == roomID && e["type"] == "m.room.message" {
			ids = append(ids, e["event_id"].(string))
		}
	}
	return ids
}

func checkAllMessages(t *testing.T, as *fakeAS, roomID string, want []string) {
	t.Helper()
	as.waitFor("every message", func(as *fakeAS) bool { return as.has(want[len(want)-1]) })
	got := as.messagesIn(roomID)
	if !slices.Equal(got, want) {
		t.Fatalf("received %d messages, want the %d sent in order (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	seen := map[string]bool{}
	for _, id := range as.eventIDs() {
		if seen[id] {
			t.Fatalf("event %s received twice", id)
		}
		seen[id] = true
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestBurstDuringOutage(t *testing.T) {
	as := newFakeAS(t, false)
	ts := startHS(t, as, "")
	carol := ts.Register("bridge_carol", "password-carol")
	roomID := ts.CreatePublicRoom(carol)
	as.down.Store(true)
	sent := burst(ts, carol, roomID, 1000, "burst")
	as.waitFor("a refused attempt", func(as *fakeAS) bool { return as.failures > 0 })
	as.down.Store(false)
	checkAllMessages(t, as, roomID, sent)
}

func TestOutageAcrossRestart(t *testing.T) {
	as := newFakeAS(t, false)
	ts := startHS(t, as, "")
	carol := ts.Register("bridge_carol", "password-carol")
	roomID := ts.CreatePublicRoom(carol)
	as.down.Store(true)
	sent := burst(ts, carol, roomID, 500, "before restart")
	as.waitFor("a refused attempt", func(as *fakeAS) bool { return as.failures > 0 })
	ts.Restart()
	fastBackoff(ts)
	as.mu.Lock()
	before := as.failures
	as.mu.Unlock()
	sent = append(sent, burst(ts, carol, roomID, 500, "after restart")...)
	as.waitFor("a refused attempt after the restart", func(as *fakeAS) bool { return as.failures > before })
	as.down.Store(false)
	checkAllMessages(t, as, roomID, sent)
}

func TestLegacyFallback(t *testing.T) {
	as := newFakeAS(t, true)
	ts := startHS(t, as, "")
	carol := ts.Register("bridge_carol", "password-carol")
	roomID := ts.CreatePublicRoom(carol)
	first := ts.SendText(carol, roomID, "one")
	as.waitFor("the first message", func(as *fakeAS) bool { return as.has(first) })
	as.mu.Lock()
	prefixedBefore := as.prefixed
	as.mu.Unlock()
	var sent []string
	for i := range 3 {
		id := ts.SendText(carol, roomID, fmt.Sprintf("more %d", i))
		as.waitFor("a message", func(as *fakeAS) bool { return as.has(id) })
		sent = append(sent, id)
	}
	// The choice survives a restart.
	ts.Restart()
	fastBackoff(ts)
	last := ts.SendText(carol, roomID, "after restart")
	as.waitFor("the message after the restart", func(as *fakeAS) bool { return as.has(last) })

	as.mu.Lock()
	defer as.mu.Unlock()
	if len(as.badAuth) > 0 {
		t.Errorf("bad authentication: %v", as.badAuth)
	}
	if as.prefixed != prefixedBefore {
		t.Errorf("prefixed path tried %d more times after the fallback was found", as.prefixed-prefixedBefore)
	}
	if len(as.events) == 0 {
		t.Fatal("nothing received")
	}
	for _, e := range as.events {
		if e["user_id"] == nil || e["user_id"] != e["sender"] {
			t.Errorf("legacy event without user_id = sender: %v", e)
		}
	}
}

func TestEphemeral(t *testing.T) {
	as := newFakeAS(t, false)
	ts := startHS(t, as, "receive_ephemeral: true\n")
	carol := ts.Register("bridge_carol", "password-carol")
	alice := ts.Register("alice", "password-alice")
	roomID := ts.CreatePublicRoom(carol)
	ts.Join(alice, roomID)
	msg := ts.SendText(alice, roomID, "hello")
	ts.MustDo(http.StatusOK, "PUT", roomPath(roomID, "/typing/"+url.PathEscape(alice.ID)), alice.Token, map[string]any{"typing": true, "timeout": 30000})
	ts.MustDo(http.StatusOK, "POST", roomPath(roomID, "/receipt/m.read/"+url.PathEscape(msg)), alice.Token, map[string]any{})
	// An unrelated room's typing is not sent.
	other := ts.CreatePublicRoom(alice)
	ts.MustDo(http.StatusOK, "PUT", roomPath(other, "/typing/"+url.PathEscape(alice.ID)), alice.Token, map[string]any{"typing": true, "timeout": 30000})

	find := func(as *fakeAS, typ string) map[string]any {
		for _, e := range as.ephemeral {
			if e["type"] == typ && e["room_id"] == roomID {
				return e
			}
		}
		return nil
	}
	as.waitFor("typing and receipt", func(as *fakeAS) bool { return find(as, "m.typing") != nil && find(as, "m.receipt") != nil })
	as.mu.Lock()
	defer as.mu.Unlock()
	typing := find(as, "m.typing")["content"].(map[string]any)["user_ids"].([]any)
	if !slices.Contains(typing, any(alice.ID)) {
		t.Errorf("m.typing %v lacks %s", typing, alice.ID)
	}
	receipt, _ := json.Marshal(find(as, "m.receipt")["content"])
	if !strings.Contains(string(receipt), msg) || !strings.Contains(string(receipt), alice.ID) {
		t.Errorf("m.receipt content %s lacks %s by %s", receipt, msg, alice.ID)
	}
	for _, e := range as.ephemeral {
		if e["room_id"] == other {
			t.Errorf("ephemeral event of an uninteresting room: %v", e)
		}
	}
}

// Receipts and presence that an unreachable service has not received when
// the homeserver restarts still reach it: its cursors in those streams are
// durable, like its events cursor.
func TestEphemeralAcrossRestart(t *testing.T) {
	as := newFakeAS(t, false)
	ts := startHS(t, as, "receive_ephemeral: true\n")
	carol := ts.Register("bridge_carol", "password-carol")
	alice := ts.Register("alice", "password-alice")
	roomID := ts.CreatePublicRoom(carol)
	ts.Join(alice, roomID)
	msg := ts.SendText(alice, roomID, "hello")
	as.waitFor("the message", func(as *fakeAS) bool { return as.has(msg) })

	// The service goes down with a transaction pending: what happens next
	// waits behind it, in no transaction yet, when the homeserver restarts.
	as.down.Store(true)
	pending := ts.SendText(alice, roomID, "pending")
	as.waitFor("a refused attempt", func(as *fakeAS) bool { return as.failures > 0 })
	ts.MustDo(http.StatusOK, "POST", roomPath(roomID, "/receipt/m.read/"+url.PathEscape(msg)), alice.Token, map[string]any{})
	ts.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.ID)+"/status", alice.Token,
		map[string]any{"presence": "unavailable", "status_msg": "at lunch"})
	ts.Restart()
	fastBackoff(ts)
	as.down.Store(false)

	as.waitFor("the receipt and the presence", func(as *fakeAS) bool {
		var receipt, presence bool
		for _, e := range as.ephemeral {
			c, _ := json.Marshal(e["content"])
			switch e["type"] {
			case "m.receipt":
				receipt = receipt || (e["room_id"] == roomID && strings.Contains(string(c), msg))
			case "m.presence":
				presence = presence || (e["sender"] == alice.ID && strings.Contains(string(c), "at lunch"))
			}
		}
		return receipt && presence && as.has(pending)
	})
}
