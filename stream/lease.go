package stream

import (
	"context"
	"log/slog"
	"time"
)

// Leaser hands out leases on readers, so that each reader runs in exactly
// one process of a deployment at a time.
type Leaser interface {
	// Acquire blocks until this process holds the lease on name, or ctx
	// ends.
	Acquire(ctx context.Context, name string) (Lease, error)
}

// Lease is a held lease.
type Lease interface {
	// Lost is closed when the lease could not be kept (this process could
	// not renew it in time): the reader must stop, another process may
	// take over.
	Lost() <-chan struct{}
	Release()
}

// Local is the leaser of a single process: every lease is granted at once
// and never lost.
type Local struct{}

// Acquire implements Leaser.
func (Local) Acquire(ctx context.Context, name string) (Lease, error) { return localLease{}, ctx.Err() }

type localLease struct{}

func (localLease) Lost() <-chan struct{} { return nil }
func (localLease) Release()              {}

// Never is the leaser of a process that must not run background readers:
// it never grants a lease.
type Never struct{}

// Acquire implements Leaser: it waits for ctx to end.
func (Never) Acquire(ctx context.Context, name string) (Lease, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// RunLeased runs the reader whenever this process holds its lease: it
// waits for the lease, runs until the lease is lost or ctx ends, and then
// waits for the lease again.
func (r *Reader) RunLeased(ctx context.Context, l Leaser) {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	for ctx.Err() == nil {
		lease, err := l.Acquire(ctx, r.Name)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("acquiring reader lease", "reader", r.Name, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		runCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lease.Lost():
				log.Warn("reader lease lost; stopping it here", "reader", r.Name)
				cancel()
			case <-runCtx.Done():
			}
		}()
		r.Run(runCtx)
		cancel()
		lease.Release()
	}
}
