package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"homeserver/internal/racedetect"
	"homeserver/internal/testserver"
)

// readerGauge reads one homeserver_reader_* gauge of a reader from s's
// metrics (-1 when the reader has none).
func readerGauge(t testing.TB, s *testserver.Server, gauge, reader string) int {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", "/_synapse/metrics", "", nil)
	re := regexp.MustCompile(`homeserver_reader_` + gauge + `\{reader="` + regexp.QuoteMeta(reader) + `"\} (\d+)`)
	m := re.FindSubmatch(r.Body)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// missedHistory is two servers sharing a room of which hs2 missed n
// events: while it was down, hs1 wrote them (and changed the topic half
// way), and then lost its queue for hs2 but the newest event, as a Synapse
// peer in catch-up mode sends only that.
type missedHistory struct {
	f          *testserver.Federation
	a, b       *testserver.Server
	alice, bob testserver.User
	room       string
	// ids are the messages in order: one hs2 saw live, then the missed.
	ids []string
}

func newMissedHistory(t testing.TB, n int) *missedHistory {
	f := testserver.NewFederation(t, relaxedFederationLimits, "hs1.test", "hs2.test")
	h := &missedHistory{f: f, a: f.Servers["hs1.test"], b: f.Servers["hs2.test"]}
	h.alice = h.a.Register("alice", "pw")
	h.bob = h.b.Register("bob", "pw")
	h.room = h.a.CreatePublicRoom(h.alice)
	h.a.SendText(h.alice, h.room, "before bob")
	h.b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(h.room)+"?server_name=hs1.test", h.bob.Token, map[string]any{})
	h.ids = append(h.ids, h.a.SendText(h.alice, h.room, "seen live"))
	waitEvent(t, h.b, h.bob, h.room, h.ids[0])

	h.b.Stop()
	for i := range n {
		if i == n/2 {
			h.a.MustDo(http.StatusOK, "PUT", testserver.RoomPath(h.room, "/state/m.room.topic/"), h.alice.Token, map[string]any{"topic": "changed while hs2 was away"})
		}
		h.ids = append(h.ids, h.a.SendText(h.alice, h.room, fmt.Sprintf("missed %d", i)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for readerGauge(t, h.a, "lag", "federation:fanout") != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	h.a.Stop()
	h.a.ExecSQL(`DELETE FROM federation_outbox WHERE destination = $1 AND (event_id IS NULL OR event_id <> $2)`, "hs2.test", h.ids[n])
	h.a.Restart()
	return h
}

// waitEvent waits until u on s can read the event.
func waitEvent(t testing.TB, s *testserver.Server, u testserver.User, room, id string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if s.Do("GET", testserver.RoomPath(room, "/event/"+url.PathEscape(id)), u.Token, nil).Status == http.StatusOK {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("event %s never reached %s", id, s.Config.ServerName)
}

// paginate pages bob's /messages on hs2 backwards to the end, limit events
// a page, and returns the message event IDs oldest first and the types of
// all events.
func (h *missedHistory) paginate(t testing.TB, limit int) (msgs, types []string) {
	t.Helper()
	from := ""
	for range 1000 {
		q := "/messages?dir=b&limit=" + strconv.Itoa(limit)
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		r := h.b.MustDo(http.StatusOK, "GET", testserver.RoomPath(h.room, q), h.bob.Token, nil)
		chunk, _ := r.JSON["chunk"].([]any)
		for _, c := range chunk {
			e := c.(map[string]any)
			types = append(types, e["type"].(string))
			if e["type"] == "m.room.message" {
				msgs = append(msgs, e["event_id"].(string))
			}
		}
		if from = r.String("end"); from == "" {
			slices.Reverse(msgs)
			slices.Reverse(types)
			return msgs, types
		}
	}
	t.Fatal("pagination does not end")
	return nil, nil
}

// A server that missed 2,000 events catches up from the newest: the
// nearest through get_missing_events, the state before the oldest of those
// through state_ids, and the rest through backfill when its user pages
// back, down to the room's creation, every event in order. Under the race
// detector 600 still take every path (500 fetched, the rest backfilled).
func TestCatchUpAfterMissedEvents(t *testing.T) {
	n := 2000
	if racedetect.Enabled {
		n = 600
	}
	h := newMissedHistory(t, n)
	start := time.Now()
	h.b.Restart()
	waitEvent(t, h.b, h.bob, h.room, h.ids[n])
	caughtUp := time.Since(start)
	waitSame(t, h.a, h.alice, h.b, h.bob, h.room)
	topic := h.b.MustDo(http.StatusOK, "GET", testserver.RoomPath(h.room, "/state/m.room.topic/"), h.bob.Token, nil).String("topic")
	if topic != "changed while hs2 was away" {
		t.Errorf("hs2's topic is %q", topic)
	}

	start = time.Now()
	msgs, types := h.paginate(t, 100)
	paged := time.Since(start)
	if len(types) == 0 || types[0] != "m.room.create" {
		t.Errorf("pagination does not reach the room's creation: first events %v", types[:min(len(types), 5)])
	}
	if len(msgs) != n+2 {
		t.Fatalf("hs2 pages %d messages, want %d", len(msgs), n+2)
	}
	if !slices.Equal(msgs[1:], h.ids) {
		for i := range h.ids {
			if msgs[i+1] != h.ids[i] {
				t.Fatalf("message %d: hs2 pages %s, hs1 sent %s (out of order)", i, msgs[i+1], h.ids[i])
			}
		}
	}
	t.Logf("caught up the newest of %d missed events in %s; paged back to creation in %s", n, caughtUp.Round(time.Millisecond), paged.Round(time.Millisecond))
}

// Another server gets the events its users could not have seen, by the
// room's history visibility, redacted (/event, /backfill,
// get_missing_events); those they could see, whole. A user of that server
// does not read them either.
func TestServedHistoryFollowsVisibility(t *testing.T) {
	f := testserver.NewFederation(t, relaxedFederationLimits, "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	a.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.history_visibility/"), alice.Token, map[string]any{"history_visibility": "joined"})
	secret := a.SendText(alice, room, "before hs2 came")
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})
	after := a.SendText(alice, room, "after hs2 came")
	waitEvent(t, b, bob, room, after)

	key := b.SigningKey()
	body := func(r *testserver.Response) string {
		t.Helper()
		pdus, _ := r.JSON["pdus"].([]any)
		if len(pdus) == 0 {
			t.Fatalf("no PDUs: %s", r.Body)
		}
		content, _ := pdus[0].(map[string]any)["content"].(map[string]any)
		s, _ := content["body"].(string)
		return s
	}
	r := f.FedDo(a, key, "", "GET", "/_matrix/federation/v1/event/"+url.PathEscape(secret), nil)
	if r.Status != http.StatusOK || body(r) != "" {
		t.Errorf("/event of a message before hs2 joined: %d %s", r.Status, r.Body)
	}
	r = f.FedDo(a, key, "", "GET", "/_matrix/federation/v1/event/"+url.PathEscape(after), nil)
	if r.Status != http.StatusOK || body(r) != "after hs2 came" {
		t.Errorf("/event of a message after hs2 joined: %d %s", r.Status, r.Body)
	}
	r = f.FedDo(a, key, "", "GET", "/_matrix/federation/v1/backfill/"+url.PathEscape(room)+"?v="+url.QueryEscape(secret)+"&limit=1", nil)
	if r.Status != http.StatusOK || body(r) != "" {
		t.Errorf("/backfill of a message before hs2 joined: %d %s", r.Status, r.Body)
	}

	msgs, _ := (&missedHistory{b: b, bob: bob, room: room}).paginate(t, 50)
	if slices.Contains(msgs, secret) || !slices.Contains(msgs, after) {
		t.Errorf("bob pages %v; the message before he joined (%s) must not be there, the one after (%s) must", msgs, secret, after)
	}
}

// BenchmarkFederationMissedHistory: hs2 missed 2,000 events (see
// newMissedHistory); the time from its restart until it holds the newest
// (get_missing_events for 500, the state before them, and its
// resolution), and then until bob has paged back to the room's creation,
// 100 events a page, backfilling the other 1,500 on the way.
func BenchmarkFederationMissedHistory(b *testing.B) {
	for range b.N {
		h := newMissedHistory(b, 2000)
		start := time.Now()
		h.b.Restart()
		waitEvent(b, h.b, h.bob, h.room, h.ids[len(h.ids)-1])
		b.ReportMetric(time.Since(start).Seconds(), "s-to-newest")
		start = time.Now()
		if msgs, _ := h.paginate(b, 100); len(msgs) != len(h.ids)+1 {
			b.Fatalf("paged %d messages", len(msgs))
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-to-page-back")
	}
}

// BenchmarkFederationBackfill: bob on hs2 joins a room of 1,000 messages
// and pages back to its creation, 100 events a page, each page
// backfilled from hs1 within the request.
func BenchmarkFederationBackfill(b *testing.B) {
	for range b.N {
		f := testserver.NewFederation(b, relaxedFederationLimits, "hs1.test", "hs2.test")
		h := &missedHistory{f: f, a: f.Servers["hs1.test"], b: f.Servers["hs2.test"]}
		h.alice, h.bob = h.a.Register("alice", "pw"), h.b.Register("bob", "pw")
		h.room = h.a.CreatePublicRoom(h.alice)
		for i := range 1000 {
			h.a.SendText(h.alice, h.room, fmt.Sprintf("history %d", i))
		}
		h.b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(h.room)+"?server_name=hs1.test", h.bob.Token, map[string]any{})
		start := time.Now()
		msgs, types := h.paginate(b, 100)
		b.ReportMetric(time.Since(start).Seconds(), "s-to-page-back")
		if len(msgs) != 1000 || types[0] != "m.room.create" {
			b.Fatalf("paged %d messages, first %v", len(msgs), types[:1])
		}
	}
}
