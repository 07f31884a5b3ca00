//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// crashRoundsEnv raises the number of SIGKILLs of TestCrashRecovery; CI
// runs a few rounds to stay cheap.
const crashRoundsEnv = "HOMESERVER_CRASH_ROUNDS"

// TestCrashRecovery runs the real binary under concurrent sends, SIGKILLs it
// at random moments and restarts it, then checks the promises that make a
// crash harmless: every acknowledged event is in the room exactly once, a
// retried transaction ID returns the event ID it first did, and the
// application service and the push gateway got every event once, in order
// (the service ignoring transactions it already has, by ID, as real ones
// do; the gateway's repeats after a crash ignored by event ID).
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills it repeatedly")
	}
	t.Parallel()
	rounds := 3
	if s := os.Getenv(crashRoundsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of rounds", crashRoundsEnv, s)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("%d rounds, random seed %d", rounds, seed)

	as := newCrashAS()
	asSrv := httptest.NewServer(as)
	defer asSrv.Close()
	gw := &crashGateway{}
	gwSrv := httptest.NewServer(gw)
	defer gwSrv.Close()

	dir := t.TempDir()
	regPath := filepath.Join(dir, "bridge.yaml")
	reg := "id: crashbridge\nurl: " + asSrv.URL + "\nas_token: as-crash\nhs_token: " + crashHSToken + "\nsender_localpart: crashbot\n" +
		"namespaces:\n  users: [{exclusive: false, regex: '@crash_.*'}]\n  aliases: []\n  rooms: []\n"
	if err := os.WriteFile(regPath, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Pushers may reach the loopback gateway only through the whitelist;
	// a short lease lets a restarted process take its readers back at once
	// on PostgreSQL, where the killed one's lease outlives it.
	yaml := testserver.BaseConfig + "app_service_config_files: [" + regPath + "]\n" +
		"ip_range_whitelist: ['127.0.0.1']\nreader_lease: 1s\n"
	if dsn := os.Getenv(testserver.PostgresEnv); dsn != "" {
		yaml = strings.Replace(yaml, testserver.SQLiteDatabase, testserver.PostgresDatabase(t, dsn), 1)
	}
	configPath := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(configPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	hs := &crashProcess{t: t, bin: buildBinary(t), config: configPath, port: freePort(t)}
	t.Cleanup(hs.kill)
	hs.start()
	base := hs.baseURL()
	alice := crashRegister(t, base, "crash_alice")
	bob := crashRegister(t, base, "crash_bob")
	room := crashCall(t, "POST", base+"/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "public_chat"})["room_id"].(string)
	crashCall(t, "POST", base+"/_matrix/client/v3/join/"+url.PathEscape(room), bob, map[string]any{})
	crashCall(t, "POST", base+"/_matrix/client/v3/pushers/set", bob, map[string]any{
		"pushkey": "bobkey", "kind": "http", "app_id": "org.example.crash", "app_display_name": "Crash",
		"device_display_name": "Phone", "lang": "en",
		"data": map[string]any{"url": gwSrv.URL + "/_matrix/push/v1/notify", "format": "event_id_only"},
	})

	// Four senders each send their own numbered transactions until the
	// process dies under them; a send without an answer is pending, and
	// retried first after the restart, as a client would.
	const senders = 4
	acked := map[string]string{} // txnId -> event ID
	var pending []string
	next := make([]int, senders)
	sendPath := base + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/send/m.room.message/"
	send := func(txn string) (string, error) {
		body, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": txn})
		req, err := http.NewRequest("PUT", sendPath+txn, bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+alice)
		resp, err := crashClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		var out struct {
			EventID string `json:"event_id"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &out) != nil || out.EventID == "" {
			return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, data)
		}
		return out.EventID, nil
	}
	for round := range rounds + 1 {
		for _, txn := range pending {
			id, err := send(txn)
			if err != nil {
				t.Fatalf("retrying %s after a restart: %v\nlog:\n%s", txn, err, hs.logs)
			}
			acked[txn] = id
		}
		pending = nil
		if round == rounds {
			break
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					txn := fmt.Sprintf("crash-%d-%d", g, next[g])
					next[g]++
					id, err := send(txn)
					mu.Lock()
					if err != nil {
						pending = append(pending, txn)
						mu.Unlock()
						return
					}
					acked[txn] = id
					mu.Unlock()
				}
			}()
		}
		delay := time.Duration(100+rng.IntN(900)) * time.Millisecond
		time.Sleep(delay)
		hs.kill()
		wg.Wait()
		t.Logf("round %d: killed after %v; %d events acknowledged, %d sends pending", round, delay, len(acked), len(pending))
		hs.start()
	}
	if len(acked) == 0 {
		t.Fatal("no send was ever acknowledged")
	}

	// A retried transaction ID returns the event it first did.
	for txn, id := range acked {
		if got, err := send(txn); err != nil || got != id {
			t.Fatalf("retrying %s after the crashes: %q, %v; first answered %s", txn, got, err, id)
		}
	}

	// Every message once in the room, and no other message.
	timeline := crashTimeline(t, base, room, alice)
	var order []string // the room's message IDs in timeline order
	seen := map[string]string{}
	for _, ev := range timeline {
		if prev, dup := seen[ev.body]; dup {
			t.Fatalf("transaction %s is in the room twice: %s and %s", ev.body, prev, ev.id)
		}
		seen[ev.body] = ev.id
		order = append(order, ev.id)
	}
	for txn, id := range acked {
		if seen[txn] != id {
			t.Fatalf("acknowledged event %s (%s) is not in the room (found %q)", id, txn, seen[txn])
		}
	}
	if len(seen) != len(acked) {
		t.Fatalf("%d messages in the room, %d acknowledged", len(seen), len(acked))
	}

	// The service and the gateway catch up with everything, in order.
	crashWait(t, "the application service and the push gateway to get every event", hs, func() bool {
		return len(as.messages()) >= len(order) && len(gw.firstSeen()) >= len(order)
	})
	if got := as.messages(); !slices.Equal(got, order) {
		t.Fatalf("application service got %d messages %v\nwant %d in room order %v", len(got), got, len(order), order)
	}
	if err := as.failure(); err != nil {
		t.Fatal(err)
	}
	if got := gw.firstSeen(); !slices.Equal(got, order) {
		t.Fatalf("push gateway got %d events %v\nwant %d in room order %v", len(got), got, len(order), order)
	}
	t.Logf("%d events; the service got %d transactions (%d repeated), the gateway %d requests",
		len(order), as.txnCount(), as.repeatCount(), gw.requestCount())
}

const crashHSToken = "hs-crash"

// crashClient's timeout only turns a hung server into a failure.
var crashClient = &http.Client{Timeout: 30 * time.Second}

// buildBinary builds ./cmd/homeserver into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the binary with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "homeserver")
	if out, err := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// crashProcess is the binary, run again and again on one configuration
// and port.
type crashProcess struct {
	t           *testing.T
	bin, config string
	port        int
	logs        *syncBuffer
	proc        *exec.Cmd
	exited      chan struct{} // closed when proc has exited; nil before the first start
}

func (p *crashProcess) baseURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.port) }

// start starts the binary and waits until it answers.
func (p *crashProcess) start() {
	p.t.Helper()
	p.logs = new(syncBuffer)
	p.proc = exec.Command(p.bin, "-c", p.config, "--http-port", strconv.Itoa(p.port))
	p.proc.Stdout, p.proc.Stderr = p.logs, p.logs
	if err := p.proc.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(p.proc, p.exited)
	waitForVersions(p.t, p.baseURL(), p.exited, p.logs)
}

// kill SIGKILLs the process, if running, and waits for it to exit.
func (p *crashProcess) kill() {
	if p.exited == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.proc.Process.Kill()
	<-p.exited
}

// crashRegister registers localpart and returns its access token.
func crashRegister(t *testing.T, base, localpart string) string {
	t.Helper()
	registerDummy(t, base, localpart, "pw")
	status, out := login(t, base, localpart, "pw")
	token, _ := out["access_token"].(string)
	if status != http.StatusOK || token == "" {
		t.Fatalf("login %s: HTTP %d %v", localpart, status, out)
	}
	return token
}

// crashCall sends an authenticated JSON request that must answer 200.
func crashCall(t *testing.T, method, url, token string, body any) map[string]any {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := crashClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("%s %s: HTTP %d %s", method, url, resp.StatusCode, raw)
	}
	return out
}

type crashEvent struct{ id, body string }

// crashTimeline pages /messages back from the end and returns the room's
// m.room.message events in timeline order.
func crashTimeline(t *testing.T, base, room, token string) []crashEvent {
	t.Helper()
	var events []crashEvent
	from := ""
	for {
		u := base + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&limit=500"
		if from != "" {
			u += "&from=" + url.QueryEscape(from)
		}
		page := crashCall(t, "GET", u, token, nil)
		chunk, _ := page["chunk"].([]any)
		for _, c := range chunk {
			ev, _ := c.(map[string]any)
			content, _ := ev["content"].(map[string]any)
			if ev["type"] == "m.room.message" {
				body, _ := content["body"].(string)
				id, _ := ev["event_id"].(string)
				events = append(events, crashEvent{id: id, body: body})
			}
		}
		end, _ := page["end"].(string)
		if len(chunk) == 0 || end == "" || end == from {
			slices.Reverse(events)
			return events
		}
		from = end
	}
}

// crashWait polls ok; the deadline is a safety net, not a measure.
func crashWait(t *testing.T, what string, p *crashProcess, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s; log:\n%s", what, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// crashAS is an application service that takes each transaction once, by
// its ID, and answers slowly enough that kills often catch one in flight.
type crashAS struct {
	mu      sync.Mutex
	txns    map[string][]string // txnId -> its message event IDs
	events  []string            // message event IDs, in the order received
	inTxn   map[string]string   // event ID -> the transaction that brought it
	repeats int
	err     error
}

func newCrashAS() *crashAS {
	return &crashAS{txns: map[string][]string{}, inTxn: map[string]string{}}
}

func (a *crashAS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	txn, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	if !ok || r.Method != http.MethodPut {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+crashHSToken {
		http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
		return
	}
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	var ids []string
	for _, e := range body.Events {
		if e.Type == "m.room.message" {
			ids = append(ids, e.EventID)
		}
	}
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	a.mu.Lock()
	defer a.mu.Unlock()
	if first, dup := a.txns[txn]; dup {
		a.repeats++
		// A transaction is persisted before it is sent: a repeat after a
		// crash must carry the same events.
		if !slices.Equal(first, ids) && a.err == nil {
			a.err = fmt.Errorf("transaction %s repeated with events %v, first %v", txn, ids, first)
		}
	} else {
		a.txns[txn] = ids
		for _, id := range ids {
			if other, dup := a.inTxn[id]; dup && a.err == nil {
				a.err = fmt.Errorf("event %s sent in transactions %s and %s", id, other, txn)
			}
			a.inTxn[id] = txn
		}
		a.events = append(a.events, ids...)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

func (a *crashAS) messages() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

func (a *crashAS) failure() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *crashAS) txnCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.txns)
}

func (a *crashAS) repeatCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.repeats
}

// crashGateway is a push gateway recording the event of each notification;
// a pusher may repeat what was in flight when the process died, so events
// count by their first notification.
type crashGateway struct {
	mu       sync.Mutex
	seen     map[string]bool
	first    []string
	requests int
}

func (g *crashGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/_matrix/push/v1/notify" {
		http.NotFound(w, r)
		return
	}
	var body struct {
		Notification struct {
			EventID string `json:"event_id"`
		} `json:"notification"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
	g.mu.Lock()
	g.requests++
	if id := body.Notification.EventID; id != "" && !g.seen[id] {
		if g.seen == nil {
			g.seen = map[string]bool{}
		}
		g.seen[id] = true
		g.first = append(g.first, id)
	}
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"rejected":[]}`)
}

func (g *crashGateway) firstSeen() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.first)
}

func (g *crashGateway) requestCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests
}
