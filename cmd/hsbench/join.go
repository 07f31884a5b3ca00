package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// runJoin: time for fresh users to join a room with K members and E
// messages of history, one join at a time.
func runJoin(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.JoinMembers < 1 || o.JoinEvents < 0 || o.JoinJoiners < 1 {
		return nil, errors.New("join: -join-members and -join-joiners must be positive")
	}
	r := &Result{Params: map[string]string{"K": fmt.Sprint(o.JoinMembers), "E": fmt.Sprint(o.JoinEvents), "joiners": fmt.Sprint(o.JoinJoiners)}}
	users, err := b.Users(ctx, "join", o.JoinMembers+o.JoinJoiners)
	if err != nil {
		return nil, err
	}
	members, joiners := users[:o.JoinMembers], users[o.JoinMembers:]
	room, err := b.C.CreateRoom(ctx, members[0], b.Prefix+" join")
	if err != nil {
		return nil, err
	}
	for _, m := range members[1:] {
		if err := b.C.Join(ctx, m, room); err != nil {
			return nil, err
		}
	}
	p := b.progress("join setup (history)", o.JoinEvents)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for n := range o.JoinEvents {
		g.Go(func() error {
			_, err := b.C.Send(gctx, members[n%len(members)], room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench history %d", n)})
			p.Inc()
			return err
		})
	}
	err = g.Wait()
	p.Stop()
	if err != nil {
		return nil, err
	}
	b.measuring(r)
	var lat []time.Duration
	for _, j := range joiners {
		t0 := time.Now()
		if err := b.C.Join(ctx, j, room); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
		// The next joiner joins a room with one more member; keep K stable
		// by leaving again.
		if _, err := b.C.Do(ctx, "POST", "/_matrix/client/v3/rooms/"+room+"/leave", j.Token, map[string]any{}, nil); err != nil {
			return nil, err
		}
	}
	s, err := Summarize(lat)
	if err != nil {
		return nil, err
	}
	r.add("join p50", ms(s.P50), "ms")
	r.add("join max", ms(s.Max), "ms")
	r.add("join min", ms(s.Min), "ms")
	r.add("joins", float64(s.N), "")
	r.Events = 2 * s.N // a join and a leave each
	return r, nil
}
