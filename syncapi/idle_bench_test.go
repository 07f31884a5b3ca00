package syncapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/syncapi"
)

// idleClientEnv names the plan file that makes the test binary the client
// side of BenchmarkIdleLongPolls instead of running tests. The client runs
// in a process of its own so that the server's memory is measured alone
// (and the two ends' sockets do not share one process's file limit).
const idleClientEnv = "HOMESERVER_IDLE_LONGPOLL_CLIENT"

func TestMain(m *testing.M) {
	if plan := os.Getenv(idleClientEnv); plan != "" {
		if err := idleClient(plan); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// idlePlan is what the client is to open.
type idlePlan struct {
	Addr   string   `json:"addr"`
	Since  string   `json:"since"`
	Tokens []string `json:"tokens"` // one long-poll each
}

// idleClient opens connections and sends their long-polls, in batches:
// each line "<k>" on its standard input opens the next k (one per token of
// the plan) and is answered "ready". It holds them all until its standard
// input closes.
func idleClient(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var p idlePlan
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	q := url.Values{"since": {p.Since}, "timeout": {strconv.Itoa(int(syncapi.MaxTimeout / time.Millisecond))}, "set_presence": {"offline"}}
	conns := make([]net.Conn, 0, len(p.Tokens))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		k, err := strconv.Atoi(in.Text())
		if err != nil {
			return err
		}
		for _, tok := range p.Tokens[len(conns):min(len(conns)+k, len(p.Tokens))] {
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				return fmt.Errorf("connection %d: %w", len(conns), err)
			}
			fmt.Fprintf(c, "GET /_matrix/client/v3/sync?%s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n\r\n", q.Encode(), tok)
			conns = append(conns, c)
		}
		fmt.Println("ready")
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// BenchmarkIdleLongPolls measures what an idle long-poll costs the server:
// N /sync long-polls (10 per user, the default per-user limit) over real
// loopback connections from a child process, all parked on the notifier.
// Run it once (-benchtime 1x): one iteration is the whole measurement.
func BenchmarkIdleLongPolls(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("polls=%d", n), func(b *testing.B) {
			for b.Loop() {
				idleLongPolls(b, n)
			}
		})
	}
}

type memSample struct {
	heap, stack, rss uint64
	goroutines       int
}

func sampleMem(b *testing.B) memSample {
	b.Helper()
	debug.FreeOSMemory() // a GC, and freed pages back to the OS for RSS
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	var rss uint64
	if err == nil {
		for line := range strings.SplitSeq(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				rss = kb << 10
			}
		}
	}
	return memSample{heap: ms.HeapInuse, stack: ms.StackInuse, rss: rss, goroutines: runtime.NumGoroutine()}
}

func idleLongPolls(b *testing.B, n int) {
	s := testserver.Start(b, "")
	var plan idlePlan
	plan.Addr = strings.TrimPrefix(s.URL, "http://")
	perUser := syncapi.DefaultLongPollsPerUser
	for i := range (n + perUser - 1) / perUser {
		u := sbRegister(b, s, fmt.Sprintf("idle%d", i))
		for range min(perUser, n-len(plan.Tokens)) {
			plan.Tokens = append(plan.Tokens, u.token)
		}
	}
	plan.Since = sbNextBatch(b, s.MustDo(200, "GET", "/_matrix/client/v3/sync?timeout=0", plan.Tokens[0], nil).Body)
	data, _ := json.Marshal(plan)
	path := filepath.Join(b.TempDir(), "plan.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}

	before := sampleMem(b)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), idleClientEnv+"="+path)
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = child.Wait()
	}()
	// In batches: ten thousand syncs at once would queue for the
	// database's connections past storage's bounded wait (and be answered
	// 503), which is not what is measured here.
	replies := bufio.NewReader(stdout)
	const batch = 500
	for opened := 0; opened < n; opened += batch {
		fmt.Fprintln(stdin, batch)
		if line, err := replies.ReadString('\n'); err != nil || line != "ready\n" {
			b.Fatalf("client: %q %v %s", line, err, stderr.Bytes())
		}
		sbWaitParked(b, min(opened+batch, n))
	}
	after := sampleMem(b)
	per := func(x, y uint64) float64 { return (float64(y) - float64(x)) / float64(n) }
	b.ReportMetric(per(before.heap, after.heap), "heap-B/poll")
	b.ReportMetric(per(before.stack, after.stack), "stack-B/poll")
	b.ReportMetric(per(before.rss, after.rss), "rss-B/poll")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/poll")
	b.ReportMetric(float64(after.rss)/(1<<20), "rss-MiB")
}
