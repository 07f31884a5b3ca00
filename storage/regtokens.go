package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"homeserver/accounts"
)

var _ accounts.RegistrationTokenStore = (*DB)(nil)

// regTokenColumns selects a token with its pending uses: the sessions
// holding it that were created at or after $1.
const regTokenColumns = `t.token, t.uses_allowed, t.completed, t.expiry_time,
	(SELECT COUNT(*) FROM uia_sessions s WHERE s.registration_token = t.token AND s.created_ts >= $1)`

func scanRegToken(row interface{ Scan(...any) error }) (accounts.RegistrationToken, error) {
	var t accounts.RegistrationToken
	var uses, expiry sql.NullInt64
	if err := row.Scan(&t.Token, &uses, &t.Completed, &expiry, &t.Pending); err != nil {
		return t, err
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if expiry.Valid {
		t.ExpiryTime = &expiry.Int64
	}
	return t, nil
}

// CreateRegistrationToken stores a new token.
func (db *DB) CreateRegistrationToken(ctx context.Context, t accounts.RegistrationToken) error {
	res, err := db.exec(ctx, "create_registration_token", `INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_time)
		VALUES ($1, $2, 0, $3) ON CONFLICT (token) DO NOTHING`, t.Token, t.UsesAllowed, t.ExpiryTime)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("storage: create registration token: %w", err)
	} else if n == 0 {
		return accounts.ErrTokenExists
	}
	return nil
}

// GetRegistrationToken returns one token, or accounts.ErrNotFound.
func (db *DB) GetRegistrationToken(ctx context.Context, token string, pendingSince int64) (accounts.RegistrationToken, error) {
	defer db.observe("get_registration_token", time.Now())
	t, err := scanRegToken(db.r.QueryRowContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens t WHERE t.token = $2`, pendingSince, token))
	if errors.Is(err, sql.ErrNoRows) {
		return t, accounts.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("storage: get registration token: %w", err)
	}
	return t, nil
}

// ListRegistrationTokens returns every token, in token order.
func (db *DB) ListRegistrationTokens(ctx context.Context, pendingSince int64) ([]accounts.RegistrationToken, error) {
	defer db.observe("list_registration_tokens", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens t ORDER BY t.token`, pendingSince)
	if err != nil {
		return nil, fmt.Errorf("storage: list registration tokens: %w", err)
	}
	defer rows.Close()
	out := []accounts.RegistrationToken{}
	for rows.Next() {
		t, err := scanRegToken(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: list registration tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: list registration tokens: %w", err)
	}
	return out, nil
}

// UpdateRegistrationToken sets the fields u marks, or fails with
// accounts.ErrNotFound.
func (db *DB) UpdateRegistrationToken(ctx context.Context, token string, u accounts.RegistrationTokenUpdate) error {
	var sets []string
	args := []any{token}
	if u.SetUsesAllowed {
		args = append(args, u.UsesAllowed)
		sets = append(sets, fmt.Sprintf("uses_allowed = $%d", len(args)))
	}
	if u.SetExpiryTime {
		args = append(args, u.ExpiryTime)
		sets = append(sets, fmt.Sprintf("expiry_time = $%d", len(args)))
	}
	if len(sets) == 0 {
		return nil
	}
	res, err := db.exec(ctx, "update_registration_token",
		`UPDATE registration_tokens SET `+strings.Join(sets, ", ")+` WHERE token = $1`, args...)
	if err != nil {
		return err
	}
	return regTokenRow(res, "update registration token")
}

// DeleteRegistrationToken deletes a token, or fails with accounts.ErrNotFound.
func (db *DB) DeleteRegistrationToken(ctx context.Context, token string) error {
	res, err := db.exec(ctx, "delete_registration_token", `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return err
	}
	return regTokenRow(res, "delete registration token")
}

func regTokenRow(res sql.Result, op string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("storage: %s: %w", op, err)
	}
	if n == 0 {
		return accounts.ErrNotFound
	}
	return nil
}

// HoldRegistrationToken lets the session hold token if the token is valid
// at now, counting the other sessions that hold it since pendingSince.
func (db *DB) HoldRegistrationToken(ctx context.Context, sessionID, token string, now, pendingSince int64) (bool, error) {
	// PostgreSQL: the row lock makes concurrent holders of one token wait
	// for each other's count. SQLite's write transactions are serial.
	lock := ""
	if db.engine == Postgres {
		lock = " FOR UPDATE"
	}
	held := false
	err := db.tx(ctx, "hold_registration_token", func(tx *txn) error {
		var uses, expiry sql.NullInt64
		var completed int64
		err := tx.QueryRowContext(ctx, `SELECT uses_allowed, completed, expiry_time FROM registration_tokens WHERE token = $1`+lock, token).
			Scan(&uses, &completed, &expiry)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: hold registration token: %w", err)
		}
		if expiry.Valid && expiry.Int64 <= now {
			return nil
		}
		if uses.Valid {
			var pending int64
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM uia_sessions
				WHERE registration_token = $1 AND created_ts >= $2 AND session_id <> $3`, token, pendingSince, sessionID).Scan(&pending); err != nil {
				return fmt.Errorf("storage: hold registration token: %w", err)
			}
			if pending+completed >= uses.Int64 {
				return nil
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE uia_sessions SET registration_token = $1 WHERE session_id = $2`, token, sessionID)
		if err != nil {
			return fmt.Errorf("storage: hold registration token: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("storage: hold registration token: %w", err)
		}
		held = n == 1
		return nil
	})
	return held, err
}

// FinishRegistrationSession deletes the session and counts the use of the
// token it held. Deleting first makes the use count once however many
// requests finish the session at once.
func (db *DB) FinishRegistrationSession(ctx context.Context, sessionID string) error {
	return db.tx(ctx, "finish_registration_session", func(tx *txn) error {
		var token sql.NullString
		err := tx.QueryRowContext(ctx, `DELETE FROM uia_sessions WHERE session_id = $1 RETURNING registration_token`, sessionID).Scan(&token)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !token.Valid) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: finish registration session: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1`, token.String); err != nil {
			return fmt.Errorf("storage: finish registration session: %w", err)
		}
		return nil
	})
}
