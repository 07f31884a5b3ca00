package federation_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/faultpeer"
	"homeserver/internal/fedtest"
	"homeserver/internal/testserver"
)

// The retry bounds of federating test servers (testserver's
// destination_min_retry_interval and destination_max_retry_interval).
const fedMinRetry, fedMaxRetry = 200 * time.Millisecond, 2 * time.Second

// faultyServer is a homeserver ("bad.test") that takes transactions and
// fails as its fault says; it records the to-device messages it took, by
// their body, and refuses transactions of more than maxEDUs EDUs with 413
// when maxEDUs is set.
type faultyServer struct {
	peer *faultpeer.Peer

	mu       sync.Mutex
	fault    faultpeer.Fault
	maxEDUs  int
	attempts []time.Time
	sizes    []int // EDUs per accepted transaction
	seen     map[string]bool
	messages []string
}

func newFaultyServer(t *testing.T, ca *fedtest.CA) *faultyServer {
	cert, err := ca.TLSCertificate("bad.test")
	if err != nil {
		t.Fatal(err)
	}
	s := &faultyServer{seen: map[string]bool{}}
	s.peer = faultpeer.New(t, http.HandlerFunc(s.serve), &tls.Config{Certificates: []tls.Certificate{cert}})
	return s
}

func (s *faultyServer) serve(w http.ResponseWriter, r *http.Request) {
	txnID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/send/")
	if !ok || r.Method != http.MethodPut {
		http.NotFound(w, r)
		return
	}
	var txn struct {
		EDUs []struct {
			Type    string `json:"edu_type"`
			Content struct {
				Messages map[string]map[string]struct {
					Body string `json:"body"`
				} `json:"messages"`
			} `json:"content"`
		} `json:"edus"`
	}
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		http.Error(w, `{"errcode":"M_NOT_JSON"}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.attempts = append(s.attempts, time.Now())
	f := s.fault
	if s.maxEDUs > 0 && len(txn.EDUs) > s.maxEDUs {
		f = faultpeer.Status413
	}
	s.mu.Unlock()
	if s.peer.Inject(w, r, f) && !f.Accepted() {
		return
	}
	if f == faultpeer.OK {
		_, _ = w.Write([]byte(`{"pdus":{}}`))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[txnID] {
		return
	}
	s.seen[txnID] = true
	s.sizes = append(s.sizes, len(txn.EDUs))
	for _, e := range txn.EDUs {
		if e.Type == "m.direct_to_device" {
			s.messages = append(s.messages, e.Content.Messages["@bob:bad.test"]["DEV"].Body)
		}
	}
}

func (s *faultyServer) set(f faultpeer.Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

func (s *faultyServer) attemptsSince(i int) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.attempts[i:]...)
}

func (s *faultyServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.messages...)
}

// startWithFaultyPeer starts hs1.test, which reaches bad.test at the
// faulty server.
func startWithFaultyPeer(t *testing.T) (*testserver.Server, *faultyServer) {
	ca, err := fedtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	bad := newFaultyServer(t, ca)
	f := testserver.NewFederationWith(t, testserver.FederationOptions{CA: ca, Peers: map[string]string{"bad.test": bad.peer.Addr}}, "hs1.test")
	return f.Servers["hs1.test"], bad
}

// sendToBob sends bob:bad.test a to-device message: one EDU in hs1's queue
// for bad.test.
func sendToBob(s *testserver.Server, u testserver.User, body string) string {
	s.MustDo(http.StatusOK, "PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.test/%d", time.Now().UnixNano()), u.Token,
		map[string]any{"messages": map[string]any{"@bob:bad.test": map[string]any{"DEV": map[string]any{"body": body}}}})
	return body
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
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

// Whatever way a destination fails — 500, 429, a redirect, a reset or
// garbage instead of HTTP, a hang, a 2xx with a garbage body — its queue
// backs off (no more attempts than the backoff allows), the server stays
// responsive, and once the destination answers again everything arrives
// once, in order.
func TestFederationQueueUnderFaults(t *testing.T) {
	hs1, bad := startWithFaultyPeer(t)
	alice := hs1.Register("alice", "pw")
	var sent []string
	for _, f := range faultpeer.Faults {
		if f == faultpeer.Status413 {
			continue // TestFederationTransactionTooLarge
		}
		bad.set(f)
		from := len(bad.attemptsSince(0))
		sent = append(sent, sendToBob(hs1, alice, "during "+f.String()))
		if f.Accepted() {
			waitUntil(t, f.String()+" delivery", func() bool { return len(bad.received()) == len(sent) })
			continue
		}
		if f == faultpeer.HangConn {
			waitUntil(t, "a hanging transaction", func() bool { return bad.peer.Hung() > 0 })
			hs1.MustDo(http.StatusOK, "GET", "/_matrix/client/versions", "", nil)
			sent = append(sent, sendToBob(hs1, alice, "while bad.test hangs"))
			bad.set(faultpeer.OK)
			bad.peer.Release()
			continue
		}
		waitUntil(t, f.String()+" attempts", func() bool { return len(bad.attemptsSince(from)) >= 3 })
		at := bad.attemptsSince(from)
		window := at[len(at)-1].Sub(at[0])
		if allowed := allowedAttempts(window, fedMinRetry, fedMaxRetry); len(at) > allowed {
			t.Errorf("%s: %d attempts in %s, more than the backoff allows (%d)", f, len(at), window, allowed)
		}
		// Recovered, the queue starts its next outage from the first
		// backoff step.
		bad.set(faultpeer.OK)
		waitUntil(t, "delivery after "+f.String(), func() bool { return len(bad.received()) == len(sent) })
	}
	bad.set(faultpeer.OK)
	sent = append(sent, sendToBob(hs1, alice, "after the faults"))
	waitUntil(t, "every message", func() bool { return len(bad.received()) >= len(sent) })
	if got := bad.received(); fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("bad.test received %q, want %q (once each, in order)", got, sent)
	}
}

// A destination that refuses large transactions with 413 gets smaller
// ones, and everything, in order.
func TestFederationTransactionTooLarge(t *testing.T) {
	const maxEDUs = 3
	hs1, bad := startWithFaultyPeer(t)
	alice := hs1.Register("alice", "pw")
	bad.set(faultpeer.Status500)
	var sent []string
	for i := range 20 {
		sent = append(sent, sendToBob(hs1, alice, fmt.Sprint("message ", i)))
	}
	waitUntil(t, "a failed attempt", func() bool { return len(bad.attemptsSince(0)) > 0 })
	bad.mu.Lock()
	bad.maxEDUs = maxEDUs
	bad.fault = faultpeer.OK
	bad.mu.Unlock()
	waitUntil(t, "every message", func() bool { return len(bad.received()) >= len(sent) })
	if got := bad.received(); fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("bad.test received %q, want %q (once each, in order)", got, sent)
	}
	bad.mu.Lock()
	defer bad.mu.Unlock()
	for _, n := range bad.sizes {
		if n > maxEDUs {
			t.Errorf("bad.test took a transaction of %d EDUs", n)
		}
	}
}
