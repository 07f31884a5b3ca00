package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"homeserver/keybackup"
)

var _ keybackup.Store = (*DB)(nil)

// Batch sizes of the key backup's multi-row statements, well below both
// engines' limits on bound parameters.
const (
	kbReadBatch  = 500 // sessions (2 parameters each) per SELECT
	kbWriteBatch = 100 // rows (8 parameters each) per INSERT
)

// kbLock locks the user's counter row until commit, creating it if needed,
// which serialises the user's backup writes (PostgreSQL holds the row lock;
// SQLite has one writer anyway). With allocate it also takes the next
// version number, which it returns.
func kbLock(ctx context.Context, tx *txn, userID string, allocate bool) (int64, error) {
	q := `INSERT INTO key_backup_counters (user_id, last_version) VALUES ($1, 0)
		ON CONFLICT (user_id) DO UPDATE SET last_version = key_backup_counters.last_version RETURNING last_version`
	if allocate {
		q = `INSERT INTO key_backup_counters (user_id, last_version) VALUES ($1, 1)
			ON CONFLICT (user_id) DO UPDATE SET last_version = key_backup_counters.last_version + 1 RETURNING last_version`
	}
	var last int64
	if err := tx.QueryRowContext(ctx, q, userID).Scan(&last); err != nil {
		return 0, fmt.Errorf("storage: lock key backup of %s: %w", userID, err)
	}
	return last, nil
}

// kbQuerier is what both *sql.DB and *txn offer for reads.
type kbQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// kbVersion reads a live version; version 0 is the current one.
func kbVersion(ctx context.Context, q kbQuerier, userID string, version int64) (keybackup.Version, error) {
	query := `SELECT version, algorithm, auth_data, etag, key_count FROM key_backup_versions
		WHERE user_id = $1 AND version = $2 AND deleted = FALSE`
	args := []any{userID, version}
	if version == 0 {
		query = `SELECT version, algorithm, auth_data, etag, key_count FROM key_backup_versions
			WHERE user_id = $1 AND deleted = FALSE ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	var v keybackup.Version
	var authData string
	err := q.QueryRowContext(ctx, query, args...).Scan(&v.Version, &v.Algorithm, &authData, &v.ETag, &v.Count)
	if errors.Is(err, sql.ErrNoRows) {
		return keybackup.Version{}, keybackup.ErrNotFound
	}
	if err != nil {
		return keybackup.Version{}, fmt.Errorf("storage: read key backup version: %w", err)
	}
	v.AuthData = json.RawMessage(authData)
	return v, nil
}

// kbCounts reads a version's etag and key count.
func kbCounts(ctx context.Context, tx *txn, userID string, version int64) (keybackup.Counts, error) {
	var c keybackup.Counts
	err := tx.QueryRowContext(ctx, `SELECT etag, key_count FROM key_backup_versions WHERE user_id = $1 AND version = $2`,
		userID, version).Scan(&c.ETag, &c.Count)
	if err != nil {
		return keybackup.Counts{}, fmt.Errorf("storage: read key backup counts: %w", err)
	}
	return c, nil
}

// kbKeyFilter narrows a query on key_backup_keys to a room or a session.
func kbKeyFilter(userID string, version int64, roomID, sessionID string) (string, []any) {
	where := `user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		where += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			where += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	return where, args
}

func (db *DB) CreateKeyBackupVersion(ctx context.Context, userID, algorithm string, authData json.RawMessage) (int64, error) {
	var version int64
	err := db.tx(ctx, "create_key_backup_version", func(tx *txn) error {
		var err error
		if version, err = kbLock(ctx, tx, userID, true); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data, etag, key_count, deleted)
			VALUES ($1, $2, $3, $4, 0, 0, FALSE)`, userID, version, algorithm, string(authData))
		if err != nil {
			return fmt.Errorf("storage: create key backup version: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return version, nil
}

func (db *DB) KeyBackupVersion(ctx context.Context, userID string, version int64) (keybackup.Version, error) {
	defer db.observe("key_backup_version", time.Now())
	return kbVersion(ctx, db.r, userID, version)
}

func (db *DB) UpdateKeyBackupVersion(ctx context.Context, userID string, version int64, fn func(keybackup.Version) (json.RawMessage, error)) error {
	return db.tx(ctx, "update_key_backup_version", func(tx *txn) error {
		if _, err := kbLock(ctx, tx, userID, false); err != nil {
			return err
		}
		cur, err := kbVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		authData, err := fn(cur)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2`,
			userID, version, string(authData))
		if err != nil {
			return fmt.Errorf("storage: update key backup version: %w", err)
		}
		return nil
	})
}

func (db *DB) DeleteKeyBackupVersion(ctx context.Context, userID string, version int64) error {
	return db.tx(ctx, "delete_key_backup_version", func(tx *txn) error {
		if _, err := kbLock(ctx, tx, userID, false); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET deleted = TRUE, key_count = 0, etag = etag + 1
			WHERE user_id = $1 AND version = $2`, userID, version)
		if err != nil {
			return fmt.Errorf("storage: delete key backup version: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("storage: delete key backup version: %w", err)
		} else if n == 0 {
			return keybackup.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2`, userID, version)
		if err != nil {
			return fmt.Errorf("storage: delete key backup keys: %w", err)
		}
		return nil
	})
}

// kbSession names a session within a version.
type kbSession struct{ room, session string }

func (db *DB) PutKeyBackupKeys(ctx context.Context, userID string, version int64, keys []keybackup.Key, replace func(old, new keybackup.Key) bool) (keybackup.Counts, error) {
	var out keybackup.Counts
	err := db.tx(ctx, "put_key_backup_keys", func(tx *txn) error {
		if _, err := kbLock(ctx, tx, userID, false); err != nil {
			return err
		}
		// Writes go only into the current version, which cannot change
		// while the lock is held.
		cur, err := kbVersion(ctx, tx, userID, 0)
		if err != nil {
			return err
		}
		if cur.Version != version {
			if _, err := kbVersion(ctx, tx, userID, version); err != nil {
				return err
			}
			return &keybackup.WrongVersionError{Current: cur.Version}
		}
		existing, err := kbExisting(ctx, tx, userID, version, keys)
		if err != nil {
			return err
		}
		var writes []keybackup.Key
		var added int64
		for _, k := range keys {
			ref := kbSession{k.RoomID, k.SessionID}
			old, ok := existing[ref]
			if ok && !replace(old, k) {
				continue
			}
			if !ok {
				added++
			}
			// A session named twice is compared with its pending key.
			existing[ref] = k
			writes = append(writes, k)
		}
		if len(writes) > 0 {
			if err := kbWrite(ctx, tx, userID, version, writes); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET etag = etag + 1, key_count = key_count + $3
				WHERE user_id = $1 AND version = $2`, userID, version, added)
			if err != nil {
				return fmt.Errorf("storage: update key backup counts: %w", err)
			}
		}
		out, err = kbCounts(ctx, tx, userID, version)
		return err
	})
	return out, err
}

// kbExisting reads the metadata (not the session data) of the stored keys of
// the sessions keys name, a batch of sessions per query whatever their rooms.
func kbExisting(ctx context.Context, tx *txn, userID string, version int64, keys []keybackup.Key) (map[kbSession]keybackup.Key, error) {
	out := make(map[kbSession]keybackup.Key, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), kbReadBatch)
		args := make([]any, 0, 2+2*n)
		args = append(args, userID, version)
		pairs := make([]string, n)
		for i, k := range keys[:n] {
			args = append(args, k.RoomID, k.SessionID)
			pairs[i] = fmt.Sprintf("($%d, $%d)", len(args)-1, len(args))
		}
		keys = keys[n:]
		rows, err := tx.QueryContext(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified
			FROM key_backup_keys WHERE user_id = $1 AND version = $2
			AND (room_id, session_id) IN (VALUES `+strings.Join(pairs, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: read key backup keys: %w", err)
		}
		for rows.Next() {
			var k keybackup.Key
			if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: read key backup keys: %w", err)
			}
			out[kbSession{k.RoomID, k.SessionID}] = k
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: read key backup keys: %w", err)
		}
	}
	return out, nil
}

// kbWrite inserts or overwrites keys, a batch of rows per statement.
func kbWrite(ctx context.Context, tx *txn, userID string, version int64, keys []keybackup.Key) error {
	for len(keys) > 0 {
		n := min(len(keys), kbWriteBatch)
		var sb strings.Builder
		sb.WriteString(`INSERT INTO key_backup_keys (user_id, version, room_id, session_id, first_message_index,
			forwarded_count, is_verified, session_data) VALUES `)
		args := make([]any, 0, n*8)
		for i, k := range keys[:n] {
			if i > 0 {
				sb.WriteString(", ")
			}
			b := len(args)
			fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", b+1, b+2, b+3, b+4, b+5, b+6, b+7, b+8)
			args = append(args, userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData))
		}
		sb.WriteString(` ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
			first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
			is_verified = excluded.is_verified, session_data = excluded.session_data`)
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("storage: write key backup keys: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}

func (db *DB) KeyBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]keybackup.Key, error) {
	defer db.observe("key_backup_keys", time.Now())
	if _, err := kbVersion(ctx, db.r, userID, version); err != nil {
		return nil, err
	}
	where, args := kbKeyFilter(userID, version, roomID, sessionID)
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM key_backup_keys WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: key backup keys: %w", err)
	}
	defer rows.Close()
	var out []keybackup.Key
	for rows.Next() {
		var k keybackup.Key
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, fmt.Errorf("storage: key backup keys: %w", err)
		}
		k.SessionData = json.RawMessage(data)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: key backup keys: %w", err)
	}
	return out, nil
}

func (db *DB) DeleteKeyBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (keybackup.Counts, error) {
	var out keybackup.Counts
	err := db.tx(ctx, "delete_key_backup_keys", func(tx *txn) error {
		if _, err := kbLock(ctx, tx, userID, false); err != nil {
			return err
		}
		if _, err := kbVersion(ctx, tx, userID, version); err != nil {
			return err
		}
		where, args := kbKeyFilter(userID, version, roomID, sessionID)
		res, err := tx.ExecContext(ctx, `DELETE FROM key_backup_keys WHERE `+where, args...)
		if err != nil {
			return fmt.Errorf("storage: delete key backup keys: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("storage: delete key backup keys: %w", err)
		}
		if n > 0 {
			_, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET etag = etag + 1, key_count = key_count - $3
				WHERE user_id = $1 AND version = $2`, userID, version, n)
			if err != nil {
				return fmt.Errorf("storage: update key backup counts: %w", err)
			}
		}
		out, err = kbCounts(ctx, tx, userID, version)
		return err
	})
	return out, err
}
