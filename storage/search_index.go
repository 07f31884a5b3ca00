package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"homeserver/rooms"
	"homeserver/search"
)

// searchIndex is SQLite's full-text index of search, in a database file
// of its own beside the main one (SearchIndexPath). SQLite lets one
// connection write a file at a time: in the main file, each of the
// indexer's transactions (1–2.5 ms for a burst of messages) held the one
// writer, and a send arriving meanwhile waited for it, which was most of
// what kept the sequential sends' p99 above 3 ms (BENCHMARKS.md). In its
// own file the indexer writes beside the sends.
//
// The index is derived from the event log: its cursor is kept in the same
// file as its entries, in the same transactions, so that the file, lost,
// deleted or left behind by a restored backup, is rebuilt from the log.
type searchIndex struct {
	w, r *pool
	// purges counts the purges of rooms and history (see PurgeRoom),
	// and seenPurges the count when the indexer last wrote: an update
	// that finds it moved checks that its events were not purged since
	// the indexer read them.
	purges     atomic.Uint64
	seenPurges atomic.Uint64
}

// searchSchemaVersion is the index file's PRAGMA user_version.
const searchSchemaVersion = 1

// searchConns tunes the index's connections: the main file's page cache
// (with 4 MiB, searches of a 100,000-event index took half as long again:
// BENCHMARKS.md), and checkpoints made by the indexer's own commits (no
// one waits for them).
var searchConns = connTuning{cacheKiB: mainConns.cacheKiB, walPages: 1000}

// searchReadConns is the size of the index's reader pool.
const searchReadConns = 2

// SearchIndexPath is the file of SQLite's full-text index of the database
// at path: homeserver.db's is homeserver-search.db.
func SearchIndexPath(path string) string {
	if path == ":memory:" {
		return path
	}
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-search" + ext
}

// openSearchIndex opens (creating it if need be) the index of the
// database o describes, whose writer is main.
func openSearchIndex(ctx context.Context, o Options, main *pool) (*searchIndex, error) {
	path := SearchIndexPath(o.Path)
	w, err := sql.Open("sqlite", tunedDSN(path, false, searchConns))
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	x := &searchIndex{w: newPool(w, 1, o.MaxConnWait)}
	x.w.cacheStatements()
	x.r = x.w
	if err := x.init(ctx, main); err != nil {
		x.close()
		return nil, fmt.Errorf("storage: search index %s: %w", path, err)
	}
	if path != ":memory:" {
		r, err := sql.Open("sqlite", tunedDSN(path, true, searchConns))
		if err != nil {
			x.close()
			return nil, fmt.Errorf("storage: open %s: %w", path, err)
		}
		r.SetMaxOpenConns(searchReadConns)
		r.SetMaxIdleConns(searchReadConns)
		x.r = newPool(r, searchReadConns, o.MaxConnWait)
		x.r.cacheStatements()
	}
	return x, nil
}

// init creates the schema, and empties an index that is ahead of the
// log (a database restored from a backup older than the index).
func (x *searchIndex) init(ctx context.Context, main *pool) error {
	var version int
	if err := x.w.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	switch version {
	case searchSchemaVersion:
	case 0:
		tx, err := x.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		for _, q := range []string{
			// The entries' rooms, for purges; the rowid is the event's
			// stream position, as in the full-text table.
			`CREATE TABLE search_entries (stream_pos INTEGER PRIMARY KEY, room_id TEXT NOT NULL)`,
			`CREATE INDEX search_entries_room ON search_entries (room_id)`,
			// A contentless table (contentless_delete lets a redaction
			// remove its row), with a second column, meta, of tokens for
			// the event's room, key and sender (searchMeta), so that a
			// search's restrictions are doclists the engine intersects.
			`CREATE VIRTUAL TABLE event_search_fts USING fts5(value, meta, content='', contentless_delete=1,
				tokenize='unicode61 remove_diacritics 2')`,
			`CREATE TABLE search_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), pos INTEGER NOT NULL)`,
			fmt.Sprintf(`PRAGMA user_version = %d`, searchSchemaVersion),
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("schema version %d is newer than this binary knows (%d); delete the file to have it rebuilt", version, searchSchemaVersion)
	}
	cursor, err := x.cursor(ctx)
	if err != nil {
		return err
	}
	var head int64
	if err := main.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&head); err != nil {
		return err
	}
	if cursor <= head {
		return nil
	}
	tx, err := x.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, q := range []string{
		`INSERT INTO event_search_fts (event_search_fts) VALUES ('delete-all')`,
		`DELETE FROM search_entries`,
		`DELETE FROM search_cursor`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (x *searchIndex) close() error {
	err := x.w.Close()
	if x.r != x.w {
		err = errors.Join(err, x.r.Close())
	}
	return err
}

// cursor is the position in the events stream up to which the index is
// written (0 for a new index).
func (x *searchIndex) cursor(ctx context.Context) (int64, error) {
	var pos int64
	err := x.r.QueryRowContext(ctx, `SELECT pos FROM search_cursor WHERE id = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return pos, err
}

// update writes u and the cursor (when >= 0) in one transaction of the
// index. redacted are the stream positions of the events u.Redacted
// names that the main database has marked redacted.
func (x *searchIndex) update(ctx context.Context, db *DB, u search.Update, redacted []int64, cursor int64) error {
	const op = "update_search_index"
	defer db.observe(op, time.Now())
	var seen uint64
	err := txOn(ctx, x.w, op, func(tx *txn) error {
		// Loaded while holding the index's writer: a purge counted later
		// deletes from the index after this transaction.
		seen = x.purges.Load()
		put := u.Put
		if seen != x.seenPurges.Load() && len(put) > 0 {
			var err error
			if put, err = x.notPurged(ctx, db, put); err != nil {
				return err
			}
		}
		for _, e := range put {
			res, err := tx.ExecContext(ctx, `INSERT INTO search_entries (stream_pos, room_id) VALUES ($1, $2)
				ON CONFLICT DO NOTHING`, e.Pos, e.RoomID)
			if err != nil {
				return fmt.Errorf("storage: put search entry: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				if err := putSearchFTS(ctx, tx, e); err != nil {
					return err
				}
			}
		}
		if err := x.deletePositions(ctx, tx, redacted); err != nil {
			return err
		}
		if cursor >= 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO search_cursor (id, pos) VALUES (1, $1)
				ON CONFLICT (id) DO UPDATE SET pos = excluded.pos`, cursor); err != nil {
				return fmt.Errorf("storage: search cursor: %w", err)
			}
		}
		return nil
	})
	if err == nil {
		// The purges this load counted had committed before the
		// indexer's next read of the log; a later one moves the count.
		x.seenPurges.Store(seen)
	}
	return err
}

// notPurged returns the entries whose events are still in the main
// database: a purge that ran after the indexer read them (and deleted
// the index's entries of the room before these were written) would
// otherwise leave them behind. The purge's own deletion from the index
// waits for this transaction, so it removes whatever a later check could
// not see yet.
func (x *searchIndex) notPurged(ctx context.Context, db *DB, put []search.Entry) ([]search.Entry, error) {
	lo, hi := put[0].Pos, put[0].Pos
	for _, e := range put {
		lo, hi = min(lo, e.Pos), max(hi, e.Pos)
	}
	positions, err := queryValues[int64](ctx, db.r, `SELECT stream_pos FROM events WHERE stream_pos >= $1 AND stream_pos <= $2`, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("storage: search entries' events: %w", err)
	}
	have := make(map[int64]bool, len(positions))
	for _, pos := range positions {
		have[pos] = true
	}
	var out []search.Entry
	for _, e := range put {
		if have[e.Pos] {
			out = append(out, e)
		}
	}
	return out, nil
}

// deletePositions removes the entries at the given stream positions.
func (x *searchIndex) deletePositions(ctx context.Context, tx *txn, positions []int64) error {
	for _, pos := range positions {
		res, err := tx.ExecContext(ctx, `DELETE FROM search_entries WHERE stream_pos = $1`, pos)
		if err != nil {
			return fmt.Errorf("storage: delete search entry: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM event_search_fts WHERE rowid = $1`, pos); err != nil {
			return fmt.Errorf("storage: delete search entry: %w", err)
		}
	}
	return nil
}

// purgeRoom removes the entries of a purged room, and purgeEvents those
// of purged events. The purge has committed in the main database:
// counting it first makes the indexer's next update check its events (see
// notPurged).
func (x *searchIndex) purgeRoom(ctx context.Context, db *DB, roomID string) error {
	return x.purge(ctx, db, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM event_search_fts WHERE rowid IN
			(SELECT stream_pos FROM search_entries WHERE room_id = $1)`, roomID); err != nil {
			return fmt.Errorf("storage: purge search index: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM search_entries WHERE room_id = $1`, roomID); err != nil {
			return fmt.Errorf("storage: purge search index: %w", err)
		}
		return nil
	})
}

func (x *searchIndex) purgeEvents(ctx context.Context, db *DB, positions []int64) error {
	return x.purge(ctx, db, func(tx *txn) error { return x.deletePositions(ctx, tx, positions) })
}

func (x *searchIndex) purge(ctx context.Context, db *DB, fn func(*txn) error) error {
	const op = "purge_search_index"
	defer db.observe(op, time.Now())
	x.purges.Add(1)
	return txOn(ctx, x.w, op, fn)
}

// hits runs query, a page of matches (their stream positions and scores,
// in order) over the index, and reads their events from the main
// database. A match whose event is gone (purged since) is left out.
func (x *searchIndex) hits(ctx context.Context, db *DB, query string, args []any) ([]search.Hit, error) {
	rows, err := x.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: search events: %w", err)
	}
	defer rows.Close()
	var page []search.Hit
	var positions []any
	for rows.Next() {
		var h search.Hit
		if err := rows.Scan(&h.Event.Pos, &h.Rank); err != nil {
			return nil, fmt.Errorf("storage: search events: %w", err)
		}
		page = append(page, h)
		positions = append(positions, h.Event.Pos)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: search events: %w", err)
	}
	if len(page) == 0 {
		return nil, nil
	}
	evs, err := collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_pos IN (`+numberedParams(1, len(positions))+`)`, positions...))
	if err != nil {
		return nil, fmt.Errorf("storage: search events: %w", err)
	}
	byPos := make(map[int64]rooms.Stored, len(evs))
	for _, ev := range evs {
		byPos[ev.Pos] = ev
	}
	out := page[:0]
	for _, h := range page {
		if ev, ok := byPos[h.Event.Pos]; ok {
			h.Event = ev
			out = append(out, h)
		}
	}
	return out, nil
}
