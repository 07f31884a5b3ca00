package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"homeserver/accounts"
)

// CreateOpenIDToken stores an OpenID token's hash, valid until expiresTS.
func (db *DB) CreateOpenIDToken(ctx context.Context, hash, userID string, expiresTS int64) error {
	_, err := db.exec(ctx, "create_openid_token", `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		hash, userID, expiresTS)
	return err
}

// OpenIDTokenUser returns the user of an OpenID token valid at now.
func (db *DB) OpenIDTokenUser(ctx context.Context, hash string, now int64) (string, error) {
	defer db.observe("openid_token_user", time.Now())
	var userID string
	err := db.r.QueryRowContext(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`, hash, now).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", accounts.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("storage: openid token user: %w", err)
	}
	return userID, nil
}

// DeleteOpenIDTokensBefore removes the OpenID tokens expired by ts.
func (db *DB) DeleteOpenIDTokensBefore(ctx context.Context, ts int64) error {
	_, err := db.exec(ctx, "delete_openid_tokens", `DELETE FROM openid_tokens WHERE expires_ts <= $1`, ts)
	return err
}
