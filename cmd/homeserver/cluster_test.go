//go:build unix

package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
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

	_ "github.com/jackc/pgx/v5/stdlib"

	"homeserver/internal/testserver"
)

// Several processes on one PostgreSQL database: concurrent sends to one
// room from all of them keep the room's DAG a chain and the stream's
// positions gap-free and committed in order; a /sync parked on one process
// wakes for a message sent through another; typing is the same everywhere.
func TestClusterSendsAndWakeUps(t *testing.T) {
	c := testserver.NewCluster(t, "")
	procs := []*testserver.Server{c.Start("a"), c.Start("b"), c.Start("c")}
	var users []testserver.User
	for i, p := range procs {
		users = append(users, p.Register(fmt.Sprintf("user%d", i), "pw"))
	}
	room := procs[0].CreatePublicRoom(users[0])
	for i := 1; i < len(procs); i++ {
		procs[i].Join(users[i], room)
	}

	// A long-poll on b wakes for a message sent through a.
	since := procs[1].MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", users[1].Token, nil).String("next_batch")
	// b may first answer for what it learns late of earlier writes (c's
	// join, presence); like a client it polls again from the new token.
	woke := make(chan []string, 1)
	sentCh := make(chan string, 1)
	go func() {
		var sentID string
		var seen []string
		for range 20 {
			r := procs[1].Do("GET", "/_matrix/client/v3/sync?timeout=30000&since="+url.QueryEscape(since), users[1].Token, nil)
			ids := clTimelineIDs(r.Body, room)
			seen = append(seen, ids...)
			if sentID == "" {
				sentID = <-sentCh
			}
			if slices.Contains(seen, sentID) {
				break
			}
			var next struct {
				NextBatch string `json:"next_batch"`
			}
			_ = json.Unmarshal(r.Body, &next)
			since = next.NextBatch
		}
		woke <- seen
	}()
	sent := procs[0].SendText(users[0], room, "across processes")
	sentCh <- sent
	if got := <-woke; !slices.Contains(got, sent) {
		t.Fatalf("the syncs on b answered without the message sent on a: %v", got)
	}
	// Typing set through c is what a and b report.
	procs[2].MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/typing/"+url.PathEscape(users[2].ID)), users[2].Token,
		map[string]any{"typing": true, "timeout": 30000})
	for _, p := range procs[:2] {
		clWaitFor(t, "typing seen on every process", func() bool {
			r := p.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", users[0].Token, nil)
			return strings.Contains(string(r.Body), `"user_ids":["`+users[2].ID+`"]`)
		})
	}

	// Concurrent sends through every process, while a reader checks that
	// every position up to the stream's head is visible once the head is.
	db, err := sql.Open("pgx", c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stop := make(chan struct{})
	var readerErr error
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var head, visible int64
			if err := db.QueryRow(`SELECT COALESCE(MAX(pos), 0) FROM stream_counters WHERE name = 'events'`).Scan(&head); err != nil {
				readerErr = err
				return
			}
			if err := db.QueryRow(`SELECT COUNT(*) FROM events WHERE stream_pos <= $1`, head).Scan(&visible); err != nil {
				readerErr = err
				return
			}
			if visible != head {
				readerErr = fmt.Errorf("head %d but %d events at or before it visible", head, visible)
				return
			}
		}
	}()
	const perSender = 15
	var wg sync.WaitGroup
	ids := make([][]string, len(procs))
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSender {
				ids[i] = append(ids[i], p.SendText(users[i], room, fmt.Sprintf("%d-%d", i, n)))
			}
		}()
	}
	wg.Wait()
	close(stop)
	readerWG.Wait()
	if readerErr != nil {
		t.Fatal(readerErr)
	}

	rows, err := db.Query(`SELECT stream_pos, event_id, json FROM events ORDER BY stream_pos`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var prevID string
	var prevDepth, pos int64
	seen := map[string]bool{}
	for rows.Next() {
		var p int64
		var id, js string
		if err := rows.Scan(&p, &id, &js); err != nil {
			t.Fatal(err)
		}
		pos++
		if p != pos {
			t.Fatalf("position %d after %d: the stream has a gap", p, pos-1)
		}
		var ev struct {
			PrevEvents []string `json:"prev_events"`
			Depth      int64    `json:"depth"`
		}
		if err := json.Unmarshal([]byte(js), &ev); err != nil {
			t.Fatal(err)
		}
		if prevID != "" && (len(ev.PrevEvents) != 1 || ev.PrevEvents[0] != prevID || ev.Depth != prevDepth+1) {
			t.Fatalf("event %s at %d: prev_events %v depth %d, want [%s] and %d: the room forked", id, p, ev.PrevEvents, ev.Depth, prevID, prevDepth+1)
		}
		prevID, prevDepth = id, ev.Depth
		seen[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		for _, id := range ids[i] {
			if !seen[id] {
				t.Fatalf("sent event %s is not in the room", id)
			}
		}
	}
}

// clTimelineIDs lists the event IDs of a room's timeline in a /sync answer.
func clTimelineIDs(body []byte, room string) []string {
	var s struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	_ = json.Unmarshal(body, &s)
	var ids []string
	for _, e := range s.Rooms.Join[room].Timeline.Events {
		ids = append(ids, e.EventID)
	}
	return ids
}

func clWaitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a safety net, not a measure
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clAS is an application service that records each transaction once, by
// its ID, the way a real one does; while held it keeps requests waiting.
type clAS struct {
	mu       sync.Mutex
	held     bool
	release  chan struct{}
	txns     map[string]bool
	events   []string
	retries  int
	requests int
}

func (a *clAS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	if !ok || r.Method != http.MethodPut {
		http.NotFound(w, r)
		return
	}
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
		} `json:"events"`
	}
	data, _ := io.ReadAll(r.Body)
	if json.Unmarshal(data, &body) != nil {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.requests++
	held, release := a.held, a.release
	a.mu.Unlock()
	if held {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.txns[id] {
		a.retries++
	} else {
		a.txns[id] = true
		for _, e := range body.Events {
			if e.Type == "m.room.message" {
				a.events = append(a.events, e.EventID)
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

func (a *clAS) hold() {
	a.mu.Lock()
	a.held, a.release = true, make(chan struct{})
	a.mu.Unlock()
}

func (a *clAS) unhold() {
	a.mu.Lock()
	a.held = false
	close(a.release)
	a.mu.Unlock()
}

func (a *clAS) received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

// The process that runs an application service's queue is killed (SIGKILL,
// a transaction in flight): another process takes the queue over once the
// lease expires, and the service gets every event once (the transaction in
// flight again under its ID, which it ignores), in order.
func TestClusterAppServiceFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	as := &clAS{txns: map[string]bool{}}
	asSrv := httptest.NewServer(as)
	defer asSrv.Close()
	regPath := filepath.Join(t.TempDir(), "bridge.yaml")
	reg := "id: bridge\nurl: " + asSrv.URL + "\nas_token: as-cl\nhs_token: hs-cl\nsender_localpart: clbot\n" +
		"namespaces:\n  users: [{exclusive: false, regex: '@cl_.*'}]\n  aliases: []\n  rooms: []\n"
	if err := os.WriteFile(regPath, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testserver.NewCluster(t, "app_service_config_files: ["+regPath+"]\nreader_lease: 2s\n")

	// Process a is the real binary, started first: it takes the queue.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the binary with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "homeserver")
	if out, err := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := freePort(t)
	logs := new(syncBuffer)
	proc := exec.Command(bin, "-c", c.ConfigPath(), "--instance-name", "a", "--http-port", strconv.Itoa(port))
	proc.Stdout, proc.Stderr = logs, logs
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = proc.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = proc.Process.Kill()
		<-exited
	})
	waitForVersions(t, fmt.Sprintf("http://127.0.0.1:%d", port), exited, logs)
	db, err := sql.Open("pgx", c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	owner := func() string {
		var o string
		_ = db.QueryRow(`SELECT owner FROM reader_leases WHERE name = 'appservice:bridge'`).Scan(&o)
		return o
	}
	clWaitFor(t, "process a to take the queue", func() bool { return strings.HasPrefix(owner(), "a/") })

	b := c.Start("b")
	alice := b.Register("cl_alice", "pw")
	room := b.CreatePublicRoom(alice)
	var sent []string
	for i := range 5 {
		sent = append(sent, b.SendText(alice, room, fmt.Sprintf("before %d", i)))
	}
	clWaitFor(t, "the first messages", func() bool { return len(as.received()) == len(sent) })

	// A transaction in flight when a dies.
	as.hold()
	sent = append(sent, b.SendText(alice, room, "in flight"))
	clWaitFor(t, "the transaction in flight", func() bool {
		as.mu.Lock()
		defer as.mu.Unlock()
		return as.requests > 5
	})
	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	for i := range 5 {
		sent = append(sent, b.SendText(alice, room, fmt.Sprintf("after %d", i)))
	}
	as.unhold()
	clWaitFor(t, "process b to take the queue over and deliver everything", func() bool {
		return strings.HasPrefix(owner(), "b/") && len(as.received()) == len(sent)
	})
	if got := as.received(); !slices.Equal(got, sent) {
		t.Fatalf("received %v\nwant %v", got, sent)
	}
}
