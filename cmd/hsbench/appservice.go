package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// runAppservice runs a loopback application service and measures how soon
// and how fast the server delivers events to it, and that it delivers all
// of them once, in order.
func runAppservice(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.ASLatencySend < 1 || o.ASEvents < 1 || o.ASSenders < 1 {
		return nil, errors.New("appservice: -as-latency-sends, -as-events and -as-senders must be positive")
	}
	if o.ASRegPath == "" {
		reg := newASRegistration(o.ASPort)
		fmt.Fprintf(b.Stderr, "hsbench: appservice needs a registration the server knows; for example:\n\n")
		printYAML(b, reg)
		return nil, errors.New("give -as-registration PATH (created when missing), list PATH in the server's app_service_config_files, restart it, and run again")
	}
	reg, text, created, err := loadOrCreateRegistration(o.ASRegPath, o.ASPort)
	if err != nil {
		return nil, err
	}
	if created {
		fmt.Fprintf(b.Stderr, "hsbench: wrote the registration to %s:\n\n%s\n", o.ASRegPath, text)
		return nil, fmt.Errorf("list %s in the server's app_service_config_files, restart it, and run again", o.ASRegPath)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", o.ASPort)
	recv, err := StartReceiver(addr, reg.HSToken)
	if err != nil {
		return nil, fmt.Errorf("receiver on %s (the registration's url is %s): %w", addr, reg.URL, err)
	}
	defer recv.Close()
	senders, err := b.usersNamed(ctx, asUserPrefix+b.Prefix+"-s", o.ASSenders)
	if err != nil {
		return nil, err
	}
	room, err := b.C.CreateRoom(ctx, senders[0], b.Prefix+" appservice")
	if err != nil {
		return nil, err
	}
	for _, s := range senders[1:] {
		if err := b.C.Join(ctx, s, room); err != nil {
			return nil, err
		}
	}
	// Setup events (create, joins) are delivered too; they carry no
	// hsbench_seq and are not counted.
	r := &Result{Params: map[string]string{"latency_sends": fmt.Sprint(o.ASLatencySend), "events": fmt.Sprint(o.ASEvents), "senders": fmt.Sprint(o.ASSenders)}}
	send := func(ctx context.Context, u User, stream string, seq int) (issued, returned time.Time, err error) {
		issued = time.Now()
		_, err = b.C.Send(ctx, u, room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench %s %d", stream, seq), "hsbench_stream": stream, "hsbench_seq": seq})
		return issued, time.Now(), err
	}
	sent := map[string]int{}

	b.measuring(r)
	// Latency: one event at a time, each awaited.
	p := b.progress("appservice latency", o.ASLatencySend)
	var lat, latIssued []time.Duration
	early := 0
	for i := range o.ASLatencySend {
		issued, at, err := send(ctx, senders[0], "latency", i)
		if err != nil {
			p.Stop()
			return nil, err
		}
		sent["latency"]++
		if err := recv.WaitFor(ctx, i+1, 30*time.Second); err != nil {
			p.Stop()
			return nil, err
		}
		got := recv.Arrivals()
		latIssued = append(latIssued, got[len(got)-1].At.Sub(issued))
		d := got[len(got)-1].At.Sub(at)
		if d < 0 {
			early++
			d = 0
		}
		lat = append(lat, d)
		p.Inc()
	}
	p.Stop()

	// Throughput: the senders send as fast as they can, each in order.
	per := max(1, o.ASEvents/o.ASSenders)
	total := o.ASLatencySend + per*len(senders)
	p = b.progress("appservice throughput", per*len(senders))
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range senders {
		stream := fmt.Sprintf("sender%d", i)
		sent[stream] = per
		g.Go(func() error {
			for n := range per {
				if _, _, err := send(gctx, s, stream, n); err != nil {
					return err
				}
				p.Inc()
			}
			return nil
		})
	}
	err = g.Wait()
	sendDone := time.Since(start)
	p.Stop()
	if err != nil {
		return nil, err
	}
	if err := recv.WaitFor(ctx, total, 60*time.Second); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, CheckOrder(sent, recv.Arrivals()))
	}
	// Linger briefly so that duplicates, if any, show.
	time.Sleep(500 * time.Millisecond)
	got := recv.Arrivals()
	lastAt := got[len(got)-1].At
	rep := CheckOrder(sent, got)
	s, err := Summarize(lat)
	if err != nil {
		return nil, err
	}
	si, err := Summarize(latIssued)
	if err != nil {
		return nil, err
	}
	r.add("send returned → transaction received p50", ms(s.P50), "ms")
	r.add("send returned → transaction received p99", ms(s.P99), "ms")
	r.add("send returned → transaction received max", ms(s.Max), "ms")
	r.add("send issued → transaction received p50", ms(si.P50), "ms")
	r.add("send issued → transaction received p99", ms(si.P99), "ms")
	rate, _ := Rate(per*len(senders), lastAt.Sub(start))
	srate, _ := Rate(per*len(senders), sendDone)
	r.add("sustained events/s into the AS", rate, "1/s")
	r.add("events/s sent (for comparison)", srate, "1/s")
	r.add("received", float64(rep.Received), "")
	r.add("duplicates", float64(rep.Duplicates), "")
	r.add("missing", float64(rep.Missing), "")
	r.add("reordered", float64(rep.Reordered), "")
	r.add("retried transactions", float64(recv.Dups), "")
	if early > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d events reached the AS before their send returned (counted as 0 ms).", early))
	}
	r.Events = total
	if !rep.OK() {
		return nil, fmt.Errorf("delivery check failed: %s", rep)
	}
	return r, nil
}

// usersNamed registers n users prefix0 … prefix(n-1).
func (b *Bench) usersNamed(ctx context.Context, prefix string, n int) ([]User, error) {
	users := make([]User, n)
	for i := range users {
		u, err := b.C.Register(ctx, fmt.Sprintf("%s%d", prefix, i), "hsbench-"+b.Prefix)
		if err != nil {
			return nil, err
		}
		users[i] = u
	}
	return users, nil
}

func printYAML(b *Bench, reg *ASRegistration) {
	fmt.Fprintf(b.Stderr, "id: %s\nurl: %s\nas_token: %s\nhs_token: %s\nsender_localpart: %s\nrate_limited: false\nnamespaces:\n  users:\n    - exclusive: false\n      regex: '%s'\n\n",
		reg.ID, reg.URL, reg.ASToken, reg.HSToken, reg.SenderLocalpart, reg.Namespaces.Users[0].Regex)
}
