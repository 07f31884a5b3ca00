package stream

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func signalled(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestHub(t *testing.T) {
	h := NewHub(nil)
	events := h.Wake(Events)
	eph := h.Wake(Receipts, Typing)
	var got []Change
	h.OnChange(func(c Change) { got = append(got, c) })

	h.Announce(Change{Stream: Events, Pos: 7, Rooms: []string{"!r"}})
	if !signalled(events) || signalled(eph) {
		t.Fatal("an event wakes the events readers only")
	}
	h.Announce(Change{Stream: Typing})
	h.Announce(Change{Stream: Receipts})
	if signalled(events) || !signalled(eph) || signalled(eph) {
		t.Fatal("two changes leave one pending signal on the channel that follows both")
	}
	if len(got) != 3 || got[0].Pos != 7 || got[0].Rooms[0] != "!r" {
		t.Fatalf("subscriber got %+v", got)
	}
}

type fakeBus struct {
	published chan Change
	incoming  chan Change
}

func (b *fakeBus) Publish(c Change) { b.published <- c }
func (b *fakeBus) Listen(ctx context.Context, fn func(Change)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-b.incoming:
			fn(c)
		}
	}
}

// Changes cross processes through the bus: ours are published, theirs
// delivered here and not published again.
func TestHubBus(t *testing.T) {
	h := NewHub(nil)
	bus := &fakeBus{published: make(chan Change, 4), incoming: make(chan Change)}
	h.Connect(bus)
	defer h.Close()
	wake := h.Wake(Events)
	h.Announce(Change{Stream: Events, Pos: 1})
	if c := <-bus.published; c.Pos != 1 {
		t.Fatalf("published %+v", c)
	}
	<-wake
	got := make(chan Change, 4)
	h.OnChange(func(c Change) { got <- c })
	bus.incoming <- Change{Stream: Events, Pos: 2}
	<-wake
	if c := <-got; !c.Remote || c.Pos != 2 {
		t.Fatalf("a change from another process: %+v", c)
	}
	h.AnnounceLocal(Change{Stream: Events, Pos: 3})
	<-wake
	select {
	case c := <-bus.published:
		t.Fatalf("a change from another process was published again: %+v", c)
	default:
	}
}

// A reader steps while it has more, waits for a wake-up, backs off after
// failures (a kick cuts the wait short) and stops with its context.
func TestReaderLoop(t *testing.T) {
	wake, kick := make(chan struct{}, 1), make(chan struct{}, 1)
	steps := make(chan int, 100)
	var mu sync.Mutex
	script := []error{nil, nil, errors.New("down"), errors.New("down"), nil}
	more := []bool{true, false, false, false, false}
	n := 0
	m := NewMetrics()
	r := &Reader{
		Name: "test", Wake: wake, Kick: kick, Metrics: m,
		Backoff: func() (time.Duration, time.Duration) { return time.Hour, time.Hour },
		Step: func(ctx context.Context) (Progress, error) {
			mu.Lock()
			defer mu.Unlock()
			i := n
			n++
			steps <- i
			if i < len(script) {
				return Progress{More: more[i], Pos: int64(i), Head: 10}, script[i]
			}
			return Progress{Pos: int64(i), Head: 10}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()

	if <-steps != 0 || <-steps != 1 {
		t.Fatal("a step with more is followed by another at once")
	}
	Signal(wake)
	<-steps // 2 fails: the reader waits an hour unless kicked
	waitFor(t, func() bool { st, _ := m.Get("test"); return st.Failures == 1 })
	Signal(kick)
	<-steps // 3 fails again
	waitFor(t, func() bool { st, _ := m.Get("test"); return st.Failures == 2 })
	Signal(kick)
	<-steps // 4 succeeds
	waitFor(t, func() bool { st, _ := m.Get("test"); return st.Failures == 0 && st.Pos == 4 && st.Head == 10 })
	cancel()
	<-done
	if _, ok := m.Get("test"); ok {
		t.Fatal("a stopped reader is still in the metrics")
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

type flakyLeaser struct {
	acquired chan *flakyLease
}

type flakyLease struct{ lost chan struct{} }

func (l *flakyLease) Lost() <-chan struct{} { return l.lost }
func (l *flakyLease) Release()              {}

func (f *flakyLeaser) Acquire(ctx context.Context, name string) (Lease, error) {
	l := &flakyLease{lost: make(chan struct{})}
	select {
	case f.acquired <- l:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// A reader whose lease is lost stops stepping until it holds it again.
func TestReaderLease(t *testing.T) {
	leaser := &flakyLeaser{acquired: make(chan *flakyLease)}
	steps := make(chan struct{}, 100)
	wake := make(chan struct{}, 1)
	r := &Reader{Name: "leased", Wake: wake, Step: func(ctx context.Context) (Progress, error) {
		steps <- struct{}{}
		return Progress{}, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.RunLeased(ctx, leaser); close(done) }()
	first := <-leaser.acquired
	<-steps
	close(first.lost)
	// The reader stops and asks for the lease again; until granted it
	// does not step, wake-ups or not.
	Signal(wake)
	<-leaser.acquired
	for len(steps) > 0 {
		<-steps
	}
	Signal(wake)
	<-steps // steps again under the new lease
	cancel()
	<-done
}
