package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// wakeFilter keeps the long-polls to the room timeline.
const wakeFilter = `{"presence":{"types":[]},"account_data":{"types":[]},"room":{"timeline":{"limit":20},"state":{"lazy_load_members":true},"ephemeral":{"types":[]},"account_data":{"types":[]}}}`

// arrivals records when each member's /sync returned each event.
type arrivals struct {
	mu     sync.Mutex
	seen   map[string][]time.Time // event ID -> arrival times
	notify chan struct{}
}

func (a *arrivals) record(eventID string, t time.Time) {
	a.mu.Lock()
	a.seen[eventID] = append(a.seen[eventID], t)
	a.mu.Unlock()
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// wait returns the arrival times of eventID once want members saw it.
func (a *arrivals) wait(ctx context.Context, eventID string, want int, timeout time.Duration) ([]time.Time, error) {
	deadline := time.After(timeout)
	for {
		a.mu.Lock()
		got := a.seen[eventID]
		a.mu.Unlock()
		if len(got) >= want {
			return got, nil
		}
		select {
		case <-a.notify:
		case <-deadline:
			return got, fmt.Errorf("only %d of %d members saw %s within %s", len(got), want, eventID, timeout)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// runSyncWake: N members long-poll /sync in one room; one sender sends S
// messages one at a time; the latency is from the send's response to each
// member's /sync returning the event.
func runSyncWake(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.WakeMembers < 1 || o.WakeSends < 1 {
		return nil, errors.New("sync-wake: -wake-members and -wake-sends must be positive")
	}
	r := &Result{Params: map[string]string{"N": fmt.Sprint(o.WakeMembers), "S": fmt.Sprint(o.WakeSends)}}
	users, err := b.Users(ctx, "wake", o.WakeMembers+1)
	if err != nil {
		return nil, fmt.Errorf("registering users: %w", err)
	}
	sender, members := users[0], users[1:]
	room, err := b.C.CreateRoom(ctx, sender, b.Prefix+" sync-wake")
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if err := b.C.Join(ctx, m, room); err != nil {
			return nil, err
		}
	}
	arr := &arrivals{seen: map[string][]time.Time{}, notify: make(chan struct{}, 1)}
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	g, gctx := errgroup.WithContext(pollCtx)
	ready := make(chan struct{}, len(members))
	for _, m := range members {
		g.Go(func() error {
			resp, _, err := b.C.Sync(gctx, m, "", 0, wakeFilter)
			if err != nil {
				return err
			}
			since := resp.NextBatch
			ready <- struct{}{}
			for {
				resp, _, err := b.C.Sync(gctx, m, since, 30*time.Second, wakeFilter)
				now := time.Now()
				if err != nil {
					if pollCtx.Err() != nil {
						return nil
					}
					return err
				}
				since = resp.NextBatch
				for _, e := range resp.Rooms.Join[room].Timeline.Events {
					if e.Sender == sender.ID && e.Type == "m.room.message" {
						arr.record(e.EventID, now)
					}
				}
			}
		})
	}
	for range members {
		select {
		case <-ready:
		case <-gctx.Done():
			return nil, fmt.Errorf("initial syncs: %w", g.Wait())
		}
	}
	// Let every member's long-poll reach the server.
	time.Sleep(200 * time.Millisecond)
	b.measuring(r)
	var lat []time.Duration
	early := 0
	p := b.progress("sync-wake", o.WakeSends)
	for i := range o.WakeSends {
		id, err := b.C.Send(ctx, sender, room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench wake %d", i)})
		sent := time.Now()
		if err != nil {
			p.Stop()
			return nil, err
		}
		got, err := arr.wait(gctx, id, len(members), 30*time.Second)
		if err != nil {
			p.Stop()
			stopPolling()
			if gerr := g.Wait(); gerr != nil {
				return nil, fmt.Errorf("%v (syncing: %v)", err, gerr)
			}
			return nil, err
		}
		for _, t := range got {
			d := t.Sub(sent)
			if d < 0 {
				early++
				d = 0
			}
			lat = append(lat, d)
		}
		p.Inc()
		// Give the members time to long-poll again before the next send.
		time.Sleep(20 * time.Millisecond)
	}
	p.Stop()
	stopPolling()
	if err := g.Wait(); err != nil {
		return nil, err
	}
	s, err := Summarize(lat)
	if err != nil {
		return nil, err
	}
	r.addLatency("send response → /sync return", s)
	if early > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d of %d wake-ups returned before the send's response (counted as 0 ms).", early, s.N))
	}
	r.Events = o.WakeSends
	return r, nil
}
