package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/storage"
)

// rtBenchRoom is a room to send into, with the user who sends.
type rtBenchRoom struct {
	env    *rtEnv
	roomID string
	sender string
	sent   int // by the benchmark, for unique transaction IDs
}

func rtMember(i int) string { return rtUser(fmt.Sprintf("user%05d", i)) }

// rtBuildRoom creates a public room where members users (the creator
// included) have joined, through the rooms service, and then fills it with
// messages from them until it holds events events.
//
// The messages are real events, built and signed by package pdu and
// checked with the auth rules against the room's state, but they skip the
// service's per-event reads (extremities, auth state) and are written with
// the store's PersistEvent directly, building the next event while the
// last is being written: sending 100,000 events one by one through the
// service would take minutes on two cores.
func rtBuildRoom(b *testing.B, path string, cleanup func(func()), members, events int) rtBenchRoom {
	b.Helper()
	start := time.Now()
	ctx := context.Background()
	env := rtOpenUntil(b, path, cleanup)
	alice := rtUser("alice")
	room := rtMust(env.svc.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: rooms.PresetPublic, Name: rtPtr("Bench")})).of(b)
	for i := 1; i < members; i++ {
		rtMust(env.svc.Join(ctx, rtMember(i), room, "")).of(b)
	}
	joined := time.Since(start)

	version := rtMust(env.db.GetRoom(ctx, room)).of(b).Version
	prevs, depth := rtExtremities(b, env, room)
	parse := func(st []rooms.Stored) map[pdu.StateKey]*pdu.Event {
		out := map[pdu.StateKey]*pdu.Event{}
		for _, s := range st {
			out[pdu.StateKey{Type: s.Type, StateKey: *s.StateKey}] = rtMust(pdu.Parse(version, s.JSON)).of(b)
		}
		return out
	}
	state := rtState(parse(rtMust(env.db.CurrentState(ctx, room, []pdu.StateKey{{Type: "m.room.create"}, {Type: "m.room.power_levels"}})).of(b)))
	memberEvents := parse(rtMust(env.db.CurrentStateOfType(ctx, room, "m.room.member")).of(b))
	if len(memberEvents) != members {
		b.Fatalf("%d members joined, want %d", len(memberEvents), members)
	}
	key := pdu.Key{ServerName: rtServer, KeyID: env.key.ID, Private: env.key.Private}
	content := json.RawMessage(`{"msgtype":"m.text","body":"filler"}`)

	type built struct {
		ev  *pdu.Event
		err error
	}
	queue := make(chan built, 64)
	stop := make(chan struct{})
	defer close(stop)
	n := int(rtMust(env.db.MaxPos(ctx)).of(b))
	go func() {
		defer close(queue)
		for i := n; i < events; i++ {
			sender := alice
			if members > 1 {
				sender = rtMember(1 + i%(members-1))
			}
			memberKey := pdu.StateKey{Type: "m.room.member", StateKey: sender}
			state[memberKey] = memberEvents[memberKey]
			p := pdu.Proto{Sender: sender, RoomID: room, Type: "m.room.message", Content: content}
			ev, err := pdu.Build(p, version, prevs, depth+1, state, key)
			if err == nil {
				err = pdu.Allowed(ev, state)
			}
			delete(state, memberKey)
			select {
			case queue <- built{ev, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
			prevs, depth = []string{ev.ID()}, ev.Depth()
		}
	}()
	for q := range queue {
		if q.err != nil {
			b.Fatal(q.err)
		}
		if _, err := env.db.PersistEvent(ctx, rooms.NewEvent{Event: q.ev}); err != nil {
			b.Fatal(err)
		}
	}
	if got := rtMust(env.db.MaxPos(ctx)).of(b); got != int64(events) {
		b.Fatalf("the room holds %d events, want %d", got, events)
	}
	b.Logf("built a room of %d members and %d events in %v (joins %v)", members, events, time.Since(start).Round(time.Millisecond), joined.Round(time.Millisecond))
	return rtBenchRoom{env: env, roomID: room, sender: alice}
}

func rtExtremities(b *testing.B, env *rtEnv, roomID string) ([]string, int64) {
	b.Helper()
	prevs, depth, err := env.db.Extremities(context.Background(), roomID)
	if err != nil {
		b.Fatal(err)
	}
	return prevs, depth
}

// rtBenchRooms holds the benchmarks' rooms for the life of the process, so
// that each is built once however many times the benchmarks run (-count);
// TestMain removes them.
var rtBenchRooms struct {
	mu      sync.Mutex
	dir     string
	rooms   map[string]*rtBenchRoom
	closers []func()
}

// rtBenchRoomOf returns the room of this size, building it on first use.
func rtBenchRoomOf(b *testing.B, members, events int) *rtBenchRoom {
	b.Helper()
	r := &rtBenchRooms
	r.mu.Lock()
	defer r.mu.Unlock()
	name := fmt.Sprintf("send-%d-%d", members, events)
	if room, ok := r.rooms[name]; ok {
		return room
	}
	if r.dir == "" {
		dir, err := os.MkdirTemp("", "rooms-bench-")
		if err != nil {
			b.Fatal(err)
		}
		r.dir, r.rooms = dir, map[string]*rtBenchRoom{}
	}
	later := func(f func()) { r.closers = append(r.closers, f) }
	room := rtBuildRoom(b, filepath.Join(r.dir, name+".db"), later, members, events)
	r.rooms[name] = &room
	// The building's garbage is not the benchmark's to collect.
	runtime.GC()
	return &room
}

func TestMain(m *testing.M) {
	code := m.Run()
	r := &rtBenchRooms
	for _, f := range r.closers {
		f()
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
	os.Exit(code)
}

// BenchmarkSend measures one message send through the rooms service
// (build, sign, authorise against the room's state, persist in one
// transaction with a transaction ID) in a small room and in a large one.
// The rooms are built on first use, once per process: plain `go test` runs
// no benchmark and so builds nothing.
func BenchmarkSend(b *testing.B) {
	sizes := []struct {
		name            string
		members, events int
	}{
		{"members=10", 10, 100},
		{"members=10000/events=100000", 10_000, 100_000},
	}
	for _, size := range sizes {
		b.Run(size.name, func(b *testing.B) {
			room := rtBenchRoomOf(b, size.members, size.events)
			ctx := context.Background()
			content := json.RawMessage(`{"msgtype":"m.text","body":"benchmark message"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, err := room.env.svc.Send(ctx, rooms.SendRequest{
					Sender: room.sender, RoomID: room.roomID, Type: "m.room.message", Content: content,
					Txn: &rooms.TxnRef{UserID: room.sender, Scope: "bench", TxnID: fmt.Sprintf("%d-%d", room.sent, i)},
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			room.sent += b.N
		})
	}
}

// BenchmarkConcurrentJoins: users join one public room, 16 at a time (a
// bridge bringing its puppets into a portal room): state events sharing
// commits, each authorised against the joins before it in its batch.
// PostgreSQL when HOMESERVER_TEST_POSTGRES is set.
func BenchmarkConcurrentJoins(b *testing.B) {
	e := rtOpen(b, filepath.Join(b.TempDir(), "rooms.db"))
	if dsn := os.Getenv(testserver.PostgresEnv); dsn != "" {
		e = rtOpenWith(b, storage.Options{Engine: storage.Postgres, DSN: testserver.PostgresDSNFor(dsn, testserver.CreatePostgresDB(b, dsn)),
			Logger: rtQuiet}, b.Cleanup)
	}
	ctx := context.Background()
	room, err := e.svc.CreateRoom(ctx, rtUser("owner"), rooms.CreateRoomRequest{Preset: rooms.PresetPublic})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.svc.Join(ctx, rtUser(fmt.Sprint("joiner", next.Add(1))), room, ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
