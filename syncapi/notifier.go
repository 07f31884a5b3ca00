package syncapi

import (
	"sync"
	"time"
)

// Notifier wakes the long-polling syncs that care about a change: those of
// the rooms it happened in and of the users it concerns. Waiting costs
// nothing but a parked goroutine; a wake-up only says "look again", each
// sync then reads from its own token.
type Notifier struct {
	mu     sync.Mutex
	byUser map[string]map[*Waiter]struct{}
	byRoom map[string]map[*Waiter]struct{}
}

// NewNotifier returns an empty notifier.
func NewNotifier() *Notifier {
	return &Notifier{byUser: map[string]map[*Waiter]struct{}{}, byRoom: map[string]map[*Waiter]struct{}{}}
}

// Waiter is one waiting sync.
type Waiter struct {
	n     *Notifier
	user  string
	rooms []string
	ch    chan struct{}
}

// Listen registers a waiter for the user and the rooms they are in. Call it
// before reading, so that nothing written after the read is missed.
func (n *Notifier) Listen(user string, rooms []string) *Waiter {
	w := &Waiter{n: n, user: user, rooms: rooms, ch: make(chan struct{}, 1)}
	n.mu.Lock()
	defer n.mu.Unlock()
	add(n.byUser, user, w)
	for _, r := range rooms {
		add(n.byRoom, r, w)
	}
	return w
}

// C is signalled (at most once until read) when something changed.
func (w *Waiter) C() <-chan struct{} { return w.ch }

// signalled reports, without waiting, whether something changed (and
// takes the signal).
func (w *Waiter) signalled() bool {
	select {
	case <-w.ch:
		return true
	default:
		return false
	}
}

// parkedWaiters keeps, after an answer, the waiter that listened through
// it, under the user and the token the answer handed out: the client's
// next long-poll, which usually comes at once, finds it unsignalled when
// nothing happened for the user since, and waits without reading the
// database first. A client that does not come back leaves it registered
// until it expires.
type parkedWaiters struct {
	mu        sync.Mutex
	m         map[parkedKey]parkedWaiter
	lastSweep time.Time
}

type parkedKey struct{ user, token string }

type parkedWaiter struct {
	w  *Waiter
	at time.Time
}

const (
	maxParked = 100_000
	parkedTTL = time.Minute
)

func (p *parkedWaiters) put(user, token string, w *Waiter) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[parkedKey]parkedWaiter{}
	}
	k := parkedKey{user, token}
	if old, ok := p.m[k]; ok {
		old.w.Close()
	}
	if len(p.m) >= maxParked || now.Sub(p.lastSweep) > parkedTTL {
		p.lastSweep = now
		for k, e := range p.m {
			if len(p.m) >= maxParked || now.Sub(e.at) > parkedTTL {
				e.w.Close()
				delete(p.m, k)
			}
		}
	}
	p.m[k] = parkedWaiter{w: w, at: now}
}

// take returns the waiter parked under the user and token, if any, which
// is then the caller's to close.
func (p *parkedWaiters) take(user, token string) *Waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := parkedKey{user, token}
	e, ok := p.m[k]
	if !ok {
		return nil
	}
	delete(p.m, k)
	if time.Since(e.at) > parkedTTL {
		e.w.Close()
		return nil
	}
	return e.w
}

// Close unregisters the waiter.
func (w *Waiter) Close() {
	n := w.n
	n.mu.Lock()
	defer n.mu.Unlock()
	remove(n.byUser, w.user, w)
	for _, r := range w.rooms {
		remove(n.byRoom, r, w)
	}
}

// WakeRoom wakes the syncs of the room's members.
func (n *Notifier) WakeRoom(roomID string) { n.wake(n.byRoom, roomID) }

// WakeUser wakes the user's syncs.
func (n *Notifier) WakeUser(userID string) { n.wake(n.byUser, userID) }

// Waiting returns the number of registered waiters (for metrics).
func (n *Notifier) Waiting() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, ws := range n.byUser {
		c += len(ws)
	}
	return c
}

func (n *Notifier) wake(index map[string]map[*Waiter]struct{}, key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for w := range index[key] {
		select {
		case w.ch <- struct{}{}:
		default: // already signalled
		}
	}
}

func add(index map[string]map[*Waiter]struct{}, key string, w *Waiter) {
	set := index[key]
	if set == nil {
		set = map[*Waiter]struct{}{}
		index[key] = set
	}
	set[w] = struct{}{}
}

func remove(index map[string]map[*Waiter]struct{}, key string, w *Waiter) {
	if set := index[key]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(index, key)
		}
	}
}
