package federation

import (
	"net/http"
	"sync"
	"time"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
)

// RateLimit is Synapse's rc_federation: per origin server, the first
// SleepLimit requests of each Window go at once, later ones wait SleepDelay
// each, more than RejectLimit are refused with 429, and at most Concurrent
// are handled at a time (the others queue).
type RateLimit struct {
	Window      time.Duration
	SleepLimit  int
	SleepDelay  time.Duration
	RejectLimit int
	Concurrent  int
}

// DefaultRateLimit is Synapse's default rc_federation.
var DefaultRateLimit = RateLimit{Window: time.Second, SleepLimit: 10, SleepDelay: 500 * time.Millisecond, RejectLimit: 50, Concurrent: 3}

// maxTrackedOrigins bounds the limiter's memory; idle origins are dropped
// when it is reached.
const maxTrackedOrigins = 10000

type originLimiter struct {
	cfg RateLimit
	now func() time.Time

	mu      sync.Mutex
	origins map[string]*originState
}

type originState struct {
	windowStart time.Time
	count       int
	slots       chan struct{}
	busy        int // requests holding or waiting for a slot
}

func newOriginLimiter(cfg RateLimit, now func() time.Time) *originLimiter {
	return &originLimiter{cfg: cfg, now: now, origins: map[string]*originState{}}
}

// admit counts a request of origin: it returns how long the request must
// wait first, or ok false when it is refused.
func (l *originLimiter) admit(origin string) (st *originState, delay time.Duration, retry time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st = l.origins[origin]
	if st == nil {
		if len(l.origins) >= maxTrackedOrigins {
			for o, s := range l.origins {
				if s.busy == 0 && now.Sub(s.windowStart) >= l.cfg.Window {
					delete(l.origins, o)
				}
			}
		}
		st = &originState{windowStart: now, slots: make(chan struct{}, max(l.cfg.Concurrent, 1))}
		l.origins[origin] = st
	}
	if now.Sub(st.windowStart) >= l.cfg.Window {
		st.windowStart, st.count = now, 0
	}
	st.count++
	if l.cfg.RejectLimit > 0 && st.count > l.cfg.RejectLimit {
		return nil, 0, st.windowStart.Add(l.cfg.Window).Sub(now), false
	}
	if l.cfg.SleepLimit > 0 && st.count > l.cfg.SleepLimit {
		delay = l.cfg.SleepDelay
	}
	st.busy++
	return st, delay, 0, true
}

func (l *originLimiter) done(st *originState) {
	l.mu.Lock()
	st.busy--
	l.mu.Unlock()
}

// middleware applies the limits to authenticated federation requests.
func (l *originLimiter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, delay, retry, ok := l.admit(transport.Origin(r.Context()))
		if !ok {
			mxhttp.WriteError(w, mxhttp.LimitExceeded(retry))
			return
		}
		defer l.done(st)
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if l.cfg.Concurrent > 0 {
			select {
			case st.slots <- struct{}{}:
				defer func() { <-st.slots }()
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
