package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(1, 3)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("action %d refused inside the burst", i)
		}
	}
	ok, retry := l.Allow("a")
	if ok {
		t.Fatal("action past the burst allowed")
	}
	if retry <= 0 || retry > time.Second {
		t.Fatalf("retry after %v, want (0, 1s]", retry)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key must have its own bucket")
	}
	if ok, _ := l.Peek("a"); ok {
		t.Fatal("peek should see the empty bucket")
	}
	now = now.Add(time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refilled action refused")
	}
	l.Reset("a")
	if ok, _ := l.Peek("a"); !ok {
		t.Fatal("reset key should be allowed")
	}
}

func TestDisabled(t *testing.T) {
	l := New(0, 0)
	for range 100 {
		if ok, _ := l.Allow("x"); !ok {
			t.Fatal("disabled limiter refused")
		}
	}
	var nilLimiter *Limiter
	if ok, _ := nilLimiter.Allow("x"); !ok {
		t.Fatal("nil limiter refused")
	}
}

func TestSweepForgetsFullBuckets(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(100, 1)
	l.now = func() time.Time { return now }
	for i := range sweepEvery - 1 {
		l.Allow(string(rune('a' + i%26)))
	}
	now = now.Add(time.Minute)
	l.Allow("z")
	if n := len(l.buckets); n > 1 {
		t.Fatalf("%d buckets kept after sweep, want at most 1", n)
	}
}
