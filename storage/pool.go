package storage

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"
)

// DefaultMaxConnWait is how long an operation waits for a database
// connection before giving up with ErrBusy: beyond it the server is
// overloaded, and answering "try again" sheds load where waiting on would
// pile requests (and their goroutines and memory) up without bound.
const DefaultMaxConnWait = 10 * time.Second

// busyRetry is the Retry-After suggested with ErrBusy.
const busyRetry = 2 * time.Second

// ErrBusy is the error of an operation that found every database
// connection busy for longer than Options.MaxConnWait. HTTP answers it with
// 503 and Retry-After (see RetryAfter).
var ErrBusy error = busyError{}

type busyError struct{}

func (busyError) Error() string { return "storage: every database connection stayed busy" }

// RetryAfter is when a client may try again; mxhttp answers errors with
// this method 503 with a Retry-After header.
func (busyError) RetryAfter() time.Duration { return busyRetry }

// pool is a database/sql pool whose operations wait for a connection at
// most a bounded time: database/sql itself waits for as long as the
// request's context lives. One slot per connection is taken for the length
// of a query call (its rows are then read from memory or the socket
// without one) or of a whole transaction (db.tx). Connections held outside
// these (LockRoom's, the bus's) are not counted: they are few and short.
type pool struct {
	*sql.DB
	slots chan struct{}
	wait  time.Duration
	// stmts, when set, keeps prepared statements by query text: SQLite
	// spends a good part of a small query compiling it (pgx keeps its own
	// cache for PostgreSQL).
	stmts *stmtCache
	// gens, on SQLite's writer, follows its writes to cached tables.
	gens *tableGens
}

// maxCachedStmts bounds the statements kept; queries built with varying
// IN lists past it are compiled each time, as they were before.
const maxCachedStmts = 256

type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// stmt returns the prepared statement for query, preparing it on first
// use; nil when the query is not to be cached or preparing failed (the
// caller then runs it unprepared, and reports any error from there).
func (p *pool) stmt(ctx context.Context, query string) *sql.Stmt {
	c := p.stmts
	if c == nil || strings.Contains(query, ";") {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st
	}
	if len(c.m) >= maxCachedStmts {
		return nil
	}
	st, err := p.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.m[query] = st
	return st
}

// cachedStmt returns the prepared statement for query if there is one,
// without preparing it; ok tells whether query may be cached at all.
func (p *pool) cachedStmt(query string) (st *sql.Stmt, ok bool) {
	c := p.stmts
	if c == nil || strings.Contains(query, ";") {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, true
	}
	return nil, len(c.m) < maxCachedStmts
}

// cacheStatements turns the statement cache on.
func (p *pool) cacheStatements() { p.stmts = &stmtCache{m: map[string]*sql.Stmt{}} }

func newPool(db *sql.DB, conns int, wait time.Duration) *pool {
	if wait <= 0 {
		wait = DefaultMaxConnWait
	}
	return &pool{DB: db, slots: make(chan struct{}, conns), wait: wait}
}

// admit takes a slot, waiting at most p.wait.
func (p *pool) admit(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pool) leave() { <-p.slots }

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if t := p.pinned(ctx); t != nil {
		return t.QueryContext(ctx, query, args...)
	}
	if p.gens != nil {
		p.gens.stopCaching(groupsWritten(query))
	}
	if err := p.admit(ctx); err != nil {
		return nil, err
	}
	defer p.leave()
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.DB.QueryContext(ctx, query, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if t := p.pinned(ctx); t != nil {
		return t.QueryRowContext(ctx, query, args...)
	}
	if p.gens != nil {
		p.gens.stopCaching(groupsWritten(query))
	}
	if err := p.admit(ctx); err != nil {
		// Only database/sql can make a *sql.Row: it fails the query with
		// the context's error before taking a connection.
		return p.DB.QueryRowContext(refusedContext{Context: ctx, err: err}, query, args...)
	}
	defer p.leave()
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.DB.QueryRowContext(ctx, query, args...)
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := p.admit(ctx); err != nil {
		return nil, err
	}
	defer p.leave()
	if p.gens != nil {
		m := groupsWritten(query)
		p.gens.begin(m)
		defer p.gens.end(m)
	}
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.DB.ExecContext(ctx, query, args...)
}

// refusedContext is done, with err as its error.
type refusedContext struct {
	context.Context
	err error
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (c refusedContext) Done() <-chan struct{} { return closedChan }
func (c refusedContext) Err() error            { return c.err }

type readSnapshotKey struct{}

// pinned returns the read transaction ctx carries for this pool, if any
// (DB.ReadSnapshot).
func (p *pool) pinned(ctx context.Context) *txn {
	t, _ := ctx.Value(readSnapshotKey{}).(*txn)
	if t == nil || t.p != p {
		return nil
	}
	return t
}
