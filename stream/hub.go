package stream

import (
	"context"
	"log/slog"
	"sync"
)

// Bus carries announcements between the processes of one deployment
// (PostgreSQL LISTEN/NOTIFY). A single process needs none.
type Bus interface {
	// Publish sends a change to the other processes. It must not block
	// for long; a lost message costs a reader its wake-up until the next
	// change or poll, never data.
	Publish(c Change)
	// Listen delivers the other processes' changes to fn until ctx ends.
	Listen(ctx context.Context, fn func(Change)) error
}

// Hub is where writers announce changes and readers learn of them: the
// sync notifier, each durable reader's wake channel, and, through the bus,
// the other processes.
type Hub struct {
	log *slog.Logger

	mu      sync.Mutex
	subs    []func(Change)
	wakers  map[Name][]chan struct{}
	bus     Bus
	stopBus context.CancelFunc
}

// NewHub returns a hub for one process.
func NewHub(log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{log: log, wakers: map[Name][]chan struct{}{}}
}

// Connect makes the hub publish on and listen to bus, until Close.
func (h *Hub) Connect(bus Bus) {
	ctx, cancel := context.WithCancel(context.Background())
	h.mu.Lock()
	h.bus, h.stopBus = bus, cancel
	h.mu.Unlock()
	go func() {
		remote := func(c Change) {
			c.Remote = true
			h.deliver(c)
		}
		if err := bus.Listen(ctx, remote); err != nil && ctx.Err() == nil {
			h.log.Error("listening for other processes' changes stopped", "err", err)
		}
	}()
}

// Close stops listening to the bus.
func (h *Hub) Close() {
	h.mu.Lock()
	stop := h.stopBus
	h.stopBus, h.bus = nil, nil
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// OnChange registers fn for every change, local or from another process.
// fn must not block. Call before serving.
func (h *Hub) OnChange(fn func(Change)) {
	h.mu.Lock()
	h.subs = append(h.subs, fn)
	h.mu.Unlock()
}

// Wake returns a channel signalled (at most once until read) whenever one
// of the streams changes.
func (h *Hub) Wake(streams ...Name) <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	for _, s := range streams {
		h.wakers[s] = append(h.wakers[s], ch)
	}
	h.mu.Unlock()
	return ch
}

// Announce tells this process and the others that a change committed.
func (h *Hub) Announce(c Change) {
	h.deliver(c)
	h.mu.Lock()
	bus := h.bus
	h.mu.Unlock()
	if bus != nil {
		bus.Publish(c)
	}
}

// AnnounceLocal tells only this process of a change: one that every
// process makes by itself (a typing notice expiring).
func (h *Hub) AnnounceLocal(c Change) { h.deliver(c) }

// deliver hands a change to this process's subscribers.
func (h *Hub) deliver(c Change) {
	h.mu.Lock()
	subs := h.subs
	wakers := h.wakers[c.Stream]
	h.mu.Unlock()
	for _, ch := range wakers {
		Signal(ch)
	}
	for _, fn := range subs {
		fn(c)
	}
}

// Signal sends on a wake channel without blocking: one pending signal is
// as good as many.
func Signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
