package stream

import (
	"context"
	"sync"
)

// Runner runs one background goroutine (a service's reader) from Start
// until Stop. Starting a running Runner does nothing; Stop waits for the
// goroutine to return.
type Runner struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs run in a goroutine until Stop cancels its context.
func (r *Runner) Start(run func(ctx context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.cancel, r.done = cancel, done
	go func() {
		defer close(done)
		run(ctx)
	}()
}

// Stop cancels the goroutine and waits for it.
func (r *Runner) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel = nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
