package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// runInitialSync: one user in R rooms with E messages each; times initial
// /sync (and its size) and incremental /sync with nothing new (timeout=0).
// With -isync-member a second user joins every room before its messages and
// never reads them (R×E unread notifications); its initial /sync is timed
// alternately with the owner's, so that both see the same load.
func runInitialSync(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.ISyncRooms < 1 || o.ISyncEvents < 0 {
		return nil, errors.New("initial-sync: -isync-rooms must be positive")
	}
	r := &Result{Params: map[string]string{"R": fmt.Sprint(o.ISyncRooms), "E": fmt.Sprint(o.ISyncEvents)}}
	if o.ISyncMember {
		r.Params["member"] = "unread"
	}
	users, err := b.Users(ctx, "isync", 1)
	if err != nil {
		return nil, err
	}
	u := users[0]
	var member *User
	if o.ISyncMember {
		ms, err := b.Users(ctx, "isyncm", 1)
		if err != nil {
			return nil, err
		}
		member = &ms[0]
	}
	_, err = b.roomsWithHistory(ctx, u, "initial-sync", "isync", o.ISyncRooms, o.ISyncEvents, func(ctx context.Context, room string) error {
		if member != nil {
			return b.C.Join(ctx, *member, room)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if member != nil {
		// Notifications are made after the sends answer: wait for them all.
		want := o.ISyncRooms * o.ISyncEvents
		deadline := time.Now().Add(2 * time.Minute)
		for {
			resp, _, err := b.C.Sync(ctx, *member, "", 0, "")
			if err != nil {
				return nil, err
			}
			got := 0
			for _, jr := range resp.Rooms.Join {
				got += jr.UnreadNotifications.NotificationCount
			}
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("initial-sync: the member has %d unread notifications, want %d", got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	b.measuring(r)
	const runs = 5
	var initial, memberInitial []time.Duration
	var size, memberSize int
	var since string
	for range runs {
		if member != nil {
			t0 := time.Now()
			_, n, err := b.C.Sync(ctx, *member, "", 0, "")
			if err != nil {
				return nil, err
			}
			memberInitial = append(memberInitial, time.Since(t0))
			memberSize = n
		}
		t0 := time.Now()
		resp, n, err := b.C.Sync(ctx, u, "", 0, "")
		if err != nil {
			return nil, err
		}
		initial = append(initial, time.Since(t0))
		if got := len(resp.Rooms.Join); got != o.ISyncRooms {
			return nil, fmt.Errorf("initial sync lists %d joined rooms, want %d", got, o.ISyncRooms)
		}
		size, since = n, resp.NextBatch
	}
	var incr []time.Duration
	for range 20 {
		t0 := time.Now()
		resp, _, err := b.C.Sync(ctx, u, since, 0, "")
		if err != nil {
			return nil, err
		}
		incr = append(incr, time.Since(t0))
		since = resp.NextBatch
	}
	si, err := Summarize(initial)
	if err != nil {
		return nil, err
	}
	sn, err := Summarize(incr)
	if err != nil {
		return nil, err
	}
	r.add("initial /sync p50", ms(si.P50), "ms")
	r.add("initial /sync max", ms(si.Max), "ms")
	r.add("initial /sync size", float64(size)/1024, "KiB")
	r.add("initial /sync runs", runs, "")
	if member != nil {
		sm, err := Summarize(memberInitial)
		if err != nil {
			return nil, err
		}
		r.add("member with R×E unread: initial /sync p50", ms(sm.P50), "ms")
		r.add("member with R×E unread: initial /sync max", ms(sm.Max), "ms")
		r.add("member with R×E unread: initial /sync size", float64(memberSize)/1024, "KiB")
		r.add("member p50 / owner p50", float64(sm.P50)/float64(si.P50), "")
	}
	r.add("incremental /sync (nothing new, timeout=0) p50", ms(sn.P50), "ms")
	r.add("incremental /sync p99", ms(sn.P99), "ms")
	r.add("incremental /sync runs", float64(sn.N), "")
	r.Events = 0 // the measured phase sends nothing
	return r, nil
}

// roomsWithHistory creates n rooms of u's, each with events messages sent
// after before (which may be nil) ran on it, four rooms at a time, and
// returns them in creation order.
func (b *Bench) roomsWithHistory(ctx context.Context, u User, scenario, tag string, n, events int, before func(ctx context.Context, room string) error) ([]string, error) {
	rooms := make([]string, n)
	p := b.progress(scenario+" setup (rooms)", n)
	defer p.Stop()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error {
			room, err := b.C.CreateRoom(gctx, u, fmt.Sprintf("%s %s %d", b.Prefix, tag, i))
			if err != nil {
				return err
			}
			rooms[i] = room
			if before != nil {
				if err := before(gctx, room); err != nil {
					return err
				}
			}
			for e := range events {
				if _, err := b.C.Send(gctx, u, room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench history %d", e)}); err != nil {
					return err
				}
			}
			p.Inc()
			return nil
		})
	}
	return rooms, g.Wait()
}
