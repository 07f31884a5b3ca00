package rooms

import (
	"context"
	"slices"

	"homeserver/pdu"
)

// queuedEvent is a batchable event waiting to be written.
type queuedEvent struct {
	p    pdu.Proto
	ne   NewEvent
	done chan struct{}
	ev   *pdu.Event
	pos  int64
	err  error
}

// batchable tells whether an event may share its commit with others: it
// creates no room and is this server's own, so that the state after it is
// the room's current state with it applied (no branches to resolve). The
// events after a state event in the same batch are authorised against the
// state it made (writeBatch).
func batchable(ne NewEvent) bool {
	return ne.Room == nil && ne.StateAfter == nil && ne.CurrentState == nil && !ne.Received
}

// submitBatched queues the event and waits for the write lock; whoever
// takes it first writes every event queued by then in one transaction.
// Concurrent senders so share commits instead of queueing for one each.
func (s *Service) submitBatched(ctx context.Context, p pdu.Proto, ne NewEvent) (*pdu.Event, error) {
	q := &queuedEvent{p: p, ne: ne, done: make(chan struct{})}
	s.queueMu.Lock()
	s.queue = append(s.queue, q)
	s.queueMu.Unlock()
	s.write.Lock()
	select {
	case <-q.done: // an earlier holder of the lock wrote it
	default:
		s.queueMu.Lock()
		batch := s.queue
		s.queue = nil
		s.queueMu.Unlock()
		// The batch is others' too: it is written even if this request
		// goes away meanwhile.
		s.writeBatch(context.WithoutCancel(ctx), batch)
	}
	s.write.Unlock()
	<-q.done
	return q.ev, q.err
}

// writeBatch builds, authorises and writes the queued events, in order,
// under the write lock: each builds on the one before it in its room,
// and all are persisted in one transaction; then each is announced and
// its sender woken. Should that transaction fail, each event is written
// on its own, as it would have been without the others.
func (s *Service) writeBatch(ctx context.Context, batch []*queuedEvent) {
	defer func() {
		for _, q := range batch {
			close(q.done)
		}
	}()
	roomIDs := make([]string, 0, len(batch))
	for _, q := range batch {
		roomIDs = append(roomIDs, q.p.RoomID)
	}
	slices.Sort(roomIDs)
	roomIDs = slices.Compact(roomIDs)
	// In one order, so that two processes' batches cannot deadlock.
	for _, roomID := range roomIDs {
		unlock, err := s.store.LockRoom(ctx, roomID)
		if err != nil {
			for _, q := range batch {
				q.err = err
			}
			return
		}
		defer unlock()
	}
	if len(batch) == 1 {
		q := batch[0]
		q.ev, q.pos, q.err = s.submitLocked(ctx, q.p, q.ne)
		s.announceBatch(batch)
		return
	}
	type head struct {
		version string
		prevs   []string
		depth   int64
		// changed is the state the batch's events built so far changed.
		changed authState
	}
	heads := map[string]*head{}
	txns := map[TxnRef]*queuedEvent{}
	dups := map[*queuedEvent]*queuedEvent{}
	var built []*queuedEvent
	var nes []NewEvent
	for _, q := range batch {
		if t := q.ne.Txn; t != nil {
			if first, ok := txns[*t]; ok {
				dups[q] = first // the same request twice at once
				continue
			}
			ev, ok, err := s.txnEvent(ctx, *t)
			if ok || err != nil {
				q.ev, q.err = ev, err
				continue
			}
			txns[*t] = q
		}
		h := heads[q.p.RoomID]
		if h == nil {
			version, prevs, depth, err := s.roomHead(ctx, q.p.RoomID)
			if err != nil {
				q.err = err
				continue
			}
			h = &head{version: version, prevs: prevs, depth: depth}
			heads[q.p.RoomID] = h
		}
		state, err := s.authStateFor(ctx, q.p, h.version)
		if err != nil {
			q.err = err
			continue
		}
		if len(h.changed) > 0 {
			// authStateFor read the state before the batch: the keys it
			// needed are taken from the batch where it changed them.
			keys, _ := pdu.NeededForAuth(q.p, h.version)
			for _, k := range keys {
				if ev, ok := h.changed[k]; ok {
					state[k] = ev
				}
			}
		}
		ev, err := s.buildAllowed(q.p, h.version, h.prevs, h.depth+1, state)
		if err != nil {
			q.err = err
			continue
		}
		h.prevs, h.depth = []string{ev.ID()}, ev.Depth()
		if sk := ev.StateKey(); sk != nil {
			if h.changed == nil {
				h.changed = authState{}
			}
			h.changed[pdu.StateKey{Type: ev.Type(), StateKey: *sk}] = ev
		}
		q.ev, q.ne.Event = ev, ev
		built = append(built, q)
		nes = append(nes, q.ne)
	}
	if len(nes) > 0 {
		positions, err := s.store.PersistEvents(ctx, nes)
		if err == nil {
			for i, q := range built {
				q.pos = positions[i]
			}
		} else {
			s.log.Warn("writing a batch of events failed; writing them one by one", "events", len(nes), "err", err)
			for _, q := range built {
				q.ev, q.pos, q.err = s.submitLocked(ctx, q.p, q.ne)
			}
		}
	}
	for q, first := range dups {
		q.ev, q.err = first.ev, first.err
	}
	s.announceBatch(batch)
}

func (s *Service) announceBatch(batch []*queuedEvent) {
	for _, q := range batch {
		if q.err == nil && q.pos > 0 {
			s.announce(Persisted{Pos: q.pos, RoomID: q.ev.RoomID(), EventID: q.ev.ID(), Type: q.ev.Type(), StateKey: q.ev.StateKey()})
		}
	}
}
