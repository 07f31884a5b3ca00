package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// runRegister measures registrations per second (password hashing
// dominates).
func runRegister(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.RegCount < 1 || o.RegConc < 1 {
		return nil, fmt.Errorf("register: -register-count and -register-concurrency must be positive")
	}
	method := "dummy flow"
	if o.SharedSecret != "" {
		method = "shared secret"
	}
	r := &Result{Params: map[string]string{"n": fmt.Sprint(o.RegCount), "C": fmt.Sprint(o.RegConc), "method": fmt.Sprintf("%q", method)}}
	var rec Recorder
	p := b.progress("register", o.RegCount)
	defer p.Stop()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.RegConc)
	b.measuring(r)
	start := time.Now()
	for range o.RegCount {
		g.Go(func() error {
			t0 := time.Now()
			if _, err := b.C.Register(gctx, b.localpart("reg"), "hsbench-"+b.Prefix); err != nil {
				return err
			}
			rec.Add(time.Since(t0))
			p.Inc()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	s, err := Summarize(rec.Samples())
	if err != nil {
		return nil, err
	}
	rate, _ := Rate(s.N, elapsed)
	r.add("registrations/s", rate, "1/s")
	r.addLatency("registration", s)
	r.Events = s.N
	return r, nil
}
