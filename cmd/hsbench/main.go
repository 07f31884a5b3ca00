// Command hsbench measures a running Matrix homeserver through the public
// Client-Server and Application Service APIs only, so that it can be pointed
// at any homeserver. It creates its own users (with a unique run prefix),
// rooms and data, and removes nothing it did not create (it removes
// nothing at all).
//
//	hsbench -hs http://127.0.0.1:8008 [-shared-secret S | -register-open] [-json] [-pid PID] SCENARIO...
//	hsbench -hs URL1,URL2,... -pid PID1,PID2,... SCENARIO...   (one homeserver, several processes)
//
// Scenarios: send, sync-wake, initial-sync, sliding-sync, join, media, appservice,
// register (or all). The target server must have its rc_* rate limits
// relaxed; see BENCHMARKS.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Options are the command-line settings.
type Options struct {
	HS            string
	SharedSecret  string
	RegisterOpen  bool
	JSON          bool
	PIDs          pidList
	Quiet         bool
	SendUsers     int
	SendMessages  int
	SendConc      int
	SendMembers   int
	WakeMembers   int
	WakeSends     int
	ISyncRooms    int
	ISyncEvents   int
	ISyncMember   bool
	JoinMembers   int
	JoinEvents    int
	JoinJoiners   int
	MediaUploads  int
	ASPort        int
	ASRegPath     string
	ASEvents      int
	ASSenders     int
	ASLatencySend int
	RegCount      int
	SlidingRooms  int
	SlidingEvents int
	RegConc       int
}

var scenarios = map[string]func(context.Context, *Bench) (*Result, error){
	"send":         runSend,
	"sync-wake":    runSyncWake,
	"initial-sync": runInitialSync,
	"sliding-sync": runSlidingSync,
	"join":         runJoin,
	"media":        runMedia,
	"appservice":   runAppservice,
	"register":     runRegister,
}

var order = []string{"register", "send", "sync-wake", "initial-sync", "sliding-sync", "join", "media", "appservice"}

func parseFlags(args []string, stderr io.Writer) (*Options, []string, error) {
	o := &Options{}
	fs := flag.NewFlagSet("hsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.HS, "hs", "http://127.0.0.1:8008", "homeserver base URL; comma-separated for a homeserver of several processes (each access token sticks to one)")
	fs.StringVar(&o.SharedSecret, "shared-secret", "", "registration_shared_secret: register users through the shared-secret admin API")
	fs.BoolVar(&o.RegisterOpen, "register-open", false, "register users through open registration (m.login.dummy)")
	fs.BoolVar(&o.JSON, "json", false, "also print the results as JSON (one object per line) on stdout")
	fs.Var(&o.PIDs, "pid", "homeserver process ID: report peak RSS and CPU seconds from /proc; comma-separated for several processes (summed)")
	fs.BoolVar(&o.Quiet, "q", false, "no progress on stderr")
	fs.IntVar(&o.SendUsers, "send-users", 10, "send: users (U)")
	fs.IntVar(&o.SendMessages, "send-messages", 50, "send: messages per user (M)")
	fs.IntVar(&o.SendConc, "send-concurrency", 10, "send: concurrent requests (C)")
	fs.IntVar(&o.SendMembers, "send-members", 0, "send: extra members of the shared room who only listen (K); the room has U+K members")
	fs.IntVar(&o.WakeMembers, "wake-members", 10, "sync-wake: members long-polling /sync (N)")
	fs.IntVar(&o.WakeSends, "wake-sends", 50, "sync-wake: messages sent, one at a time (S)")
	fs.IntVar(&o.ISyncRooms, "isync-rooms", 20, "initial-sync: rooms (R)")
	fs.IntVar(&o.ISyncEvents, "isync-events", 20, "initial-sync: messages per room (E)")
	fs.IntVar(&o.SlidingRooms, "sliding-rooms", 1000, "sliding-sync: rooms (R)")
	fs.IntVar(&o.SlidingEvents, "sliding-events", 2, "sliding-sync: messages per room (E)")
	fs.BoolVar(&o.ISyncMember, "isync-member", false, "initial-sync: also time a member of every room who has read nothing (R×E unread notifications)")
	fs.IntVar(&o.JoinMembers, "join-members", 20, "join: members of the room (K)")
	fs.IntVar(&o.JoinEvents, "join-events", 200, "join: messages of history (E)")
	fs.IntVar(&o.JoinJoiners, "join-joiners", 10, "join: users timed joining")
	fs.IntVar(&o.MediaUploads, "media-uploads", 3, "media: uploads of the 12-megapixel JPEG")
	fs.IntVar(&o.ASPort, "as-port", 9099, "appservice: loopback port of the receiver")
	fs.StringVar(&o.ASRegPath, "as-registration", "", "appservice: registration file; created (and hsbench exits) when missing, else its tokens are used")
	fs.IntVar(&o.ASEvents, "as-events", 500, "appservice: events sent for the throughput phase")
	fs.IntVar(&o.ASSenders, "as-senders", 4, "appservice: concurrent senders in the throughput phase")
	fs.IntVar(&o.ASLatencySend, "as-latency-sends", 50, "appservice: events sent one at a time for the latency phase")
	fs.IntVar(&o.RegCount, "register-count", 20, "register: registrations")
	fs.IntVar(&o.RegConc, "register-concurrency", 4, "register: concurrent registrations")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: hsbench -hs URL [-shared-secret S | -register-open] [-json] [-pid PID] SCENARIO...")
		fmt.Fprintln(stderr, "scenarios: "+strings.Join(order, ", ")+", all")
		fs.PrintDefaults()
	}
	// Flags may come after scenario names.
	var names []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(names) == 0 {
		fs.Usage()
		return nil, nil, errors.New("no scenario given")
	}
	if o.SharedSecret != "" && o.RegisterOpen {
		return nil, nil, errors.New("-shared-secret and -register-open exclude each other")
	}
	var out []string
	for _, n := range names {
		if n == "all" {
			out = append(out, order...)
			continue
		}
		if scenarios[n] == nil {
			return nil, nil, fmt.Errorf("unknown scenario %q (want one of %s)", n, strings.Join(order, ", "))
		}
		out = append(out, n)
	}
	return o, out, nil
}

// Bench is the state of one run, shared by its scenarios.
type Bench struct {
	Opt    *Options
	C      *Client
	Prefix string // unique localpart prefix of this run
	Stderr io.Writer
	seq    atomic.Int64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, names, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "hsbench:", err)
		return 2
	}
	b := newBench(o, stderr)
	fmt.Fprintf(stderr, "hsbench: run prefix %s against %s\n", b.Prefix, o.HS)
	failed := false
	for _, n := range names {
		r, err := b.Run(ctx, n)
		if err != nil {
			fmt.Fprintf(stderr, "hsbench: %s FAILED: %v\n", n, err)
			failed = true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		r.WriteTable(stdout)
		if o.JSON {
			data, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(data))
		}
	}
	if failed {
		return 1
	}
	return 0
}

func newBench(o *Options, stderr io.Writer) *Bench {
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	prefix := "hsb" + strconv.FormatInt(time.Now().Unix()%1e6, 36) + hex.EncodeToString(rnd[:])
	return &Bench{Opt: o, C: NewClient(o.HS, o.SharedSecret), Prefix: prefix, Stderr: stderr}
}

// Run runs one scenario, adds process figures, and fails when it measured
// nothing.
func (b *Bench) Run(ctx context.Context, name string) (*Result, error) {
	var before ProcStat
	if len(b.Opt.PIDs) != 0 {
		var err error
		if before, err = ReadProcs(b.Opt.PIDs); err != nil {
			return nil, fmt.Errorf("-pid: %w", err)
		}
	}
	start := time.Now()
	r, err := scenarios[name](ctx, b)
	if err != nil {
		return nil, err
	}
	r.Scenario = name
	r.Elapsed = time.Since(start).Seconds()
	if len(r.Metrics) == 0 {
		return nil, errors.New("measured nothing")
	}
	if len(b.Opt.PIDs) != 0 {
		after, err := ReadProcs(b.Opt.PIDs)
		if err != nil {
			return nil, fmt.Errorf("-pid: %w", err)
		}
		if r.procStart != nil {
			before = *r.procStart
		}
		cpu := after.CPUSeconds - before.CPUSeconds
		r.add("server CPU", cpu, "s")
		if r.Events > 0 {
			r.add("server CPU per 1,000 events", cpu/float64(r.Events)*1000, "s")
		}
		r.add("server peak RSS (VmHWM)", float64(after.HWMKiB)/1024, "MiB")
	}
	return r, nil
}

// measuring marks the start of the measured phase of r: CPU seconds count
// from here, not from the set-up (registrations, rooms).
func (b *Bench) measuring(r *Result) {
	if len(b.Opt.PIDs) == 0 {
		return
	}
	if s, err := ReadProcs(b.Opt.PIDs); err == nil {
		r.procStart = &s
	}
}

// localpart returns a fresh localpart of this run.
func (b *Bench) localpart(what string) string {
	return fmt.Sprintf("%s-%s%d", b.Prefix, what, b.seq.Add(1))
}

// Users registers n fresh users, a few at a time.
func (b *Bench) Users(ctx context.Context, what string, n int) ([]User, error) {
	users := make([]User, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range users {
		g.Go(func() error {
			u, err := b.C.Register(ctx, b.localpart(what), "hsbench-"+b.Prefix)
			users[i] = u
			return err
		})
	}
	return users, g.Wait()
}

// Progress reports count/total of a phase on stderr every two seconds.
type Progress struct {
	done atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

// progress starts reporting phase.
func (b *Bench) progress(phase string, total int) *Progress {
	p := &Progress{stop: make(chan struct{})}
	if b.Opt.Quiet {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				fmt.Fprintf(b.Stderr, "hsbench: %s %d/%d\n", phase, p.done.Load(), total)
			}
		}
	}()
	return p
}

// Inc counts one done item.
func (p *Progress) Inc() { p.done.Add(1) }

// Stop ends the reports.
func (p *Progress) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

func (b *Bench) logf(format string, args ...any) {
	if !b.Opt.Quiet {
		fmt.Fprintf(b.Stderr, "hsbench: "+format+"\n", args...)
	}
}
