package appservice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/appservice"
	"homeserver/internal/faultpeer"
	"homeserver/internal/testserver"
)

// legacyToken is the hs_token of the 2015-era services below, which take
// it in the query string; it must never reach a log line.
const legacyToken = "hs-legacy-secret-4f1c9a"

// writeReg writes a registration for a service at url whose user and alias
// namespaces are prefix_.
func writeReg(t *testing.T, id, url, hsToken, prefix string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), id+".yaml")
	reg := fmt.Sprintf(`id: %s
url: %s
as_token: as-%s
hs_token: %s
sender_localpart: %s_bot
namespaces:
  users: [{exclusive: false, regex: "@%s_.*"}]
  aliases: [{exclusive: false, regex: "#%s_.*"}]
  rooms: []
`, id, url, id, hsToken, id, prefix, prefix)
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// legacyService serves only the unprefixed paths (a framework's 404 page
// on the others) and fails every request to them as its fault says.
type legacyService struct {
	peer *faultpeer.Peer

	mu         sync.Mutex
	fault      faultpeer.Fault
	legacy     int // requests on the unprefixed paths
	redirected int // requests that followed a redirect
}

func newLegacyService(t *testing.T) *legacyService {
	s := &legacyService{}
	s.peer = faultpeer.New(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		f := s.fault
		switch {
		case r.URL.Path == "/elsewhere":
			s.redirected++
		case !strings.HasPrefix(r.URL.Path, "/_matrix/"):
			s.legacy++
		}
		s.mu.Unlock()
		switch {
		case r.URL.Path == "/elsewhere":
			_, _ = io.WriteString(w, "{}")
		case strings.HasPrefix(r.URL.Path, "/_matrix/"):
			http.NotFound(w, r)
		default:
			if !s.peer.Inject(w, r, f) {
				_, _ = io.WriteString(w, "{}")
			}
		}
	}), nil)
	return s
}

func (s *legacyService) set(f faultpeer.Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

func (s *legacyService) counts() (legacy, redirected int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.legacy, s.redirected
}

// A query to a service that answers only on the legacy paths, with the
// hs_token in the query string, fails in transit (or with an error
// status): the query says no in time, and neither the logs nor the error
// hold the token.
func TestQueryFaultsKeepTokenOutOfLogs(t *testing.T) {
	as := newLegacyService(t)
	set, err := appservice.Load([]string{writeReg(t, "old", as.peer.URL, legacyToken, "old")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs faultpeer.Logs
	q := appservice.NewQuerier(set, 300*time.Millisecond, logs.Logger())
	for _, f := range []faultpeer.Fault{faultpeer.ResetConn, faultpeer.GarbageConn, faultpeer.HangConn, faultpeer.Status500, faultpeer.Redirect} {
		as.set(f)
		before, _ := as.counts()
		if q.QueryUser(context.Background(), "@old_x:hs") || q.QueryAlias(context.Background(), "#old_x:hs") {
			t.Errorf("%s: a query succeeded", f)
		}
		if after, _ := as.counts(); after-before != 2 {
			t.Errorf("%s: %d requests on the legacy paths, want 2", f, after-before)
		}
		if _, err := q.Ping(context.Background(), set.Regs[0], "txn"); err == nil || strings.Contains(err.Error(), legacyToken) {
			t.Errorf("%s: ping error %v", f, err)
		}
	}
	if _, redirected := as.counts(); redirected != 0 {
		t.Errorf("%d redirects followed", redirected)
	}
	out := logs.String()
	if !strings.Contains(out, "application service query failed") {
		t.Fatalf("the failures were not logged:\n%s", out)
	}
	if strings.Contains(out, legacyToken) {
		t.Fatalf("the hs_token reached the logs:\n%s", out)
	}
}

// The same through the server, at every level of its logs: a profile or
// alias lookup that anyone can make, and the transactions of the
// service's queue, fail in transit on the legacy paths.
func TestLegacyServiceFaultsKeepTokenOutOfServerLogs(t *testing.T) {
	as := newLegacyService(t)
	var logs faultpeer.Logs
	s := testserver.StartLogged(t, "app_service_config_files: ["+writeReg(t, "old", as.peer.URL, legacyToken, "old")+"]\n", logs.Handler())
	s.Srv.AppServiceQueues().SetBackoff(20*time.Millisecond, 100*time.Millisecond)
	u := s.Register("old_alice", "pw")
	room := s.CreatePublicRoom(u)
	for _, f := range []faultpeer.Fault{faultpeer.ResetConn, faultpeer.GarbageConn, faultpeer.Status500, faultpeer.Redirect} {
		as.set(f)
		before, _ := as.counts()
		if r := s.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape("@old_nobody:test.local"), "", nil); r.Status != http.StatusNotFound {
			t.Errorf("%s: profile lookup answered %d", f, r.Status)
		}
		if r := s.Do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#old_nowhere:test.local"), "", nil); r.Status != http.StatusNotFound {
			t.Errorf("%s: alias lookup answered %d", f, r.Status)
		}
		s.SendText(u, room, "while the service fails: "+f.String())
		waitUntil(t, f.String()+" transaction attempts", func() bool {
			after, _ := as.counts()
			return after-before >= 4
		})
	}
	if _, redirected := as.counts(); redirected != 0 {
		t.Errorf("%d redirects followed", redirected)
	}
	out := logs.String()
	for _, want := range []string{"application service query failed", "reader failing"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the logs:\n%s", want, out)
		}
	}
	if strings.Contains(out, legacyToken) {
		t.Fatalf("the hs_token reached the logs:\n%s", out)
	}
}

// waitUntil polls cond until it holds; safetyNet only turns a broken
// queue into a failure.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(safetyNet)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allowedAttempts is the most attempts a queue backing off from base,
// doubling up to maxWait, can make in window, counting the first one at
// its start.
func allowedAttempts(window, base, maxWait time.Duration) int {
	n, wait, spent := 1, base, time.Duration(0)
	for spent+wait <= window {
		spent += wait
		n++
		wait = min(wait*2, maxWait)
	}
	return n
}

// flakyService is a current service whose transaction endpoint fails as
// its fault says, and records what it acknowledged like a real one: an
// ID it already has is answered 200 and ignored.
type flakyService struct {
	peer *faultpeer.Peer

	mu         sync.Mutex
	fault      faultpeer.Fault
	attempts   []time.Time
	done       map[string]bool
	events     []string
	retried    int // acknowledged IDs sent again
	redirected int
}

func newFlakyService(t *testing.T) *flakyService {
	s := &flakyService{done: map[string]bool{}}
	s.peer = faultpeer.New(t, http.HandlerFunc(s.serve), nil)
	return s
}

func (s *flakyService) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/elsewhere" {
		s.mu.Lock()
		s.redirected++
		s.mu.Unlock()
		_, _ = io.WriteString(w, "{}")
		return
	}
	txnID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	if !ok || r.Method != http.MethodPut {
		http.NotFound(w, r)
		return
	}
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.attempts = append(s.attempts, time.Now())
	f := s.fault
	s.mu.Unlock()
	if s.peer.Inject(w, r, f) && !f.Accepted() {
		return
	}
	if f == faultpeer.OK {
		_, _ = io.WriteString(w, "{}")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[txnID] {
		s.retried++
		return
	}
	s.done[txnID] = true
	for _, e := range body.Events {
		s.events = append(s.events, e.EventID)
	}
}

func (s *flakyService) set(f faultpeer.Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

func (s *flakyService) attemptsSince(i int) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.attempts[i:]...)
}

func (s *flakyService) acknowledged() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

// Whatever way the service fails — an error status, a redirect, a reset
// or garbage instead of HTTP, a hang — its queue backs off (no more
// attempts than the backoff allows), keeps the server responsive, and
// once the service answers again delivers every event once, in order.
func TestTransactionQueueUnderFaults(t *testing.T) {
	const base, maxWait = 40 * time.Millisecond, 320 * time.Millisecond
	as := newFlakyService(t)
	s := testserver.Start(t, "app_service_config_files: ["+writeReg(t, "flaky", as.peer.URL, "hs-flaky", "flaky")+"]\n")
	s.Srv.AppServiceQueues().SetBackoff(base, maxWait)
	log := watch(s)
	u := s.Register("flaky_alice", "pw")
	room := s.CreatePublicRoom(u)
	var sent []string
	for _, f := range faultpeer.Faults {
		as.set(f)
		from := len(as.attemptsSince(0))
		sent = append(sent, s.SendText(u, room, "during "+f.String()))
		if f.Accepted() {
			continue
		}
		if f == faultpeer.HangConn {
			waitUntil(t, "a hanging transaction", func() bool { return as.peer.Hung() > 0 })
			// The server answers while its request hangs.
			s.MustDo(http.StatusOK, "GET", "/_matrix/client/versions", "", nil)
			sent = append(sent, s.SendText(u, room, "while the service hangs"))
			as.set(faultpeer.OK)
			as.peer.Release()
			continue
		}
		waitUntil(t, f.String()+" attempts", func() bool { return len(as.attemptsSince(from)) >= 4 })
		at := as.attemptsSince(from)
		window := at[len(at)-1].Sub(at[0])
		if allowed := allowedAttempts(window, base, maxWait); len(at) > allowed {
			t.Errorf("%s: %d attempts in %s, more than the backoff allows (%d)", f, len(at), window, allowed)
		}
	}
	as.set(faultpeer.OK)
	sent = append(sent, s.SendText(u, room, "after the faults"))
	waitUntil(t, "every message", func() bool {
		got := map[string]bool{}
		for _, id := range as.acknowledged() {
			got[id] = true
		}
		for _, id := range sent {
			if !got[id] {
				return false
			}
		}
		return true
	})
	checkOrder(t, as.acknowledged(), log.all())
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.redirected != 0 {
		t.Errorf("%d redirects followed", as.redirected)
	}
	t.Logf("%d attempts, %d acknowledged transactions sent again", len(as.attempts), as.retried)
}
