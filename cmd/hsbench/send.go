package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// runSend: U users send M messages each, C requests at a time, first all
// into one room, then each into a room of their own.
func runSend(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.SendUsers < 1 || o.SendMessages < 1 || o.SendConc < 1 {
		return nil, fmt.Errorf("send: -send-users, -send-messages and -send-concurrency must be positive")
	}
	r := &Result{Params: map[string]string{"U": fmt.Sprint(o.SendUsers), "M": fmt.Sprint(o.SendMessages), "C": fmt.Sprint(o.SendConc)}}
	users, err := b.Users(ctx, "send", o.SendUsers)
	if err != nil {
		return nil, fmt.Errorf("registering users: %w", err)
	}
	shared, err := b.C.CreateRoom(ctx, users[0], b.Prefix+" send")
	if err != nil {
		return nil, err
	}
	for _, u := range users[1:] {
		if err := b.C.Join(ctx, u, shared); err != nil {
			return nil, err
		}
	}
	own := make([]string, len(users))
	for i, u := range users {
		if own[i], err = b.C.CreateRoom(ctx, u, fmt.Sprintf("%s send %d", b.Prefix, i)); err != nil {
			return nil, err
		}
	}
	b.measuring(r)
	for _, phase := range []struct {
		name string
		room func(i int) string
	}{
		{"one room", func(int) string { return shared }},
		{"U rooms", func(i int) string { return own[i] }},
	} {
		lat, elapsed, err := sendAll(ctx, b, phase.name, users, phase.room)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", phase.name, err)
		}
		s, err := Summarize(lat)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", phase.name, err)
		}
		rate, _ := Rate(s.N, elapsed)
		r.add(phase.name+": events/s", rate, "1/s")
		r.addLatency(phase.name+": PUT", s)
		r.Events += s.N
	}
	return r, nil
}

// sendAll sends M messages for each user into room(i), C at a time, and
// returns the PUT latencies and the wall time.
func sendAll(ctx context.Context, b *Bench, phase string, users []User, room func(int) string) ([]time.Duration, time.Duration, error) {
	type job struct{ user, n int }
	jobs := make(chan job)
	var rec Recorder
	total := len(users) * b.Opt.SendMessages
	p := b.progress("send "+phase, total)
	defer p.Stop()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		// Interleave users so that every user has requests in flight.
		for n := range b.Opt.SendMessages {
			for u := range users {
				select {
				case jobs <- job{u, n}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	start := time.Now()
	for range b.Opt.SendConc {
		g.Go(func() error {
			for j := range jobs {
				t0 := time.Now()
				_, err := b.C.Send(gctx, users[j.user], room(j.user), map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench %s message %d", phase, j.n)})
				if err != nil {
					return err
				}
				rec.Add(time.Since(t0))
				p.Inc()
			}
			return nil
		})
	}
	err := g.Wait()
	return rec.Samples(), time.Since(start), err
}
