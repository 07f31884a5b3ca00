package syncapi

import "sync"

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
