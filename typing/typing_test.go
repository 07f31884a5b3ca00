package typing

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// clock is a hand-driven clock and timer: nothing happens until the test
// moves time and fires the timer.
type clock struct {
	mu    sync.Mutex
	now   time.Time
	f     func()
	due   time.Time
	armed bool
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *clock) after(d time.Duration, f func()) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.f = f
	c.due, c.armed = c.now.Add(d), true
	return c
}

func (c *clock) Stop() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.armed
	c.armed = false
	return was
}

func (c *clock) Reset(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.armed
	c.due, c.armed = c.now.Add(d), true
	return was
}

// fire runs the timer if it is armed and due, as the runtime would.
func (c *clock) fire(t *testing.T) bool {
	t.Helper()
	c.mu.Lock()
	run := c.armed && !c.now.Before(c.due)
	if run {
		c.armed = false
	}
	f := c.f
	c.mu.Unlock()
	if run {
		f()
	}
	return run
}

func (c *clock) wake() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.due, c.armed
}

type recorder struct {
	mu      sync.Mutex
	rooms   []string
	notices []Notice
}

func (r *recorder) notify(room string, n *Notice) {
	r.mu.Lock()
	r.rooms = append(r.rooms, room)
	if n != nil {
		r.notices = append(r.notices, *n)
	}
	r.mu.Unlock()
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.rooms
	r.rooms = nil
	return got
}

func newTest(t *testing.T) (*Service, *clock, *recorder) {
	c := &clock{now: time.Unix(1_700_000_000, 0)}
	rec := &recorder{}
	s := newService(rec.notify, c.Now, c.after)
	t.Cleanup(s.Close)
	return s, c, rec
}

func TestSetStopAndPositions(t *testing.T) {
	s, _, rec := newTest(t)
	start := s.Pos()
	s.Set("!a", "@bob:x", true, 0)
	s.Set("!a", "@alice:x", true, 10*time.Second)
	if got := s.Typing("!a"); !slices.Equal(got, []string{"@alice:x", "@bob:x"}) {
		t.Fatalf("typing %v", got)
	}
	p := s.Pos()
	if p != start+2 {
		t.Fatalf("pos %d after two changes from %d", p, start)
	}
	// Renewing is not a change, nor is stopping when not typing.
	s.Set("!a", "@bob:x", true, 0)
	s.Set("!b", "@bob:x", false, 0)
	if s.Pos() != p {
		t.Fatal("no-op changes moved the position")
	}
	s.Set("!a", "@bob:x", false, 0)
	if got := s.Typing("!a"); !slices.Equal(got, []string{"@alice:x"}) {
		t.Fatalf("typing after stop %v", got)
	}
	if got := s.ChangedSince(p); !slices.Equal(got, []string{"!a"}) {
		t.Fatalf("changed since %d: %v", p, got)
	}
	if got := s.ChangedSince(s.Pos()); len(got) != 0 {
		t.Fatalf("changed since now: %v", got)
	}
	if got := rec.take(); !slices.Equal(got, []string{"!a", "!a", "!a"}) {
		t.Fatalf("notified %v", got)
	}
	if got := s.Typing("!nowhere"); got == nil || len(got) != 0 {
		t.Fatalf("typing in an empty room: %#v", got)
	}
}

func TestTimerExpiry(t *testing.T) {
	s, c, rec := newTest(t)
	t0 := c.Now()
	s.Set("!a", "@alice:x", true, 5*time.Second)
	s.Set("!b", "@bob:x", true, 0) // default timeout
	s.Set("!c", "@carol:x", true, time.Hour)
	rec.take()
	if due, armed := c.wake(); !armed || !due.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("timer %v armed %v, want at 5s", due, armed)
	}
	p := s.Pos()

	c.advance(4 * time.Second)
	if c.fire(t) {
		t.Fatal("timer fired early")
	}
	c.advance(time.Second)
	if !c.fire(t) {
		t.Fatal("timer did not fire when due")
	}
	if got := rec.take(); !slices.Equal(got, []string{"!a"}) {
		t.Fatalf("expiry notified %v, want [!a]", got)
	}
	if got := s.Typing("!a"); len(got) != 0 {
		t.Fatalf("expired notice still shown: %v", got)
	}
	if got := s.ChangedSince(p); !slices.Equal(got, []string{"!a"}) {
		t.Fatalf("changed since %d: %v", p, got)
	}
	// Next wake-up is the default timeout's end; the hour is capped.
	if due, armed := c.wake(); !armed || !due.Equal(t0.Add(DefaultTimeout)) {
		t.Fatalf("timer %v armed %v, want at %v", due, armed, DefaultTimeout)
	}
	c.advance(DefaultTimeout)
	c.fire(t)
	if due, armed := c.wake(); !armed || !due.Equal(t0.Add(MaxTimeout)) {
		t.Fatalf("timer %v armed %v, want at the %v cap", due, armed, MaxTimeout)
	}
	c.advance(MaxTimeout)
	c.fire(t)
	if got := rec.take(); !slices.Equal(got, []string{"!b", "!c"}) {
		t.Fatalf("expiries notified %v", got)
	}
	if _, armed := c.wake(); armed {
		t.Fatal("timer still armed with nobody typing")
	}
}

// A reader that comes first drops the expired notice at once, and the
// timer, woken immediately, announces it.
func TestLazyExpiry(t *testing.T) {
	s, c, rec := newTest(t)
	s.Set("!a", "@alice:x", true, 5*time.Second)
	rec.take()
	p := s.Pos()
	c.advance(time.Minute) // the timer is late
	if got := s.Typing("!a"); len(got) != 0 {
		t.Fatalf("expired notice shown: %v", got)
	}
	if s.Pos() != p+1 {
		t.Fatal("expiry did not move the position")
	}
	if len(rec.take()) != 0 {
		t.Fatal("a reader's goroutine ran notify")
	}
	if due, armed := c.wake(); !armed || due.After(c.Now()) {
		t.Fatalf("timer %v armed %v, want due now", due, armed)
	}
	c.fire(t)
	if got := rec.take(); !slices.Equal(got, []string{"!a"}) {
		t.Fatalf("notified %v", got)
	}
	// Typing again after expiry is a change of its own.
	s.Set("!a", "@alice:x", true, 0)
	if s.Pos() <= p+1 || !slices.Equal(rec.take(), []string{"!a"}) {
		t.Fatal("typing again after expiry was not a change")
	}
}

func TestCloseStopsTimer(t *testing.T) {
	s, c, rec := newTest(t)
	s.Set("!a", "@alice:x", true, time.Second)
	s.Close()
	if _, armed := c.wake(); armed {
		t.Fatal("Close left the timer armed")
	}
	c.advance(time.Minute)
	if got := s.Typing("!a"); len(got) != 0 {
		t.Fatalf("expired notice shown after Close: %v", got)
	}
	rec.take()
	s.Set("!a", "@bob:x", true, 0) // still usable, without timers
	if _, armed := c.wake(); armed {
		t.Fatal("timer armed after Close")
	}
}

// The real timer (race detector on): concurrent writers and readers, and a
// notice that expires by itself and wakes its waiter.
func TestConcurrentRealTimer(t *testing.T) {
	woke := make(chan string, 100)
	s := New(func(room string, _ *Notice) {
		select {
		case woke <- room:
		default:
		}
	})
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := "@u" + string(rune('a'+i)) + ":x"
			for j := range 50 {
				s.Set("!r", user, j%2 == 0, time.Hour)
				_ = s.Typing("!r")
				_ = s.ChangedSince(s.Pos() - 1)
			}
		}()
	}
	wg.Wait()
	if got := s.Typing("!r"); len(got) != 0 {
		t.Fatalf("everyone stopped, yet typing: %v", got)
	}
	for len(woke) > 0 {
		<-woke
	}
	s.Set("!short", "@a:x", true, time.Millisecond)
	<-woke // the Set itself
	if room := <-woke; room != "!short" {
		t.Fatalf("woken for %s", room)
	}
	if got := s.Typing("!short"); len(got) != 0 {
		t.Fatalf("expired notice shown: %v", got)
	}
}

// Two processes keep the same state: what one receives it shares, the
// other applies; each expires notices at the same deadline by itself.
func TestSharedBetweenProcesses(t *testing.T) {
	a, c, recA := newTest(t)
	b := newService(nil, c.Now, c.after)
	t.Cleanup(b.Close)
	a.Set("!r", "@alice:x", true, 10*time.Second)
	recA.mu.Lock()
	shared := recA.notices
	recA.mu.Unlock()
	if len(shared) != 1 || shared[0].UserID != "@alice:x" || !shared[0].Typing || shared[0].Pos != a.Pos() {
		t.Fatalf("shared notice %+v", shared)
	}
	before := b.Pos()
	b.Apply(shared[0])
	if got := b.Typing("!r"); !slices.Equal(got, []string{"@alice:x"}) {
		t.Fatalf("applied: %v", got)
	}
	if b.Pos() <= before || b.Pos() < shared[0].Pos {
		t.Fatalf("position %d after applying a notice at %d (was %d)", b.Pos(), shared[0].Pos, before)
	}
	if got := b.ChangedSince(before); !slices.Equal(got, []string{"!r"}) {
		t.Fatalf("changed since %v", got)
	}
	// A notice whose deadline passed is not applied.
	b.Apply(Notice{RoomID: "!s", UserID: "@bob:x", Typing: true, Until: c.Now().Add(-time.Second).UnixMilli(), Pos: 1})
	if len(b.Typing("!s")) != 0 {
		t.Fatal("expired notice applied")
	}
	c.advance(11 * time.Second)
	if len(a.Typing("!r")) != 0 || len(b.Typing("!r")) != 0 {
		t.Fatal("both expire the notice at its deadline")
	}
	// Stopping is shared too.
	a.Set("!r", "@carol:x", true, 0)
	a.Set("!r", "@carol:x", false, 0)
	recA.mu.Lock()
	stop := recA.notices[len(recA.notices)-1]
	start := recA.notices[len(recA.notices)-2]
	recA.mu.Unlock()
	b.Apply(start)
	b.Apply(stop)
	if stop.Typing || len(b.Typing("!r")) != 0 {
		t.Fatalf("stop %+v; b has %v", stop, b.Typing("!r"))
	}
}
