// Package ratelimit implements Synapse's rc_* limits: token buckets keyed by
// client IP or user, refilled at per_second and holding burst_count.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sweepEvery bounds the work of forgetting idle keys.
const sweepEvery = 1024

// Limiter holds one token bucket per key. A zero per-second rate with a zero
// burst disables the limiter.
type Limiter struct {
	limit    rate.Limit
	burst    int
	disabled bool
	now      func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	ops     int
}

// New returns a limiter of perSecond actions with bursts of burst.
func New(perSecond float64, burst int) *Limiter {
	l := &Limiter{limit: rate.Limit(perSecond), burst: burst, now: time.Now, buckets: map[string]*rate.Limiter{}}
	if perSecond <= 0 && burst <= 0 {
		l.disabled = true
	}
	if burst <= 0 {
		l.burst = 1
	}
	return l
}

// Allow takes one action for key. When refused it returns how long until the
// next action would be allowed.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.disabled {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[key] = b
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Peek reports whether an action would be allowed now without taking it.
func (l *Limiter) Peek(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.disabled {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil || b.TokensAt(now) >= 1 {
		return true, 0
	}
	missing := 1 - b.TokensAt(now)
	if l.limit <= 0 {
		return false, time.Duration(math.MaxInt64)
	}
	return false, time.Duration(missing / float64(l.limit) * float64(time.Second))
}

// Reset forgets key, e.g. after a successful login.
func (l *Limiter) Reset(key string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	delete(l.buckets, key)
	l.mu.Unlock()
}

// sweep drops full buckets now and then: a full bucket is the same as no
// bucket, so memory stays bounded by the keys that are actually limited.
func (l *Limiter) sweep(now time.Time) {
	l.ops++
	if l.ops%sweepEvery != 0 {
		return
	}
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
}
