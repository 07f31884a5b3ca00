package main

import (
	"errors"
	"math"
	"slices"
	"sync"
	"time"
)

// ErrNoSamples is returned by statistics over nothing.
var ErrNoSamples = errors.New("no samples")

// Summary describes a set of latency samples.
type Summary struct {
	N                       int
	P50, P95, P99, Max, Min time.Duration
	Mean                    time.Duration
}

// Percentile returns the p-th percentile (0 < p <= 100) of samples by the
// nearest-rank method: the smallest sample such that at least p% of the
// samples are less than or equal to it. samples need not be sorted and is
// not modified.
func Percentile(samples []time.Duration, p float64) (time.Duration, error) {
	if len(samples) == 0 {
		return 0, ErrNoSamples
	}
	if p <= 0 || p > 100 || math.IsNaN(p) {
		return 0, errors.New("percentile out of (0, 100]")
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[nearestRank(len(s), p)], nil
}

func nearestRank(n int, p float64) int {
	r := int(math.Ceil(p/100*float64(n))) - 1
	return max(0, min(r, n-1))
}

// Summarize computes the summary of samples.
func Summarize(samples []time.Duration) (Summary, error) {
	if len(samples) == 0 {
		return Summary{}, ErrNoSamples
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		N: len(s), Min: s[0], Max: s[len(s)-1], Mean: sum / time.Duration(len(s)),
		P50: s[nearestRank(len(s), 50)], P95: s[nearestRank(len(s), 95)], P99: s[nearestRank(len(s), 99)],
	}, nil
}

// Rate is count per second over elapsed; an error when either is zero.
func Rate(count int, elapsed time.Duration) (float64, error) {
	if count <= 0 || elapsed <= 0 {
		return 0, ErrNoSamples
	}
	return float64(count) / elapsed.Seconds(), nil
}

// Recorder collects samples from many goroutines.
type Recorder struct {
	mu      sync.Mutex
	samples []time.Duration
}

// Add records one sample.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

// Samples returns a copy of what was recorded.
func (r *Recorder) Samples() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples)
}
