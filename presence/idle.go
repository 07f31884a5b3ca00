package presence

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"homeserver/stream"
)

// Users who stop syncing (and so stop refreshing last_active every
// activeRefresh) are marked offline once idleTimeout has passed, so that
// closed clients do not appear online for ever.
const (
	idleTimeout  = 5 * time.Minute
	idleInterval = 30 * time.Second
)

// idleStore is the part of the store the idle sweep needs.
type idleStore interface {
	// StalePresence lists the users not offline whose last activity is
	// older than before (ms).
	StalePresence(ctx context.Context, before int64) ([]string, error)
}

// ExpireIdle marks offline every user idle for longer than idleTimeout and
// returns how many changed. Each change gets a new stream position and
// wakes the syncs of the user's rooms, like any other presence change.
func (s *Service) ExpireIdle(ctx context.Context) (int, error) {
	st, ok := s.store.(idleStore)
	if !ok {
		return 0, nil
	}
	before := s.now().Add(-idleTimeout).UnixMilli()
	users, err := st.StalePresence(ctx, before)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, u := range users {
		changed, err := s.update(ctx, u, func(cur Status, found bool) (Status, bool) {
			// Re-decided inside the write: a sync may have refreshed it.
			if !found || cur.Presence == Offline || cur.LastActiveTS >= before {
				return cur, false
			}
			cur.Presence, cur.CurrentlyActive = Offline, false
			return cur, true
		})
		if err != nil {
			return n, err
		}
		if changed {
			n++
		}
	}
	return n, nil
}

// idleSweeper runs ExpireIdle periodically until stopped.
type idleSweeper struct {
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}
}

// StartIdleSweep starts the periodic sweep (once; later calls do nothing),
// as a reader of the spine: in one process of a deployment at a time, as
// leaser decides.
func (s *Service) StartIdleSweep(log *slog.Logger, metrics *stream.Metrics, leaser stream.Leaser) {
	s.sweep.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.sweep.cancel, s.sweep.done = cancel, make(chan struct{})
		r := &stream.Reader{
			Name: "presence:idle", Poll: idleInterval, Log: log, Metrics: metrics,
			Backoff: func() (time.Duration, time.Duration) { return idleInterval, idleInterval },
			Step: func(ctx context.Context) (stream.Progress, error) {
				n, err := s.ExpireIdle(ctx)
				if n > 0 {
					log.Debug("marked idle users offline", "count", n)
				}
				return stream.Progress{}, err
			},
		}
		go func() {
			defer close(s.sweep.done)
			r.RunLeased(ctx, leaser)
		}()
	})
}

// StopIdleSweep stops the sweep and waits for it.
func (s *Service) StopIdleSweep() {
	if s.sweep.cancel != nil {
		s.sweep.cancel()
		<-s.sweep.done
	}
}
