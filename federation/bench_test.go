package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// benchPair is two federating servers with alice (hs1) and bob (hs2) in a
// room, and bob long-polling /sync on hs2 in the background, recording
// when each event arrives.
type benchPair struct {
	f          *testserver.Federation
	a, b       *testserver.Server
	alice, bob testserver.User
	room       string

	mu      sync.Mutex
	arrived map[string]time.Time
	stop    chan struct{}
	done    chan struct{}
}

// relaxedFederationLimits lifts rc_federation, whose defaults (Synapse's:
// 10 requests a second from one server before each waits 500ms) the
// latency benchmark otherwise measures.
const relaxedFederationLimits = "rc_federation: {window_size: 1000, sleep_limit: 100000, sleep_delay: 500, reject_limit: 100000, concurrent: 100}\n"

// limits runs fn with Synapse's default rc_federation and with it lifted.
func limits(b *testing.B, fn func(b *testing.B, extra string)) {
	b.Run("rc_federation=default", func(b *testing.B) { fn(b, "") })
	b.Run("rc_federation=relaxed", func(b *testing.B) { fn(b, relaxedFederationLimits) })
}

func newBenchPair(b *testing.B, extra string) *benchPair {
	f := testserver.NewFederation(b, extra, "hs1.test", "hs2.test")
	p := &benchPair{f: f, a: f.Servers["hs1.test"], b: f.Servers["hs2.test"], arrived: map[string]time.Time{}}
	p.alice = p.a.Register("alice", "pw")
	p.bob = p.b.Register("bob", "pw")
	p.room = p.a.CreatePublicRoom(p.alice)
	p.b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(p.room)+"?server_name=hs1.test", p.bob.Token, map[string]any{})
	return p
}

// now is bob's current /sync position on hs2.
func (p *benchPair) now() string {
	return p.b.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", p.bob.Token, nil).String("next_batch")
}

// follow starts bob's /sync loop on hs2 from since.
func (p *benchPair) follow(b *testing.B, since string) {
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			r := p.b.Do("GET", "/_matrix/client/v3/sync?timeout=1000&filter="+filter+"&since="+url.QueryEscape(since), p.bob.Token, nil)
			if r.Status != http.StatusOK {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			now := time.Now()
			since = r.String("next_batch")
			for _, e := range timeline(r.JSON, p.room) {
				if id, _ := e["event_id"].(string); id != "" {
					p.mu.Lock()
					p.arrived[id] = now
					p.mu.Unlock()
				}
			}
		}
	}()
}

func (p *benchPair) unfollow() {
	close(p.stop)
	<-p.done
}

// waitAll waits until every ID has arrived and returns the last arrival.
func (p *benchPair) waitAll(b *testing.B, ids []string) time.Time {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		var last time.Time
		all := true
		for _, id := range ids {
			t, ok := p.arrived[id]
			if !ok {
				all = false
				break
			}
			if t.After(last) {
				last = t
			}
		}
		p.mu.Unlock()
		if all {
			return last
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("not every event reached hs2 within 2 minutes")
	return time.Time{}
}

// sendMany sends n messages from alice, c at a time.
func (p *benchPair) sendMany(b *testing.B, n, c int) []string {
	ids := make([]string, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := p.a.Do("PUT", testserver.RoomPath(p.room, "/send/m.room.message/"+testserver.NextTxn()), p.alice.Token,
					map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("bench %d", i)})
				ids[i] = r.String("event_id")
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return ids
}

// BenchmarkFederationThroughput: 500 events sent on hs1 by 10 concurrent
// requests, until all are in bob's /sync on hs2.
func BenchmarkFederationThroughput(b *testing.B) { limits(b, benchThroughput) }

func benchThroughput(b *testing.B, extra string) {
	p := newBenchPair(b, extra)
	p.follow(b, p.now())
	defer p.unfollow()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		ids := p.sendMany(b, 500, 10)
		last := p.waitAll(b, ids)
		b.ReportMetric(500/last.Sub(start).Seconds(), "events/s")
	}
}

// BenchmarkFederationLatency: one event at a time, from the send's answer
// on hs1 to bob's /sync on hs2 returning it.
func BenchmarkFederationLatency(b *testing.B) { limits(b, benchLatency) }

func benchLatency(b *testing.B, extra string) {
	p := newBenchPair(b, extra)
	p.follow(b, p.now())
	defer p.unfollow()
	b.ResetTimer()
	for range b.N {
		var lat []time.Duration
		for i := range 50 {
			id := p.a.SendText(p.alice, p.room, fmt.Sprintf("latency %d", i))
			sent := time.Now()
			lat = append(lat, p.waitAll(b, []string{id}).Sub(sent))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkFederationCatchUp: hs2 is down while hs1 sends 500 events; the
// time from hs2's restart until all 500 are in bob's /sync (backoff waits
// of up to 2s included, as configured for tests), and the transfer alone
// (first arrival to last).
func BenchmarkFederationCatchUp(b *testing.B) { limits(b, benchCatchUp) }

func benchCatchUp(b *testing.B, extra string) {
	p := newBenchPair(b, extra)
	b.ResetTimer()
	for range b.N {
		since := p.now()
		p.b.Stop()
		ids := p.sendMany(b, 500, 10)
		p.b.Restart()
		restarted := time.Now()
		p.follow(b, since)
		last := p.waitAll(b, ids)
		p.unfollow()
		p.mu.Lock()
		first := last
		for _, id := range ids {
			if t := p.arrived[id]; t.Before(first) {
				first = t
			}
		}
		p.mu.Unlock()
		b.ReportMetric(last.Sub(restarted).Seconds(), "s-to-catch-up")
		b.ReportMetric(500/max(last.Sub(first).Seconds(), 0.001), "events/s-transfer")
	}
}
