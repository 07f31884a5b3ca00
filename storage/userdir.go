package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"homeserver/stream"
	"homeserver/userdir"
)

// UserDirectoryLocalMissing implements userdir.Store.
func (db *DB) UserDirectoryLocalMissing(ctx context.Context, limit int) ([]string, error) {
	defer db.observe("user_directory_local_missing", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT u.user_id FROM users u
		WHERE NOT u.deactivated AND u.appservice_id = ''
		AND NOT EXISTS (SELECT 1 FROM user_directory d WHERE d.user_id = u.user_id)
		ORDER BY u.user_id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: user directory missing users: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("storage: user directory missing users: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// UpdateUserDirectory implements userdir.Store.
func (db *DB) UpdateUserDirectory(ctx context.Context, reader string, u userdir.Update, cursor int64) error {
	return db.tx(ctx, "update_user_directory", func(tx *txn) error {
		for _, id := range u.Delete {
			if err := deleteUserDirEntry(ctx, tx, id); err != nil {
				return err
			}
		}
		for _, e := range u.Put {
			if err := deleteUserDirEntry(ctx, tx, e.UserID); err != nil {
				return err
			}
			// An upsert: the reader and a profile change may put the same
			// new user at once, and on PostgreSQL neither delete sees the
			// other's row.
			if _, err := tx.ExecContext(ctx, `INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, sort_key)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url,
					is_local = excluded.is_local, sort_key = excluded.sort_key`, e.UserID, nullString(e.DisplayName), nullString(e.AvatarURL), e.Local, e.SortKey); err != nil {
				return fmt.Errorf("storage: put user directory entry: %w", err)
			}
			for _, t := range e.Tokens {
				if _, err := tx.ExecContext(ctx, `INSERT INTO user_directory_search (token, user_id) VALUES ($1, $2)
					ON CONFLICT (token, user_id) DO NOTHING`, t, e.UserID); err != nil {
					return fmt.Errorf("storage: put user directory token: %w", err)
				}
			}
		}
		for room, public := range u.Public {
			q := `DELETE FROM user_directory_public_rooms WHERE room_id = $1`
			if public {
				q = `INSERT INTO user_directory_public_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING`
			}
			if _, err := tx.ExecContext(ctx, q, room); err != nil {
				return fmt.Errorf("storage: user directory public room: %w", err)
			}
		}
		if cursor >= 0 {
			return setReaderCursor(ctx, tx, reader, stream.Events, cursor)
		}
		return nil
	})
}

func deleteUserDirEntry(ctx context.Context, tx *txn, userID string) error {
	for _, q := range []string{
		`DELETE FROM user_directory_search WHERE user_id = $1`,
		`DELETE FROM user_directory WHERE user_id = $1`,
	} {
		if _, err := tx.ExecContext(ctx, q, userID); err != nil {
			return fmt.Errorf("storage: delete user directory entry: %w", err)
		}
	}
	return nil
}

// SearchUserDirectory implements userdir.Store. A user is visible when
// local and q.AllLocal, when joined to a public room, or when joined to a
// room the searcher is joined to; membership is read from current_state,
// so it is never behind the log. Deactivated users and those registered
// by an application service are never listed.
func (db *DB) SearchUserDirectory(ctx context.Context, q userdir.Query) ([]userdir.Entry, error) {
	defer db.observe("search_user_directory", time.Now())
	args := []any{q.Searcher}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var b strings.Builder
	b.WriteString(`SELECT d.user_id, d.display_name, d.avatar_url, d.is_local, d.sort_key FROM user_directory d WHERE `)
	for _, w := range q.Words {
		// Words are letters and digits only (userdir's tokeniser), so
		// they hold no LIKE wildcard. The range lets both engines use the
		// token index whatever the collation; LIKE makes the match exact.
		b.WriteString(`d.user_id IN (SELECT t.user_id FROM user_directory_search t WHERE t.token >= ` + arg(w))
		if hi, ok := prefixUpperBound(w); ok {
			b.WriteString(` AND t.token < ` + arg(hi))
		}
		b.WriteString(` AND t.token LIKE ` + arg(w+"%") + `) AND `)
	}
	b.WriteString(`(`)
	if q.AllLocal {
		b.WriteString(`d.is_local OR `)
	}
	b.WriteString(`EXISTS (SELECT 1 FROM current_state m JOIN user_directory_public_rooms p ON p.room_id = m.room_id
			WHERE m.state_key = d.user_id AND m.type = 'm.room.member' AND m.membership = 'join')
		OR (d.user_id <> $1 AND EXISTS (SELECT 1 FROM current_state m JOIN current_state s ON s.room_id = m.room_id
			WHERE m.state_key = d.user_id AND m.type = 'm.room.member' AND m.membership = 'join'
			AND s.state_key = $1 AND s.type = 'm.room.member' AND s.membership = 'join')))
		AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = d.user_id AND (u.deactivated OR u.appservice_id <> ''))
		ORDER BY `)
	if q.PreferLocal {
		b.WriteString(`d.is_local DESC, `)
	}
	b.WriteString(`CASE WHEN d.display_name IS NULL THEN 1 ELSE 0 END, d.sort_key, d.user_id LIMIT ` + arg(q.Limit+1))
	rows, err := db.r.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("storage: search user directory: %w", err)
	}
	defer rows.Close()
	var out []userdir.Entry
	for rows.Next() {
		var e userdir.Entry
		var name, avatar sql.NullString
		if err := rows.Scan(&e.UserID, &name, &avatar, &e.Local, &e.SortKey); err != nil {
			return nil, fmt.Errorf("storage: search user directory: %w", err)
		}
		e.DisplayName, e.AvatarURL = name.String, avatar.String
		out = append(out, e)
	}
	return out, rows.Err()
}

// prefixUpperBound is the least string greater than every string starting
// with p (its last rune incremented); ok is false when there is none.
func prefixUpperBound(p string) (string, bool) {
	r, size := utf8.DecodeLastRuneInString(p)
	if r == utf8.RuneError || r >= utf8.MaxRune {
		return "", false
	}
	r++
	if r >= 0xD800 && r <= 0xDFFF { // surrogates are not valid in UTF-8
		r = 0xE000
	}
	return p[:len(p)-size] + string(r), true
}
