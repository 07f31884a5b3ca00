package main

import (
	"errors"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentileKnownInputs(t *testing.T) {
	// 1..100 ms, shuffled: nearest rank gives p-th value exactly.
	var in []int
	for i := 100; i >= 1; i-- {
		in = append(in, i)
	}
	s := durations(in...)
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.5, time.Millisecond}} {
		got, err := Percentile(s, tc.p)
		if err != nil || got != tc.want {
			t.Errorf("Percentile(1..100, %v) = %v, %v; want %v", tc.p, got, err, tc.want)
		}
	}
	if s[0] != 100*time.Millisecond {
		t.Error("Percentile sorted its input in place")
	}
	// Small sets: nearest rank of 4 samples.
	s = durations(40, 10, 30, 20)
	for p, want := range map[float64]time.Duration{25: 10 * time.Millisecond, 50: 20 * time.Millisecond, 51: 30 * time.Millisecond, 99: 40 * time.Millisecond} {
		if got, _ := Percentile(s, p); got != want {
			t.Errorf("Percentile(10..40, %v) = %v, want %v", p, got, want)
		}
	}
	one := durations(7)
	if got, _ := Percentile(one, 99); got != 7*time.Millisecond {
		t.Errorf("single sample p99 = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	sum, err := Summarize(durations(5, 1, 3, 2, 4))
	if err != nil {
		t.Fatal(err)
	}
	ms := time.Millisecond
	if sum.N != 5 || sum.Min != ms || sum.Max != 5*ms || sum.P50 != 3*ms || sum.P99 != 5*ms || sum.Mean != 3*ms {
		t.Errorf("Summarize = %+v", sum)
	}
}

func TestEmptyInputErrors(t *testing.T) {
	if _, err := Percentile(nil, 50); !errors.Is(err, ErrNoSamples) {
		t.Errorf("Percentile(nil) error = %v", err)
	}
	if _, err := Summarize(nil); !errors.Is(err, ErrNoSamples) {
		t.Errorf("Summarize(nil) error = %v", err)
	}
	if _, err := Rate(0, time.Second); err == nil {
		t.Error("Rate(0) did not fail")
	}
	if _, err := Percentile(durations(1), 0); err == nil {
		t.Error("Percentile p=0 did not fail")
	}
	if _, err := Percentile(durations(1), 101); err == nil {
		t.Error("Percentile p=101 did not fail")
	}
}

func TestRate(t *testing.T) {
	if r, err := Rate(500, 2*time.Second); err != nil || r != 250 {
		t.Errorf("Rate = %v, %v", r, err)
	}
}
