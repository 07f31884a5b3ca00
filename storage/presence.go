package storage

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"homeserver/presence"

	"homeserver/stream"
)

var _ presence.Store = (*DB)(nil)

// presenceLockKey names the PostgreSQL advisory lock that serialises
// presence writes, so that positions allocated as MAX + 1 are strictly
// increasing in commit order even across processes sharing the database.
// SQLite needs none: its single writer connection takes the write lock at
// BEGIN.
const presenceLockKey int64 = 0x70726573656e6365 // "presence"

const presenceColumns = `user_id, presence, status_msg, last_active_ts, currently_active, stream_pos`

func scanPresence(s scanner) (presence.Status, error) {
	var st presence.Status
	err := s.Scan(&st.UserID, &st.Presence, &st.StatusMsg, &st.LastActiveTS, &st.CurrentlyActive, &st.Pos)
	return st, err
}

// GetPresence is asked on every /sync (to mark the user active): with
// SQLite its answers are kept until a write to presence (tableGens).
func (db *DB) GetPresence(ctx context.Context, userID string) (presence.Status, bool, error) {
	e, err := cachedRead(db.w.gens, presenceTables, db.presence, userID, func(e presenceRow) presenceRow { return e },
		func() (presenceRow, error) {
			st, found, err := db.readPresence(ctx, userID)
			return presenceRow{st, found}, err
		})
	return e.st, e.found, err
}

type presenceRow struct {
	st    presence.Status
	found bool
}

func (db *DB) readPresence(ctx context.Context, userID string) (presence.Status, bool, error) {
	defer db.observe("get_presence", time.Now())
	st, err := scanPresence(db.r.QueryRowContext(ctx, `SELECT `+presenceColumns+` FROM presence WHERE user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return presence.Status{}, false, nil
	}
	if err != nil {
		return presence.Status{}, false, fmt.Errorf("storage: get presence: %w", err)
	}
	return st, true, nil
}

func (db *DB) UpdatePresence(ctx context.Context, userID string, decide func(presence.Status, bool) (presence.Status, bool)) (presence.Status, bool, error) {
	var out presence.Status
	var written bool
	err := db.tx(ctx, "update_presence", func(tx *txn) error {
		if db.engine == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, presenceLockKey); err != nil {
				return fmt.Errorf("storage: lock presence: %w", err)
			}
		}
		cur, err := scanPresence(tx.QueryRowContext(ctx, `SELECT `+presenceColumns+` FROM presence WHERE user_id = $1`, userID))
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: read presence: %w", err)
		}
		next, write := decide(cur, found)
		if !write {
			out = cur
			return nil
		}
		next.UserID = userID
		if next.Pos, err = nextStreamPos(ctx, tx, string(stream.Presence)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO presence (`+presenceColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id) DO UPDATE SET
				presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
				currently_active = excluded.currently_active, stream_pos = excluded.stream_pos`,
			next.UserID, next.Presence, next.StatusMsg, next.LastActiveTS, next.CurrentlyActive, next.Pos)
		if err != nil {
			return fmt.Errorf("storage: write presence: %w", err)
		}
		out, written = next, true
		return nil
	})
	if err != nil {
		return presence.Status{}, false, err
	}
	return out, written, nil
}

func (db *DB) PresenceSince(ctx context.Context, userIDs []string, from, to int64) ([]presence.Status, error) {
	defer db.observe("presence_since", time.Now())
	userIDs = slices.Compact(slices.Sorted(slices.Values(userIDs)))
	var out []presence.Status
	// Chunked to stay under the engines' bound-parameter limits.
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		args := make([]any, 0, len(chunk)+2)
		args = append(args, from, to)
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", i+3)
		}
		rows, err := db.r.QueryContext(ctx, `SELECT `+presenceColumns+` FROM presence
			WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: presence since: %w", err)
		}
		for rows.Next() {
			st, err := scanPresence(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: presence since: %w", err)
			}
			out = append(out, st)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: presence since: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b presence.Status) int { return cmp.Compare(a.Pos, b.Pos) })
	return out, nil
}

func (db *DB) MaxPresencePos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.Presence))
}

func (db *DB) PresenceChanged(ctx context.Context, from, to int64) ([]presence.Status, error) {
	defer db.observe("presence_changed", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT `+presenceColumns+` FROM presence
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos`, from, to)
	if err != nil {
		return nil, fmt.Errorf("storage: presence changed: %w", err)
	}
	defer rows.Close()
	var out []presence.Status
	for rows.Next() {
		st, err := scanPresence(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: presence changed: %w", err)
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

func (db *DB) StalePresence(ctx context.Context, before int64) ([]string, error) {
	defer db.observe("stale_presence", time.Now())
	return queryStrings(ctx, db.r, `SELECT user_id FROM presence
		WHERE presence <> 'offline' AND last_active_ts < $1 ORDER BY user_id`, before)
}
