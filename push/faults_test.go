package push_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/faultpeer"
	"homeserver/internal/testserver"
)

const (
	v3         = "/_matrix/client/v3"
	notifyPath = "/_matrix/push/v1/notify"
	// safetyNet only turns a broken queue into a failure; no assertion
	// depends on it.
	safetyNet = 2 * time.Minute
)

// allowLoopback lets the server reach gateways on loopback, which it
// refuses by default like every address a user could aim it at.
const allowLoopback = "ip_range_whitelist: ['127.0.0.1']\n"

// gateway is a push gateway that fails as its fault says and records the
// notifications it accepted.
type gateway struct {
	peer *faultpeer.Peer

	mu         sync.Mutex
	fault      faultpeer.Fault
	attempts   []time.Time
	events     []string
	redirected int
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{}
	g.peer = faultpeer.New(t, http.HandlerFunc(g.serve), nil)
	return g
}

func (g *gateway) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	if r.URL.Path == "/elsewhere" {
		g.redirected++
		g.mu.Unlock()
		_, _ = io.WriteString(w, "{}")
		return
	}
	g.attempts = append(g.attempts, time.Now())
	f := g.fault
	g.mu.Unlock()
	var body struct {
		Notification struct {
			EventID string `json:"event_id"`
		} `json:"notification"`
	}
	if r.Method != http.MethodPost || r.URL.Path != notifyPath || json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if g.peer.Inject(w, r, f) && !f.Accepted() {
		return
	}
	if f == faultpeer.OK {
		_, _ = io.WriteString(w, `{"rejected":[]}`)
	}
	g.mu.Lock()
	g.events = append(g.events, body.Notification.EventID)
	g.mu.Unlock()
}

func (g *gateway) set(f faultpeer.Fault) {
	g.mu.Lock()
	g.fault = f
	g.mu.Unlock()
}

func (g *gateway) attemptsSince(i int) []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Time(nil), g.attempts[i:]...)
}

func (g *gateway) delivered() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.events...)
}

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

// allowedAttempts is the most attempts a pusher backing off from base,
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

func pusherBody(gwURL string) map[string]any {
	return map[string]any{
		"pushkey": "key", "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gwURL, "format": "event_id_only"},
	}
}

// dm makes a direct chat from alice to bob, in which alice's messages
// notify bob.
func dm(s *testserver.Server, alice, bob testserver.User) string {
	room := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{"invite": []string{bob.ID}, "is_direct": true}).String("room_id")
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	return room
}

// pushers/set checks a pusher's URL as Synapse does, and refuses the
// addresses the server would never connect to (loopback, link-local cloud
// metadata, private networks), whatever way they are written.
func TestPusherURLValidation(t *testing.T) {
	s := testserver.Start(t, "")
	bob := s.Register("bob", "pw")
	for _, bad := range []any{
		"http://127.0.0.1:8080" + notifyPath,
		"http://169.254.169.254" + notifyPath,
		"http://[::1]" + notifyPath,
		"http://[::ffff:127.0.0.1]" + notifyPath,
		"http://10.1.2.3" + notifyPath,
		"http://0.0.0.0" + notifyPath,
		"https://push.example.org/notify",
		"https://push.example.org" + notifyPath + "/../../admin",
		"ftp://push.example.org" + notifyPath,
		"file:///etc/passwd",
		notifyPath,
		"",
		42,
	} {
		body := pusherBody("")
		body["data"] = map[string]any{"url": bad}
		r := s.Do("POST", v3+"/pushers/set", bob.Token, body)
		if r.Status != http.StatusBadRequest || r.JSON["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("url %v: %d %s", bad, r.Status, r.Body)
		}
	}
	if r := s.MustDo(http.StatusOK, "GET", v3+"/pushers", bob.Token, nil); len(r.JSON["pushers"].([]any)) != 0 {
		t.Fatalf("a bad pusher was kept: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", bob.Token, pusherBody("https://push.example.org"+notifyPath))
}

// A name that resolves to a blocked address is refused when the
// notification is delivered: the gateway on loopback hears nothing.
func TestPushDeliveryRefusesBlockedAddress(t *testing.T) {
	gw := newGateway(t)
	var logs faultpeer.Logs
	s := testserver.StartLogged(t, "", logs.Handler())
	s.Srv.Push().SetBackoff(20*time.Millisecond, 100*time.Millisecond)
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	_, port, err := net.SplitHostPort(gw.peer.Addr)
	if err != nil {
		t.Fatal(err)
	}
	s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", bob.Token, pusherBody("http://localhost:"+port+notifyPath))
	room := dm(s, alice, bob)
	s.SendText(alice, room, "hello")
	waitUntil(t, "a refused delivery", func() bool { return strings.Contains(logs.String(), "IP address blocked") })
	if n := gw.peer.Accepted(); n != 0 {
		t.Fatalf("the gateway on loopback got %d connections", n)
	}
}

// Whatever way the gateway fails — an error status, a redirect (never
// followed), a reset or garbage instead of HTTP, a hang — the pusher backs
// off (no more attempts than the backoff allows), the server stays
// responsive, and once the gateway answers again every notification
// arrives once, in order.
func TestPusherUnderFaults(t *testing.T) {
	const base, maxWait = 40 * time.Millisecond, 320 * time.Millisecond
	gw := newGateway(t)
	s := testserver.Start(t, allowLoopback)
	s.Srv.Push().SetBackoff(base, maxWait)
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", bob.Token, pusherBody(gw.peer.URL+notifyPath))
	room := dm(s, alice, bob)
	// The invite notified bob: the first delivery.
	waitUntil(t, "the invite's push", func() bool { return len(gw.delivered()) == 1 })
	var sent []string
	for _, f := range faultpeer.Faults {
		gw.set(f)
		from := len(gw.attemptsSince(0))
		sent = append(sent, s.SendText(alice, room, "during "+f.String()))
		if f.Accepted() {
			continue
		}
		if f == faultpeer.HangConn {
			waitUntil(t, "a hanging push", func() bool { return gw.peer.Hung() > 0 })
			s.MustDo(http.StatusOK, "GET", "/_matrix/client/versions", "", nil)
			sent = append(sent, s.SendText(alice, room, "while the gateway hangs"))
			gw.set(faultpeer.OK)
			gw.peer.Release()
			continue
		}
		waitUntil(t, f.String()+" attempts", func() bool { return len(gw.attemptsSince(from)) >= 4 })
		at := gw.attemptsSince(from)
		window := at[len(at)-1].Sub(at[0])
		if allowed := allowedAttempts(window, base, maxWait); len(at) > allowed {
			t.Errorf("%s: %d attempts in %s, more than the backoff allows (%d)", f, len(at), window, allowed)
		}
	}
	gw.set(faultpeer.OK)
	sent = append(sent, s.SendText(alice, room, "after the faults"))
	waitUntil(t, "every notification", func() bool { return len(gw.delivered()) >= len(sent)+1 })
	got := gw.delivered()[1:]
	if fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("delivered %v, want %v (once each, in order)", got, sent)
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if gw.redirected != 0 {
		t.Errorf("%d redirects followed", gw.redirected)
	}
}
