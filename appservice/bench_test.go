package appservice_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/rooms"
)

// benchAS timestamps every event it receives.
type benchAS struct {
	srv  *httptest.Server
	mu   sync.Mutex
	down bool
	got  map[string]time.Time
	// arrived is signalled on every acknowledged transaction.
	arrived chan struct{}
}

func newBenchAS(b *testing.B) *benchAS {
	as := &benchAS{got: map[string]time.Time{}, arrived: make(chan struct{}, 1)}
	as.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		as.mu.Lock()
		down := as.down
		as.mu.Unlock()
		if down {
			w.WriteHeader(http.StatusServiceUnavailable)
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
		as.mu.Lock()
		for _, e := range body.Events {
			if _, dup := as.got[e.EventID]; !dup {
				as.got[e.EventID] = now
			}
		}
		as.mu.Unlock()
		_, _ = w.Write([]byte("{}"))
		select {
		case as.arrived <- struct{}{}:
		default:
		}
	}))
	b.Cleanup(as.srv.Close)
	return as
}

func (as *benchAS) setDown(down bool) {
	as.mu.Lock()
	as.down = down
	as.mu.Unlock()
}

// waitAll waits until every one of ids has arrived.
func (as *benchAS) waitAll(b *testing.B, ids []string) {
	deadline := time.After(safetyNet)
	for {
		as.mu.Lock()
		n := 0
		for _, id := range ids {
			if _, ok := as.got[id]; ok {
				n++
			}
		}
		as.mu.Unlock()
		if n == len(ids) {
			return
		}
		select {
		case <-as.arrived:
		case <-deadline:
			b.Fatalf("gave up: %d of %d events arrived", n, len(ids))
		}
	}
}

func startBenchHS(b *testing.B, as *benchAS) (*testserver.Server, testserver.User, string) {
	path := filepath.Join(b.TempDir(), "bench.yaml")
	reg := fmt.Sprintf("id: bench\nurl: %s\nas_token: %s\nhs_token: %s\nsender_localpart: _bench_bot\nnamespaces:\n  users: [{exclusive: false, regex: \"@bridge_.*\"}]\n",
		as.srv.URL, asToken, hsToken)
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		b.Fatal(err)
	}
	ts := testserver.Start(b, "app_service_config_files: ["+path+"]\n")
	fastBackoff(ts)
	u := ts.Register("bridge_bench", "password-bench")
	return ts, u, ts.CreatePublicRoom(u)
}

// BenchmarkDeliveryLatency: one event at a time, from the commit of the
// event (the rooms service's OnPersist hook) to its arrival at the
// service's HTTP handler.
func BenchmarkDeliveryLatency(b *testing.B) {
	as := newBenchAS(b)
	ts, u, roomID := startBenchHS(b, as)
	var mu sync.Mutex
	persisted := map[string]time.Time{}
	ts.Srv.Rooms().OnPersist(func(p rooms.Persisted) {
		now := time.Now()
		mu.Lock()
		persisted[p.EventID] = now
		mu.Unlock()
	})
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := ts.SendText(u, roomID, fmt.Sprintf("latency %d", i))
		as.waitAll(b, []string{id})
		mu.Lock()
		at := persisted[id]
		mu.Unlock()
		as.mu.Lock()
		lat = append(lat, as.got[id].Sub(at))
		as.mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkDeliveryThroughput: b.N events queue up while the service is
// down; the timer runs from its return to the arrival of the last one, so
// the figure is the rate at which one queue drains into one service
// (100 events per transaction).
func BenchmarkDeliveryThroughput(b *testing.B) {
	as := newBenchAS(b)
	ts, u, roomID := startBenchHS(b, as)
	as.setDown(true)
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = ts.SendText(u, roomID, fmt.Sprintf("throughput %d", i))
	}
	b.ResetTimer()
	start := time.Now()
	as.setDown(false)
	fastBackoff(ts) // retries the pending transaction now
	as.waitAll(b, ids)
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
