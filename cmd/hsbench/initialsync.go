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
func runInitialSync(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.ISyncRooms < 1 || o.ISyncEvents < 0 {
		return nil, errors.New("initial-sync: -isync-rooms must be positive")
	}
	r := &Result{Params: map[string]string{"R": fmt.Sprint(o.ISyncRooms), "E": fmt.Sprint(o.ISyncEvents)}}
	users, err := b.Users(ctx, "isync", 1)
	if err != nil {
		return nil, err
	}
	u := users[0]
	p := b.progress("initial-sync setup (rooms)", o.ISyncRooms)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range o.ISyncRooms {
		g.Go(func() error {
			room, err := b.C.CreateRoom(gctx, u, fmt.Sprintf("%s isync %d", b.Prefix, i))
			if err != nil {
				return err
			}
			for n := range o.ISyncEvents {
				if _, err := b.C.Send(gctx, u, room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench history %d", n)}); err != nil {
					return err
				}
			}
			p.Inc()
			return nil
		})
	}
	err = g.Wait()
	p.Stop()
	if err != nil {
		return nil, err
	}
	b.measuring(r)
	const runs = 5
	var initial []time.Duration
	var size int
	var since string
	for range runs {
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
	r.add("incremental /sync (nothing new, timeout=0) p50", ms(sn.P50), "ms")
	r.add("incremental /sync p99", ms(sn.P99), "ms")
	r.add("incremental /sync runs", float64(sn.N), "")
	r.Events = 0 // the measured phase sends nothing
	return r, nil
}
