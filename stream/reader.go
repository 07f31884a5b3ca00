package stream

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Progress is what one step of a reader reports.
type Progress struct {
	// More is set when there is more to do already: the loop steps again
	// without waiting for a wake-up.
	More bool
	// Pos is the reader's cursor after the step and Head the end of what it
	// follows, for the lag gauge (both 0 when they mean nothing).
	Pos, Head int64
}

// Reader is one durable reader: its step reads from its cursor, handles
// what it found and moves the cursor, all through the database.
type Reader struct {
	// Name is unique among readers and labels the metrics
	// ("appservice:irc", "push:evaluator", "pusher:12").
	Name string
	// Start, when set, reads the reader's state before its first step:
	// each time this process takes the reader, which another process may
	// have run until then. A failure is retried like a step's.
	Start func(ctx context.Context) error
	Step  func(ctx context.Context) (Progress, error)
	// Wake says "look again"; Kick ends a backoff wait early.
	Wake, Kick <-chan struct{}
	// Poll, when set, steps at least this often even without a wake-up.
	Poll time.Duration
	// Spacing, when set, starts a step that follows a wake-up at least
	// this long after the previous step started: under load, what
	// arrives meanwhile is handled in one step (one transaction, one
	// commit) instead of one step per event. After a quiet spell, or a
	// step that reported More, the next step goes at once.
	Spacing time.Duration
	// Backoff gives the first wait after a failure and the cap; the wait
	// doubles with each further failure. Read at each failure, so that it
	// may change while the reader runs.
	Backoff func() (base, max time.Duration)
	Log     *slog.Logger
	Metrics *Metrics
}

// Run steps the reader until ctx ends: again at once while it reports
// more, then on each wake-up (or poll); after a failure, again after a
// backoff that doubles up to its cap.
func (r *Reader) Run(ctx context.Context) {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	st := r.Metrics.add(r.Name)
	defer r.Metrics.remove(r.Name, st)
	failures := 0
	var failedAt time.Time
	var poll <-chan time.Time
	started := r.Start == nil
	var lastStep time.Time
	for ctx.Err() == nil {
		var p Progress
		var err error
		lastStep = time.Now()
		if !started {
			if err = r.Start(ctx); err == nil {
				started = true
				p.More = true
			}
		} else {
			p, err = r.Step(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if failures == 0 {
				failedAt = time.Now()
				log.Warn("reader failing; retrying with backoff", "reader", r.Name, "err", err, "pos", st.pos.Load())
			} else {
				log.Debug("reader still failing", "reader", r.Name, "err", err, "attempts", failures+1)
			}
			failures++
			st.failures.Store(int64(failures))
			st.lastFailure.Store(time.Now().UnixNano())
			base, maxDelay := time.Second, 5*time.Minute
			if r.Backoff != nil {
				base, maxDelay = r.Backoff()
			}
			wait := base
			for i := 1; i < failures && wait < maxDelay; i++ {
				wait *= 2
			}
			wait = min(wait, maxDelay)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-r.Kick:
			}
			t.Stop()
			continue
		}
		if failures > 0 {
			log.Info("reader recovered", "reader", r.Name, "failed_attempts", failures,
				"outage", time.Since(failedAt).Round(time.Millisecond))
			failures = 0
			st.failures.Store(0)
		}
		st.lastSuccess.Store(time.Now().UnixNano())
		if p.Pos > 0 || p.Head > 0 {
			st.pos.Store(p.Pos)
			st.head.Store(max(p.Head, p.Pos))
		}
		if p.More {
			continue
		}
		var timer *time.Timer
		if r.Poll > 0 {
			timer = time.NewTimer(r.Poll)
			poll = timer.C
		}
		select {
		case <-ctx.Done():
		case <-r.Wake:
		case <-r.Kick:
		case <-poll:
		}
		if timer != nil {
			timer.Stop()
		}
		if wait := r.Spacing - time.Since(lastStep); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// Metrics is the one family of reader gauges, labelled by reader.
type Metrics struct {
	mu      sync.Mutex
	readers map[string]*readerState

	pos, lag, failures, lastSuccess, lastFailure *prometheus.Desc
}

type readerState struct {
	pos, head, failures, lastSuccess, lastFailure atomic.Int64
}

// NewMetrics returns the reader metrics; register them with a Prometheus
// registry to export them.
func NewMetrics() *Metrics {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("homeserver_reader_"+name, help, []string{"reader"}, nil)
	}
	return &Metrics{
		readers:     map[string]*readerState{},
		pos:         desc("position", "The reader's durable cursor in the stream it follows."),
		lag:         desc("lag", "Positions of the stream written but not yet handled by the reader."),
		failures:    desc("consecutive_failures", "Failed steps since the reader's last success."),
		lastSuccess: desc("last_success_timestamp_seconds", "When a step last succeeded (0: never since start)."),
		lastFailure: desc("last_failure_timestamp_seconds", "When a step last failed (0: never since start)."),
	}
}

// State is what the metrics know of a running reader (for tests and
// status pages).
type State struct {
	Pos, Head, Failures int64
}

// Get returns a running reader's state.
func (m *Metrics) Get(name string) (State, bool) {
	if m == nil {
		return State{}, false
	}
	m.mu.Lock()
	st := m.readers[name]
	m.mu.Unlock()
	if st == nil {
		return State{}, false
	}
	return State{Pos: st.pos.Load(), Head: st.head.Load(), Failures: st.failures.Load()}, true
}

func (m *Metrics) add(name string) *readerState {
	st := &readerState{}
	if m == nil {
		return st
	}
	m.mu.Lock()
	m.readers[name] = st
	m.mu.Unlock()
	return st
}

func (m *Metrics) remove(name string, st *readerState) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.readers[name] == st {
		delete(m.readers, name)
	}
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.pos, m.lag, m.failures, m.lastSuccess, m.lastFailure} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seconds := func(ns int64) float64 { return float64(ns) / 1e9 }
	for name, st := range m.readers {
		pos, head := st.pos.Load(), st.head.Load()
		ch <- prometheus.MustNewConstMetric(m.pos, prometheus.GaugeValue, float64(pos), name)
		ch <- prometheus.MustNewConstMetric(m.lag, prometheus.GaugeValue, float64(max(head-pos, 0)), name)
		ch <- prometheus.MustNewConstMetric(m.failures, prometheus.GaugeValue, float64(st.failures.Load()), name)
		ch <- prometheus.MustNewConstMetric(m.lastSuccess, prometheus.GaugeValue, seconds(st.lastSuccess.Load()), name)
		ch <- prometheus.MustNewConstMetric(m.lastFailure, prometheus.GaugeValue, seconds(st.lastFailure.Load()), name)
	}
}
