package storage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"homeserver/stream"
)

// What lets several processes share one PostgreSQL database: a lock per
// room around writing its events, a bus for the hub's announcements
// (LISTEN/NOTIFY), and leases that give each background reader to exactly
// one process. SQLite serves one process, which needs none of them.

// busChannel is the PostgreSQL notification channel of the hub.
const busChannel = "homeserver_changes"

// maxNotifyPayload stays under PostgreSQL's 8000-byte NOTIFY payload.
const maxNotifyPayload = 7000

// LockRoom serialises the writing of a room's events across processes: it
// holds a PostgreSQL advisory lock, keyed by the room, on a connection of
// its own until unlock. On SQLite it does nothing (one process, and the
// rooms service's own lock).
func (db *DB) LockRoom(ctx context.Context, roomID string) (unlock func(), err error) {
	if db.engine != Postgres {
		return func() {}, nil
	}
	defer db.observe("lock_room", time.Now())
	conn, err := db.w.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage: lock room: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`, "room:"+roomID); err != nil {
		conn.Close()
		return nil, fmt.Errorf("storage: lock room: %w", err)
	}
	return func() {
		// A lost connection releases the lock by itself; closing one
		// whose unlock failed makes sure of it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, "room:"+roomID); err != nil {
			db.log.Warn("unlocking room", "room_id", roomID, "err", err)
			_ = conn.Raw(func(any) error { return errors.New("discard") })
		}
		conn.Close()
	}, nil
}

// Bus returns the bus that carries the hub's announcements to this
// deployment's other processes (nil on SQLite: one process). instance
// tells this process's own messages from the others'.
func (db *DB) Bus(instance string) stream.Bus {
	if db.engine != Postgres {
		return nil
	}
	b := &pgBus{db: db, instance: instance, out: make(chan stream.Change, 4096)}
	go b.publishLoop()
	return b
}

type pgBus struct {
	db       *DB
	instance string
	out      chan stream.Change
	warned   time.Time
}

// busMessage is a change on the wire, with its origin.
type busMessage struct {
	From string `json:"f"`
	stream.Change
}

// Publish queues a change for the other processes; it never blocks. When
// the queue is full (the database is unreachable) the change is dropped:
// waiting syncs elsewhere then learn of it with the next change.
func (b *pgBus) Publish(c stream.Change) {
	select {
	case b.out <- c:
	default:
		if time.Since(b.warned) > time.Minute {
			b.warned = time.Now()
			b.db.log.Warn("dropping announcements for other processes: the queue is full")
		}
	}
}

func (b *pgBus) publishLoop() {
	for c := range b.out {
		for _, payload := range b.encode(c) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := b.db.w.ExecContext(ctx, `SELECT pg_notify($1, $2)`, busChannel, payload); err != nil {
				b.db.log.Warn("announcing a change to other processes", "stream", c.Stream, "err", err)
			}
			cancel()
		}
	}
}

// encode splits a change whose room and user lists do not fit one
// notification into several, each with the stream and position.
func (b *pgBus) encode(c stream.Change) []string {
	data, err := json.Marshal(busMessage{From: b.instance, Change: c})
	if err != nil {
		return nil
	}
	if len(data) <= maxNotifyPayload {
		return []string{string(data)}
	}
	first, rest := c, c
	switch {
	case len(c.Rooms) > 1:
		first.Rooms, rest.Rooms = c.Rooms[:len(c.Rooms)/2], c.Rooms[len(c.Rooms)/2:]
		first.Users, first.Data = nil, nil
	case len(c.Users) > 1:
		first.Users, rest.Users = c.Users[:len(c.Users)/2], c.Users[len(c.Users)/2:]
		first.Rooms, first.Data = nil, nil
	default:
		b.db.log.Warn("an announcement too large for other processes was dropped", "stream", c.Stream)
		return nil
	}
	return append(b.encode(first), b.encode(rest)...)
}

// Listen receives the other processes' changes until ctx ends, on a
// connection of its own, reconnecting after failures.
func (b *pgBus) Listen(ctx context.Context, fn func(stream.Change)) error {
	for ctx.Err() == nil {
		err := b.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		b.db.log.Warn("listening for other processes' changes; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (b *pgBus) listenOnce(ctx context.Context, fn func(stream.Change)) error {
	conn, err := pgx.Connect(ctx, b.db.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+busChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var m busMessage
		if json.Unmarshal([]byte(n.Payload), &m) != nil || m.From == b.instance {
			continue
		}
		fn(m.Change)
	}
}

// Leaser returns the leaser that gives each background reader to one
// process: stream.Local on SQLite, leases in the database on PostgreSQL.
// owner names this process (unique per run); ttl is how long a lease lasts
// unrenewed, which bounds how long a dead process's readers wait for
// another to take them over.
func (db *DB) Leaser(owner string, ttl time.Duration) stream.Leaser {
	if db.engine != Postgres {
		return stream.Local{}
	}
	return &pgLeaser{db: db, owner: owner, ttl: ttl}
}

type pgLeaser struct {
	db    *DB
	owner string
	ttl   time.Duration
}

// dbNowMS is the database's clock in milliseconds: every process judges
// expiry by the same clock.
const dbNowMS = `(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT`

func (l *pgLeaser) Acquire(ctx context.Context, name string) (stream.Lease, error) {
	poll := max(l.ttl/10, 100*time.Millisecond)
	for {
		ok, err := l.try(ctx, name)
		if err != nil && ctx.Err() == nil {
			l.db.log.Warn("acquiring a reader lease", "reader", name, "err", err)
		}
		if ok {
			lease := &pgLease{l: l, name: name, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
			go lease.renew()
			return lease, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// try takes the lease if it is free, expired, or already this process's.
func (l *pgLeaser) try(ctx context.Context, name string) (bool, error) {
	var owner string
	err := l.db.w.QueryRowContext(ctx, `INSERT INTO reader_leases (name, owner, expires_ms) VALUES ($1, $2, `+dbNowMS+` + $3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
		WHERE reader_leases.owner = excluded.owner OR reader_leases.expires_ms < `+dbNowMS+`
		RETURNING owner`, name, l.owner, l.ttl.Milliseconds()).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: reader lease: %w", err)
	}
	return owner == l.owner, nil
}

type pgLease struct {
	l          *pgLeaser
	name       string
	lost, stop chan struct{}
	done       chan struct{}
	once       sync.Once
}

func (p *pgLease) Lost() <-chan struct{} { return p.lost }

// renew extends the lease every third of its lifetime; when it cannot for
// so long that the lease may have expired, or finds it taken, the lease is
// lost.
func (p *pgLease) renew() {
	defer close(p.done)
	every := p.l.ttl / 3
	held := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(every):
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		res, err := p.l.db.w.ExecContext(ctx, `UPDATE reader_leases SET expires_ms = `+dbNowMS+` + $3
			WHERE name = $1 AND owner = $2`, p.name, p.l.owner, p.l.ttl.Milliseconds())
		cancel()
		if err == nil {
			if n, _ := res.RowsAffected(); n == 1 {
				held = time.Now()
				continue
			}
			close(p.lost)
			return
		}
		p.l.db.log.Warn("renewing a reader lease", "reader", p.name, "err", err)
		// Give up before the lease can have expired: another process may
		// take it once it has.
		if time.Since(held) > p.l.ttl-every {
			close(p.lost)
			return
		}
	}
}

// Release gives the lease up at once, so that another process need not
// wait for it to expire.
func (p *pgLease) Release() {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := p.l.db.w.ExecContext(ctx, `DELETE FROM reader_leases WHERE name = $1 AND owner = $2`, p.name, p.l.owner); err != nil {
			p.l.db.log.Warn("releasing a reader lease", "reader", p.name, "err", err)
		}
	})
}

// NewInstanceID returns a name for this run of a process: the configured
// instance name, made unique so that a restarted process is not taken for
// the one before it.
func NewInstanceID(name string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	if name == "" {
		name = "main"
	}
	return name + "/" + hex.EncodeToString(b)
}
