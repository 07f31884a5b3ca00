package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"homeserver/stream"
)

// Counters that hand out identifiers rather than stream positions, from the
// same table and with the same idiom.
const (
	counterStateGroups = "state_groups"
	counterPushers     = "pushers"
	counterOTKUpload   = "otk_upload"
)

var counterToDevice = string(stream.ToDevice)

// nextStreamPos takes the next position of a stream (or identifier of a
// counter) inside the writer's transaction. The upsert locks the counter
// row until the transaction ends: positions commit in the order they are
// handed out, even with several processes on PostgreSQL, so a reader that
// has seen N never later finds N-1 committing. A rolled-back transaction
// gives its position back.
func nextStreamPos(ctx context.Context, tx *txn, name string) (int64, error) {
	return nextStreamBlock(ctx, tx, name, 1)
}

// nextStreamBlock takes n consecutive positions and returns the last.
func nextStreamBlock(ctx context.Context, tx *txn, name string, n int64) (int64, error) {
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO stream_counters (name, pos) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET pos = stream_counters.pos + $2 RETURNING pos`, name, n).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("storage: allocate %s position: %w", name, err)
	}
	return pos, nil
}

// streamMaxPos reads the newest committed position of a stream.
func (db *DB) streamMaxPos(ctx context.Context, name string) (int64, error) {
	defer db.observe("max_pos_"+name, time.Now())
	return streamMaxPosOn(ctx, db.r, name)
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func streamMaxPosOn(ctx context.Context, q rowQuerier, name string) (int64, error) {
	var pos int64
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(pos), 0) FROM stream_counters WHERE name = $1`, name).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("storage: max %s position: %w", name, err)
	}
	return pos, nil
}

// ReaderCursor returns a durable reader's cursor in a stream; ok is false
// when the reader has none yet.
func (db *DB) ReaderCursor(ctx context.Context, reader string, s stream.Name) (pos int64, ok bool, err error) {
	defer db.observe("reader_cursor", time.Now())
	err = db.r.QueryRowContext(ctx, `SELECT pos FROM reader_cursors WHERE reader = $1 AND stream = $2`, reader, string(s)).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("storage: reader cursor: %w", err)
	}
	return pos, true, nil
}

// SetReaderCursor moves a durable reader's cursor.
func (db *DB) SetReaderCursor(ctx context.Context, reader string, s stream.Name, pos int64) error {
	defer db.observe("set_reader_cursor", time.Now())
	return setReaderCursor(ctx, db.w, reader, s, pos)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func setReaderCursor(ctx context.Context, x execer, reader string, s stream.Name, pos int64) error {
	_, err := x.ExecContext(ctx, `INSERT INTO reader_cursors (reader, stream, pos) VALUES ($1, $2, $3)
		ON CONFLICT (reader, stream) DO UPDATE SET pos = excluded.pos`, reader, string(s), pos)
	if err != nil {
		return fmt.Errorf("storage: set reader cursor: %w", err)
	}
	return nil
}

// deleteReaderCursors forgets every cursor of the readers.
func deleteReaderCursors(ctx context.Context, x execer, readers []string) error {
	if len(readers) == 0 {
		return nil
	}
	in, args := inList(readers, nil)
	if _, err := x.ExecContext(ctx, `DELETE FROM reader_cursors WHERE reader IN (`+in+`)`, args...); err != nil {
		return fmt.Errorf("storage: delete reader cursors: %w", err)
	}
	return nil
}

// StreamHeads reads the positions of several streams in one query (what
// every /sync reads first): a stream with no position yet is 0.
func (db *DB) StreamHeads(ctx context.Context, names []stream.Name) (map[stream.Name]int64, error) {
	defer db.observe("stream_heads", time.Now())
	out := make(map[stream.Name]int64, len(names))
	if len(names) == 0 {
		return out, nil
	}
	args := make([]any, len(names))
	marks := make([]string, len(names))
	for i, n := range names {
		args[i] = string(n)
		marks[i] = fmt.Sprintf("$%d", i+1)
		out[n] = 0
	}
	// One row per stream (name is the key): no grouping, which SQLite
	// would sort through a temporary b-tree on every /sync.
	rows, err := db.r.QueryContext(ctx, `SELECT name, pos FROM stream_counters WHERE name IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: stream heads: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var pos sql.NullInt64
		if err := rows.Scan(&name, &pos); err != nil {
			return nil, fmt.Errorf("storage: stream heads: %w", err)
		}
		out[stream.Name(name)] = pos.Int64
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: stream heads: %w", err)
	}
	if t := db.r.pinned(ctx); t != nil {
		t.setHeads(out)
	}
	return out, nil
}
