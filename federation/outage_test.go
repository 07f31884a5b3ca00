package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// readerFailures reads a reader's consecutive failures from s's metrics.
func readerFailures(t *testing.T, s *testserver.Server, reader string) int {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", "/_synapse/metrics", "", nil)
	re := regexp.MustCompile(`homeserver_reader_consecutive_failures\{reader="` + regexp.QuoteMeta(reader) + `"\} (\d+)`)
	m := re.FindSubmatch(r.Body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// While hs2 is down, hs1 keeps its events and retries with backoff (not in
// a loop); when hs2 is back, every event arrives, in order.
func TestOutageCatchUp(t *testing.T) {
	const n = 500
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})

	b.Stop()
	down := time.Now()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = a.SendText(alice, room, fmt.Sprintf("message %d", i))
	}
	// The queue for hs2 fails and backs off: a few attempts, not a loop.
	deadline := time.Now().Add(10 * time.Second)
	for readerFailures(t, a, "federation:hs2.test") < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	failures := readerFailures(t, a, "federation:hs2.test")
	elapsed := time.Since(down)
	if failures < 3 {
		t.Fatalf("%d failures after %s: hs1 is not retrying", failures, elapsed)
	}
	// With a first wait of 200ms doubling to 2s, at most one attempt per
	// 200ms could have happened.
	if limit := int(elapsed/(200*time.Millisecond)) + 2; failures > limit {
		t.Errorf("%d failures in %s: more than backoff allows (%d)", failures, elapsed, limit)
	}

	b.Restart()
	start := time.Now()
	deadline = time.Now().Add(60 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = got[:0]
		r := b.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=1000"), bob.Token, nil)
		chunk, _ := r.JSON["chunk"].([]any)
		for i := len(chunk) - 1; i >= 0; i-- {
			e := chunk[i].(map[string]any)
			if e["type"] == "m.room.message" {
				got = append(got, e["event_id"].(string))
			}
		}
		if len(got) >= n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(got) != n {
		t.Fatalf("hs2 has %d of %d events after the outage", len(got), n)
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("event %d: hs2 has %s, hs1 sent %s (out of order)", i, got[i], ids[i])
		}
	}
	t.Logf("caught up %d events in %s after the restart (%d failed attempts during a %s outage)", n, time.Since(start).Round(time.Millisecond), failures, elapsed.Round(time.Millisecond))
}
