package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"homeserver/accountdata"

	"homeserver/stream"
)

var _ accountdata.Store = (*DB)(nil)

// errNoChange rolls back an account-data update that changed nothing, so
// that it consumes no stream position.
var errNoChange = errors.New("storage: account data unchanged")

func (db *DB) UpdateAccountData(ctx context.Context, userID, roomID, eventType string, fn func(json.RawMessage) (json.RawMessage, error)) (int64, error) {
	var pos int64
	err := db.tx(ctx, "update_account_data", func(tx *txn) error {
		// Taking the position first locks the counter row until commit
		// (PostgreSQL; SQLite has one writer anyway): concurrent writers,
		// even in other processes, queue here and then read current content.
		var err error
		if pos, err = nextStreamPos(ctx, tx, string(stream.AccountData)); err != nil {
			return err
		}
		var current json.RawMessage
		var s string
		err = tx.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
			userID, roomID, eventType).Scan(&s)
		switch {
		case err == nil:
			current = json.RawMessage(s)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("storage: read account data: %w", err)
		}
		next, err := fn(current)
		if err != nil {
			return err
		}
		if next == nil {
			return errNoChange
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
			userID, roomID, eventType, string(next), pos)
		if err != nil {
			return fmt.Errorf("storage: write account data: %w", err)
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return pos, nil
}

func (db *DB) getAccountData(ctx context.Context, userID, roomID, eventType string) (json.RawMessage, error) {
	defer db.observe("get_account_data", time.Now())
	var s string
	err := db.r.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, eventType).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, accountdata.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get account data: %w", err)
	}
	return json.RawMessage(s), nil
}

// IgnoredUserList is the user's m.ignored_user_list content, nil when
// they have none.
func (db *DB) IgnoredUserList(ctx context.Context, userID string) (json.RawMessage, error) {
	raw, err := db.GetAccountData(ctx, userID, "", "m.ignored_user_list")
	if errors.Is(err, accountdata.ErrNotFound) {
		return nil, nil
	}
	return raw, err
}

// IgnoredUserLists returns the m.ignored_user_list content of those of
// the users that have one.
func (db *DB) IgnoredUserLists(ctx context.Context, userIDs []string) (map[string][]byte, error) {
	defer db.observe("ignored_user_lists", time.Now())
	out := map[string][]byte{}
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		in, args := inList(chunk, nil)
		rows, err := db.r.QueryContext(ctx, `SELECT user_id, content FROM account_data
			WHERE user_id IN (`+in+`) AND room_id = '' AND type = 'm.ignored_user_list'`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: ignored user lists: %w", err)
		}
		for rows.Next() {
			var u, c string
			if err := rows.Scan(&u, &c); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: ignored user lists: %w", err)
			}
			out[u] = []byte(c)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: ignored user lists: %w", err)
		}
	}
	return out, nil
}

func (db *DB) AccountDataSince(ctx context.Context, userID string, from, to int64) ([]accountdata.Item, error) {
	defer db.observe("account_data_since", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, fmt.Errorf("storage: account data since: %w", err)
	}
	defer rows.Close()
	var out []accountdata.Item
	for rows.Next() {
		var it accountdata.Item
		var content string
		if err := rows.Scan(&it.RoomID, &it.Type, &content, &it.Pos); err != nil {
			return nil, fmt.Errorf("storage: account data since: %w", err)
		}
		it.Content = json.RawMessage(content)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: account data since: %w", err)
	}
	return out, nil
}

func (db *DB) MaxAccountDataPos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.AccountData))
}
