package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"homeserver/accounts"
)

// CreateLoginToken stores a login token's hash, valid until expiresTS, and
// drops the tokens expired by now so that the table stays small.
func (db *DB) CreateLoginToken(ctx context.Context, hash, userID string, expiresTS, now int64) error {
	return db.tx(ctx, "create_login_token", func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_tokens WHERE expires_ts <= $1`, now); err != nil {
			return fmt.Errorf("storage: expire login tokens: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			hash, userID, expiresTS); err != nil {
			return fmt.Errorf("storage: create login token: %w", err)
		}
		return nil
	})
}

// ConsumeLoginToken deletes a login token and returns its user, or
// ErrNotFound when it is unknown or expired at now. Deleting and reading in
// one statement makes a token good for one login however many race for it.
func (db *DB) ConsumeLoginToken(ctx context.Context, hash string, now int64) (string, error) {
	defer db.observe("consume_login_token", time.Now())
	var userID string
	var expiresTS int64
	err := db.w.QueryRowContext(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, hash).
		Scan(&userID, &expiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return "", accounts.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("storage: consume login token: %w", err)
	}
	if expiresTS <= now {
		return "", accounts.ErrNotFound
	}
	return userID, nil
}
