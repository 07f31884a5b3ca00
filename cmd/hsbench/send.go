package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// runSend: U users send M messages each, C requests at a time, first all
// into one room (which K more members join without sending: each message
// notifies U+K-1 members), then each into a room of their own.
func runSend(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.SendUsers < 1 || o.SendMessages < 1 || o.SendConc < 1 || o.SendMembers < 0 {
		return nil, fmt.Errorf("send: -send-users, -send-messages and -send-concurrency must be positive, -send-members not negative")
	}
	r := &Result{Params: map[string]string{"U": fmt.Sprint(o.SendUsers), "M": fmt.Sprint(o.SendMessages), "C": fmt.Sprint(o.SendConc)}}
	if o.SendMembers > 0 {
		r.Params["K"] = fmt.Sprint(o.SendMembers)
	}
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
	// The watcher's unread count in the shared room tells when the push
	// side has caught up with the sends: a member who sends nothing (or
	// the creator, who does not count their own messages).
	watcher, watchWant := users[0], (len(users)-1)*o.SendMessages
	if o.SendMembers > 0 {
		listeners, err := b.Users(ctx, "sendk", o.SendMembers)
		if err != nil {
			return nil, fmt.Errorf("registering members: %w", err)
		}
		p := b.progress("send setup (members joining)", len(listeners))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for _, u := range listeners {
			g.Go(func() error {
				defer p.Inc()
				return b.C.Join(gctx, u, shared)
			})
		}
		err = g.Wait()
		p.Stop()
		if err != nil {
			return nil, err
		}
		watcher, watchWant = listeners[0], len(users)*o.SendMessages
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
		var cpu0 ProcStat
		if len(o.PIDs) != 0 {
			if cpu0, err = ReadProcs(o.PIDs); err != nil {
				return nil, fmt.Errorf("-pid: %w", err)
			}
		}
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
		if phase.name == "one room" && watchWant > 0 {
			// Notifications are made after the PUTs answer; a run that
			// stopped at the last PUT would leave their cost uncounted.
			t0 := time.Now()
			if err := waitUnread(ctx, b, watcher, shared, watchWant); err != nil {
				return nil, err
			}
			drain := time.Since(t0)
			rate, _ := Rate(s.N, elapsed+drain)
			r.add(phase.name+": events/s with notifications made", rate, "1/s")
			r.add(phase.name+": notifications done after last PUT", ms(drain), "ms")
		}
		if len(o.PIDs) != 0 {
			// Per phase: what a message costs in one big room against
			// in rooms of one member (notifications included).
			cpu1, err := ReadProcs(o.PIDs)
			if err != nil {
				return nil, fmt.Errorf("-pid: %w", err)
			}
			r.add(phase.name+": server CPU per 1,000 events", (cpu1.CPUSeconds-cpu0.CPUSeconds)/float64(s.N)*1000, "s")
		}
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

// waitUnread follows u's unread notification count in room, with
// incremental /syncs (which list the room when its count changes), until
// it is want (two minutes at most).
func waitUnread(ctx context.Context, b *Bench, u User, room string, want int) error {
	// Only that room, without its state or timeline: a big room's member
	// list would cost more than the count.
	filter := fmt.Sprintf(`{"room":{"rooms":[%q],"state":{"types":[]},"timeline":{"limit":1},"ephemeral":{"types":[]},"account_data":{"types":[]}},"presence":{"types":[]},"account_data":{"types":[]}}`, room)
	deadline := time.Now().Add(2 * time.Minute)
	since, got := "", 0
	for {
		timeout := time.Second
		if since == "" {
			timeout = 0
		}
		resp, _, err := b.C.Sync(ctx, u, since, timeout, filter)
		if err != nil {
			return err
		}
		if jr, ok := resp.Rooms.Join[room]; ok {
			got = jr.UnreadNotifications.NotificationCount
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("send: %d of %d notifications made after two minutes", got, want)
		}
		since = resp.NextBatch
	}
}
