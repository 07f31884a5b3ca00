package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"homeserver/search"
	"homeserver/stream"
)

// ensureSearchSchema prepares the engine-specific full-text index of
// search, idempotently, after the migrations: the migrations are shared by
// both engines, and full-text search is where their dialects part.
//
// PostgreSQL: a generated tsvector column of event_search (migration
// 00027; english configuration) with a GIN index, created under an
// advisory lock so that processes starting together do not race.
// SQLite keeps its index in a file of its own (searchIndex); a database
// that still holds the index it once kept here (an FTS5 table beside
// event_search) loses it, and the file is built afresh from the log.
func ensureSearchSchema(ctx context.Context, db *sql.DB, engine string) error {
	if engine == Postgres {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("storage: search index: %w", err)
		}
		defer func() { _ = tx.Rollback() }()
		for _, q := range []string{
			`SELECT pg_advisory_xact_lock(7165237)`,
			`ALTER TABLE event_search ADD COLUMN IF NOT EXISTS vector tsvector
				GENERATED ALWAYS AS (to_tsvector('english', value)) STORED`,
			`CREATE INDEX IF NOT EXISTS event_search_vector ON event_search USING GIN (vector)`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("storage: search index: %w", err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("storage: search index: %w", err)
		}
		return nil
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'event_search_fts'`).Scan(&n); err != nil {
		return fmt.Errorf("storage: search index: %w", err)
	}
	if n == 0 {
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: search index: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, q := range []string{
		`DROP TABLE event_search_fts`,
		`DELETE FROM event_search`,
		// The search package's reader, whose cursor was kept here.
		`DELETE FROM reader_cursors WHERE reader = 'search'`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("storage: search index: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("storage: search index: %w", err)
	}
	return nil
}

// searchToken is the meta token of one value of a kind (r: room, s:
// sender, k: key): letters and digits only, so that the tokenizer keeps it
// whole and no ID's punctuation reaches the query syntax.
func searchToken(kind, v string) string {
	h := sha256.Sum256([]byte(v))
	return kind + hex.EncodeToString(h[:12])
}

// searchMeta is the meta column of an entry.
func searchMeta(e search.Entry) string {
	return searchToken("r", e.RoomID) + " " + searchToken("k", e.Key) + " " + searchToken("s", e.Sender)
}

func putSearchFTS(ctx context.Context, tx *txn, e search.Entry) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO event_search_fts (rowid, value, meta) VALUES ($1, $2, $3)`, e.Pos, e.Value, searchMeta(e)); err != nil {
		return fmt.Errorf("storage: put search entry: %w", err)
	}
	return nil
}

// SearchCursor implements search.Store.
func (db *DB) SearchCursor(ctx context.Context, reader string) (int64, error) {
	if db.search != nil {
		return db.search.cursor(ctx)
	}
	pos, _, err := db.ReaderCursor(ctx, reader, stream.Events)
	return pos, err
}

// UpdateSearchIndex implements search.Store. A redaction removes the
// entry only when the rooms package marked the event redacted (an
// unauthorised redaction hides nothing).
func (db *DB) UpdateSearchIndex(ctx context.Context, reader string, u search.Update, cursor int64) error {
	if db.search != nil {
		var redacted []int64
		for _, id := range u.Redacted {
			var pos int64
			err := db.r.QueryRowContext(ctx, `SELECT stream_pos FROM events WHERE event_id = $1 AND redacted_by IS NOT NULL`, id).Scan(&pos)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("storage: delete search entry: %w", err)
			}
			redacted = append(redacted, pos)
		}
		return db.search.update(ctx, db, u, redacted, cursor)
	}
	return db.tx(ctx, "update_search_index", func(tx *txn) error {
		for _, e := range u.Put {
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_search (event_id, room_id, sender, key, value, stream_pos, origin_server_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
				e.EventID, e.RoomID, e.Sender, e.Key, e.Value, e.Pos, e.TS); err != nil {
				return fmt.Errorf("storage: put search entry: %w", err)
			}
		}
		for _, id := range u.Redacted {
			if _, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE event_id = $1
				AND EXISTS (SELECT 1 FROM events e WHERE e.event_id = $1 AND e.redacted_by IS NOT NULL)`, id); err != nil {
				return fmt.Errorf("storage: delete search entry: %w", err)
			}
		}
		if cursor >= 0 {
			return setReaderCursor(ctx, tx, reader, stream.Events, cursor)
		}
		return nil
	})
}

// searchSQL builds the FROM and WHERE of a search over the index alone
// (without After), with the score expression (higher is better) and the
// position column.
// SQLite quotes each word as an FTS5 phrase (inner quotes doubled), the
// last with a prefix '*'; PostgreSQL quotes each as a tsquery lexeme, the
// last with ':*'. Words hold letters, digits and marks only (package
// search), so no operator of either syntax can reach the engine.
func (db *DB) searchSQL(q search.Query, arg func(any) string) (from, score, pos string) {
	var where strings.Builder
	in := func(col string, vals []string, not bool) {
		if vals == nil {
			return
		}
		if len(vals) == 0 {
			if !not {
				where.WriteString(` AND 1 = 0`)
			}
			return
		}
		ph := make([]string, len(vals))
		for i, v := range vals {
			ph[i] = arg(v)
		}
		op := " IN ("
		if not {
			op = " NOT IN ("
		}
		where.WriteString(" AND " + col + op + strings.Join(ph, ",") + ")")
	}
	terms := make([]string, len(q.Words))
	if db.engine == Postgres {
		in("s.room_id", q.Rooms, false)
		in("s.key", q.Keys, false)
		in("s.sender", q.Senders, false)
		if len(q.NotSenders) > 0 {
			in("s.sender", q.NotSenders, true)
		}
		for i, w := range q.Words {
			terms[i] = "'" + strings.ReplaceAll(w, "'", "''") + "'"
			if i == len(q.Words)-1 {
				terms[i] += ":*"
			}
		}
		match := arg(strings.Join(terms, " & "))
		return `FROM event_search s CROSS JOIN to_tsquery('english', ` + match + `) tq
			WHERE s.vector @@ tq` + where.String(),
			`ts_rank_cd(s.vector, tq)::float8`, `s.stream_pos`
	}
	for i, w := range q.Words {
		terms[i] = `"` + strings.ReplaceAll(w, `"`, `""`) + `"`
		if i == len(q.Words)-1 {
			terms[i] += " *"
		}
	}
	expr := "value : (" + strings.Join(terms, " ") + ")"
	anyOf := func(kind string, vals []string) string {
		toks := make([]string, len(vals))
		for i, v := range vals {
			toks[i] = searchToken(kind, v)
		}
		return "meta : (" + strings.Join(toks, " OR ") + ")"
	}
	expr += " AND " + anyOf("r", q.Rooms)
	// Every entry has one of the three keys: naming them all would only
	// cost the engine a read of the longest doclists.
	if len(q.Keys) < 3 {
		expr += " AND " + anyOf("k", q.Keys)
	}
	if q.Senders != nil {
		if len(q.Senders) == 0 {
			return `FROM event_search_fts f WHERE 1 = 0`, `0.0`, `f.rowid`
		}
		expr += " AND " + anyOf("s", q.Senders)
	}
	if len(q.NotSenders) > 0 {
		expr += " NOT " + anyOf("s", q.NotSenders)
	}
	// The meta column weighs nothing in the rank.
	return `FROM event_search_fts f WHERE event_search_fts MATCH ` + arg(expr),
		`(-bm25(event_search_fts, 1.0, 0.0))`, `f.rowid`
}

// SearchEvents implements search.Store. Redacted events are returned
// (with RedactedBy), for the caller to skip: leaving them out here would
// end a page short, which reads as the end of the results.
func (db *DB) SearchEvents(ctx context.Context, q search.Query) ([]search.Hit, error) {
	defer db.observe("search_events", time.Now())
	if len(q.Words) == 0 || len(q.Rooms) == 0 || len(q.Keys) == 0 {
		return nil, nil
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	from, score, pos := db.searchSQL(q, arg)
	// The matches are ordered and cut in the index alone; only the page's
	// events are read.
	var b strings.Builder
	b.WriteString(`SELECT ` + pos + ` AS pos, ` + score + ` AS score ` + from)
	if q.Recent {
		if q.After != nil {
			b.WriteString(` AND ` + pos + ` < ` + arg(q.After.Pos))
		}
		b.WriteString(` ORDER BY ` + pos + ` DESC`)
	} else {
		if q.After != nil {
			r, p := arg(q.After.Rank), arg(q.After.Pos)
			b.WriteString(` AND (` + score + ` < ` + r + ` OR (` + score + ` = ` + r + ` AND ` + pos + ` < ` + p + `))`)
		}
		b.WriteString(` ORDER BY score DESC, ` + pos + ` DESC`)
	}
	b.WriteString(` LIMIT ` + arg(q.Limit))
	if db.search != nil {
		return db.search.hits(ctx, db, b.String(), args)
	}
	order := `m.score DESC, m.pos DESC`
	if q.Recent {
		order = `m.pos DESC`
	}
	query := `SELECT ` + prefixed("e", eventColumns) + `, m.score FROM (` + b.String() + `) m
		CROSS JOIN events e WHERE e.stream_pos = m.pos ORDER BY ` + order
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: search events: %w", err)
	}
	defer rows.Close()
	var out []search.Hit
	for rows.Next() {
		var h search.Hit
		if h.Event, err = scanStored(rankScanner{rows, &h.Rank}); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: search events: %w", err)
	}
	return out, nil
}

// rankScanner scans an event row followed by its rank.
type rankScanner struct {
	rows *sql.Rows
	rank *float64
}

func (r rankScanner) Scan(dest ...any) error { return r.rows.Scan(append(dest, r.rank)...) }

// CountSearchEvents implements search.Store.
func (db *DB) CountSearchEvents(ctx context.Context, q search.Query, max int) (int, error) {
	defer db.observe("count_search_events", time.Now())
	if len(q.Words) == 0 || len(q.Rooms) == 0 || len(q.Keys) == 0 {
		return 0, nil
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	from, _, _ := db.searchSQL(q, arg)
	r := db.r
	if db.search != nil {
		r = db.search.r
	}
	var n int
	err := r.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 `+from+` LIMIT `+arg(max)+`) c`, args...).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("storage: count search events: %w", err)
	}
	return n, nil
}

var _ search.Store = (*DB)(nil)
