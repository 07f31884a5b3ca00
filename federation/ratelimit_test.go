package federation

import (
	"testing"
	"time"
)

func TestOriginLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newOriginLimiter(RateLimit{Window: time.Second, SleepLimit: 2, SleepDelay: 500 * time.Millisecond, RejectLimit: 4, Concurrent: 1}, func() time.Time { return now })
	var delays []time.Duration
	for range 4 {
		st, d, _, ok := l.admit("a.test")
		if !ok {
			t.Fatal("refused within the reject limit")
		}
		l.done(st)
		delays = append(delays, d)
	}
	if delays[0] != 0 || delays[1] != 0 || delays[2] != 500*time.Millisecond || delays[3] != 500*time.Millisecond {
		t.Errorf("delays %v: want the first 2 at once, then 500ms each", delays)
	}
	if _, _, retry, ok := l.admit("a.test"); ok || retry <= 0 || retry > time.Second {
		t.Errorf("fifth request: ok %v retry %v; want refused until the window ends", ok, retry)
	}
	// Another origin is not affected; a new window starts afresh.
	if _, d, _, ok := l.admit("b.test"); !ok || d != 0 {
		t.Errorf("other origin: ok %v delay %v", ok, d)
	}
	now = now.Add(time.Second)
	if _, d, _, ok := l.admit("a.test"); !ok || d != 0 {
		t.Errorf("next window: ok %v delay %v", ok, d)
	}
}
