package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"homeserver/accounts"
)

var _ accounts.Store = (*DB)(nil)

func (db *DB) CreateAccount(ctx context.Context, acc accounts.Account, displayName string, dev *accounts.Device, tok *accounts.IssuedTokens) error {
	return db.tx(ctx, "create_account", func(tx *txn) error {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE user_id = $1 OR localpart = $2`, acc.UserID, acc.Localpart).Scan(&n)
		if err != nil {
			return fmt.Errorf("storage: create account: %w", err)
		}
		if n > 0 {
			return accounts.ErrUserExists
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, appservice_id, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			acc.UserID, acc.Localpart, acc.PasswordHash, acc.IsAdmin, acc.IsGuest, acc.AppServiceID, acc.CreatedTS)
		if isUniqueViolation(err) {
			// Lost a race with a concurrent registration (PostgreSQL).
			return accounts.ErrUserExists
		}
		if err != nil {
			return fmt.Errorf("storage: create account: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)`, acc.UserID, nullString(displayName))
		if err != nil {
			return fmt.Errorf("storage: create profile: %w", err)
		}
		if dev != nil && tok != nil {
			return issueDevice(ctx, tx, *dev, *tok)
		}
		return nil
	})
}

func (db *DB) GetAccount(ctx context.Context, userID string) (accounts.Account, error) {
	defer db.observe("get_account", time.Now())
	var a accounts.Account
	err := db.r.QueryRowContext(ctx, `SELECT user_id, localpart, password_hash, is_admin, is_guest, deactivated, suspended, locked, appservice_id, created_ts
		FROM users WHERE user_id = $1`, userID).
		Scan(&a.UserID, &a.Localpart, &a.PasswordHash, &a.IsAdmin, &a.IsGuest, &a.Deactivated, &a.Suspended, &a.Locked, &a.AppServiceID, &a.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return a, accounts.ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("storage: get account: %w", err)
	}
	return a, nil
}

func (db *DB) SetPassword(ctx context.Context, userID, hash string) error {
	_, err := db.exec(ctx, "set_password", `UPDATE users SET password_hash = $1 WHERE user_id = $2`, hash, userID)
	return err
}

func (db *DB) SetAdmin(ctx context.Context, userID string, admin bool) error {
	_, err := db.exec(ctx, "set_admin", `UPDATE users SET is_admin = $1 WHERE user_id = $2`, admin, userID)
	return err
}

func (db *DB) Deactivate(ctx context.Context, userID string) error {
	return db.tx(ctx, "deactivate", func(tx *txn) error {
		for _, q := range []string{
			`UPDATE users SET deactivated = TRUE, password_hash = '' WHERE user_id = $1`,
			`UPDATE profiles SET displayname = NULL, avatar_url = NULL, fields = '{}' WHERE user_id = $1`,
			// A deactivated user's keys must not be used to encrypt to them.
			`DELETE FROM cross_signing_keys WHERE user_id = $1`,
			`DELETE FROM key_signatures WHERE target_user = $1 OR signer_user = $1`,
			// Nor may their key backups outlive the account (as Synapse).
			`DELETE FROM key_backup_keys WHERE user_id = $1`,
			`UPDATE key_backup_versions SET deleted = TRUE, key_count = 0, etag = etag + 1 WHERE user_id = $1`,
			// Nothing is pushed to a deactivated account's devices.
			`DELETE FROM pushers WHERE user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return fmt.Errorf("storage: deactivate: %w", err)
			}
		}
		devices, err := txStrings(ctx, tx, `SELECT device_id FROM devices WHERE user_id = $1`, userID)
		if err != nil {
			return err
		}
		if err := deleteDeviceRows(ctx, tx, userID, devices); err != nil {
			return err
		}
		return recordDeviceListChange(ctx, tx, userID)
	})
}

func (db *DB) IssueDevice(ctx context.Context, dev accounts.Device, tok accounts.IssuedTokens) error {
	return db.tx(ctx, "issue_device", func(tx *txn) error { return issueDevice(ctx, tx, dev, tok) })
}

func issueDevice(ctx context.Context, tx *txn, dev accounts.Device, tok accounts.IssuedTokens) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id, device_id) DO UPDATE SET
			display_name = COALESCE(excluded.display_name, devices.display_name),
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
		dev.UserID, dev.DeviceID, nullString(dev.DisplayName), dev.CreatedTS, dev.LastSeenTS, dev.LastSeenIP)
	if err != nil {
		return fmt.Errorf("storage: upsert device: %w", err)
	}
	// A device has one live session: logging in again with its ID ends the old one.
	for _, q := range []string{
		`DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`,
	} {
		if _, err := tx.ExecContext(ctx, q, dev.UserID, dev.DeviceID); err != nil {
			return fmt.Errorf("storage: replace device tokens: %w", err)
		}
	}
	return insertTokens(ctx, tx, dev.UserID, dev.DeviceID, tok, "", dev.CreatedTS)
}

func insertTokens(ctx context.Context, tx *txn, userID, deviceID string, tok accounts.IssuedTokens, prevRefresh string, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash)
		VALUES ($1, $2, $3, $4, $5, $6)`, tok.AccessHash, userID, deviceID, now, tok.ExpiresTS, tok.RefreshHash)
	if err != nil {
		return fmt.Errorf("storage: insert access token: %w", err)
	}
	if tok.RefreshHash != "" {
		_, err = tx.ExecContext(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, prev_hash, created_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5, $6)`, tok.RefreshHash, userID, deviceID, prevRefresh, now, tok.RefreshExpiresTS)
		if err != nil {
			return fmt.Errorf("storage: insert refresh token: %w", err)
		}
	}
	return nil
}

// LookupAccessToken is asked on every request: with SQLite its answers
// are kept until a write to the tables it reads (tableGens). Unknown
// tokens are not kept.
func (db *DB) LookupAccessToken(ctx context.Context, hash string) (accounts.TokenOwner, error) {
	clone := func(o accounts.TokenOwner) accounts.TokenOwner {
		if o.MessageRate != nil {
			r := *o.MessageRate
			o.MessageRate = &r
		}
		return o
	}
	return cachedRead(db.w.gens, authTables, db.tokens, hash, clone, func() (accounts.TokenOwner, error) {
		return db.lookupAccessToken(ctx, hash)
	})
}

func (db *DB) lookupAccessToken(ctx context.Context, hash string) (accounts.TokenOwner, error) {
	defer db.observe("lookup_access_token", time.Now())
	var o accounts.TokenOwner
	var stale sql.NullString
	var rate, burst sql.NullInt64
	// The admin API's shadow ban and rate override ride along, so that the
	// requests they concern cost no query of their own.
	err := db.r.QueryRowContext(ctx, `SELECT t.user_id, t.device_id, u.is_admin, u.is_guest, u.deactivated, u.suspended, u.locked, t.expires_ts, d.last_seen_ts, r.prev_hash,
			u.shadow_banned, o.messages_per_second, o.burst_count
		FROM access_tokens t
		JOIN users u ON u.user_id = t.user_id
		JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
		LEFT JOIN refresh_tokens r ON r.token_hash = t.refresh_hash
		LEFT JOIN ratelimit_override o ON o.user_id = t.user_id
		WHERE t.token_hash = $1`, hash).
		Scan(&o.UserID, &o.DeviceID, &o.IsAdmin, &o.IsGuest, &o.Deactivated, &o.Suspended, &o.Locked, &o.ExpiresTS, &o.LastSeenTS, &stale,
			&o.ShadowBanned, &rate, &burst)
	if errors.Is(err, sql.ErrNoRows) {
		return o, accounts.ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("storage: lookup access token: %w", err)
	}
	o.StaleRefresh = stale.String
	if rate.Valid {
		o.MessageRate = &accounts.RateOverride{MessagesPerSecond: rate.Int64, BurstCount: burst.Int64}
	}
	return o, nil
}

func (db *DB) DropStaleRefresh(ctx context.Context, refreshHash string) error {
	return db.tx(ctx, "drop_stale_refresh", func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, refreshHash); err != nil {
			return fmt.Errorf("storage: drop stale refresh: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, refreshHash); err != nil {
			return fmt.Errorf("storage: drop stale refresh: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET prev_hash = '' WHERE prev_hash = $1`, refreshHash); err != nil {
			return fmt.Errorf("storage: drop stale refresh: %w", err)
		}
		return nil
	})
}

func (db *DB) RotateRefresh(ctx context.Context, old string, tok accounts.IssuedTokens, now int64) (string, string, error) {
	var userID, deviceID, prev string
	err := db.tx(ctx, "rotate_refresh", func(tx *txn) error {
		var expires int64
		err := tx.QueryRowContext(ctx, `SELECT user_id, device_id, prev_hash, expires_ts FROM refresh_tokens WHERE token_hash = $1`, old).
			Scan(&userID, &deviceID, &prev, &expires)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && expires != 0 && now >= expires) {
			return accounts.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("storage: rotate refresh: %w", err)
		}
		// Using old proves its predecessor is no longer needed, and voids
		// any earlier rotation of old whose answer the client never saw.
		stmts := []struct {
			q   string
			arg string
		}{
			{`DELETE FROM access_tokens WHERE refresh_hash = $1`, prev},
			{`DELETE FROM refresh_tokens WHERE token_hash = $1`, prev},
			{`DELETE FROM access_tokens WHERE refresh_hash IN (SELECT token_hash FROM refresh_tokens WHERE prev_hash = $1)`, old},
			{`DELETE FROM refresh_tokens WHERE prev_hash = $1`, old},
			{`DELETE FROM access_tokens WHERE refresh_hash = $1`, old},
			{`UPDATE refresh_tokens SET prev_hash = '' WHERE token_hash = $1`, old},
		}
		for _, s := range stmts {
			if s.arg == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, s.q, s.arg); err != nil {
				return fmt.Errorf("storage: rotate refresh: %w", err)
			}
		}
		return insertTokens(ctx, tx, userID, deviceID, tok, old, now)
	})
	return userID, deviceID, err
}

func (db *DB) TouchDevice(ctx context.Context, userID, deviceID, ip string, ts int64) error {
	_, err := db.exec(ctx, "touch_device", `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2 WHERE user_id = $3 AND device_id = $4`,
		ts, ip, userID, deviceID)
	return err
}

func (db *DB) DeleteAccessToken(ctx context.Context, hash string) error {
	_, err := db.exec(ctx, "delete_access_token", `DELETE FROM access_tokens WHERE token_hash = $1`, hash)
	return err
}

func (db *DB) ListDevices(ctx context.Context, userID string) ([]accounts.Device, error) {
	defer db.observe("list_devices", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: list devices: %w", err)
	}
	defer rows.Close()
	var out []accounts.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: list devices: %w", err)
	}
	return out, nil
}

type scanner interface{ Scan(...any) error }

func scanDevice(s scanner) (accounts.Device, error) {
	var d accounts.Device
	var name sql.NullString
	if err := s.Scan(&d.UserID, &d.DeviceID, &name, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return d, accounts.ErrNotFound
		}
		return d, fmt.Errorf("storage: scan device: %w", err)
	}
	d.DisplayName = name.String
	return d, nil
}

func (db *DB) GetDevice(ctx context.Context, userID, deviceID string) (accounts.Device, error) {
	defer db.observe("get_device", time.Now())
	return scanDevice(db.r.QueryRowContext(ctx, `SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
		FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
}

func (db *DB) CreateDevice(ctx context.Context, dev accounts.Device) (bool, error) {
	res, err := db.exec(ctx, "create_device", `INSERT INTO devices (user_id, device_id, display_name, created_ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, dev.UserID, dev.DeviceID, nullString(dev.DisplayName), dev.CreatedTS)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (db *DB) RenameDevice(ctx context.Context, userID, deviceID, name string) error {
	return db.tx(ctx, "rename_device", func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`,
			name, userID, deviceID)
		if err != nil {
			return fmt.Errorf("storage: rename device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return accounts.ErrNotFound
		}
		// The name is part of what /keys/query shows others.
		return recordDeviceListChange(ctx, tx, userID)
	})
}

func (db *DB) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	return db.tx(ctx, "delete_devices", func(tx *txn) error {
		return deleteDeviceRows(ctx, tx, userID, deviceIDs)
	})
}

func (db *DB) DeleteOtherDevices(ctx context.Context, userID, keep string) error {
	return db.tx(ctx, "delete_other_devices", func(tx *txn) error {
		devices, err := txStrings(ctx, tx, `SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2`, userID, keep)
		if err != nil {
			return err
		}
		return deleteDeviceRows(ctx, tx, userID, devices)
	})
}

func (db *DB) GetProfile(ctx context.Context, userID string) (accounts.Profile, error) {
	defer db.observe("get_profile", time.Now())
	var p accounts.Profile
	var name, avatar sql.NullString
	var fields string
	err := db.r.QueryRowContext(ctx, `SELECT displayname, avatar_url, fields FROM profiles WHERE user_id = $1`, userID).
		Scan(&name, &avatar, &fields)
	if errors.Is(err, sql.ErrNoRows) {
		return p, accounts.ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("storage: get profile: %w", err)
	}
	if name.Valid {
		p.DisplayName = &name.String
	}
	if avatar.Valid {
		p.AvatarURL = &avatar.String
	}
	if err := json.Unmarshal([]byte(fields), &p.Fields); err != nil {
		return p, fmt.Errorf("storage: get profile: fields: %w", err)
	}
	return p, nil
}

func (db *DB) PutProfile(ctx context.Context, userID string, p accounts.Profile) error {
	fields, err := json.Marshal(p.Fields)
	if err != nil {
		return fmt.Errorf("storage: put profile: %w", err)
	}
	if p.Fields == nil {
		fields = []byte("{}")
	}
	_, err = db.exec(ctx, "put_profile", `UPDATE profiles SET displayname = $1, avatar_url = $2, fields = $3 WHERE user_id = $4`,
		p.DisplayName, p.AvatarURL, string(fields), userID)
	return err
}

func (db *DB) CreateUIASession(ctx context.Context, s accounts.UIASession, notBefore int64, keep int) error {
	return db.tx(ctx, "create_uia_session", func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, notBefore); err != nil {
			return fmt.Errorf("storage: expire uia sessions: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO uia_sessions (session_id, method, path, user_id, completed, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6)`, s.ID, s.Method, s.Path, s.UserID, strings.Join(s.Completed, " "), s.CreatedTS)
		if err != nil {
			return fmt.Errorf("storage: create uia session: %w", err)
		}
		return trimOldest(ctx, tx, "uia_sessions", "session_id", "WHERE user_id = $1", []any{s.UserID}, keep)
	})
}

func (db *DB) GetUIASession(ctx context.Context, id string) (accounts.UIASession, error) {
	defer db.observe("get_uia_session", time.Now())
	var s accounts.UIASession
	var completed string
	err := db.w.QueryRowContext(ctx, `SELECT session_id, method, path, user_id, completed, created_ts FROM uia_sessions WHERE session_id = $1`, id).
		Scan(&s.ID, &s.Method, &s.Path, &s.UserID, &completed, &s.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return s, accounts.ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("storage: get uia session: %w", err)
	}
	s.Completed = strings.Fields(completed)
	return s, nil
}

func (db *DB) SetUIACompleted(ctx context.Context, id string, completed []string) error {
	_, err := db.exec(ctx, "set_uia_completed", `UPDATE uia_sessions SET completed = $1 WHERE session_id = $2`, strings.Join(completed, " "), id)
	return err
}

func (db *DB) DeleteUIASession(ctx context.Context, id string) error {
	_, err := db.exec(ctx, "delete_uia_session", `DELETE FROM uia_sessions WHERE session_id = $1`, id)
	return err
}

func (db *DB) CreateNonce(ctx context.Context, nonce string, ts, notBefore int64, keep int) error {
	return db.tx(ctx, "create_nonce", func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM registration_nonces WHERE created_ts < $1`, notBefore); err != nil {
			return fmt.Errorf("storage: expire nonces: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO registration_nonces (nonce, created_ts) VALUES ($1, $2)`, nonce, ts); err != nil {
			return fmt.Errorf("storage: create nonce: %w", err)
		}
		return trimOldest(ctx, tx, "registration_nonces", "nonce", "", nil, keep)
	})
}

// trimOldest deletes the oldest rows (by created_ts) of table that match
// where (a WHERE clause over args, or "") beyond the newest keep; key is
// the table's primary key. table, key and where are constants of this file.
func trimOldest(ctx context.Context, tx *txn, table, key, where string, args []any, keep int) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` `+where, args...).Scan(&n); err != nil {
		return fmt.Errorf("storage: count %s: %w", table, err)
	}
	if n <= keep {
		return nil
	}
	limit := fmt.Sprintf("$%d", len(args)+1)
	_, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE `+key+` IN (
		SELECT `+key+` FROM `+table+` `+where+` ORDER BY created_ts, `+key+` LIMIT `+limit+`)`, append(args, n-keep)...)
	if err != nil {
		return fmt.Errorf("storage: trim %s: %w", table, err)
	}
	return nil
}

func (db *DB) ConsumeNonce(ctx context.Context, nonce string, notBefore int64) (bool, error) {
	var ok bool
	err := db.tx(ctx, "consume_nonce", func(tx *txn) error {
		var created int64
		err := tx.QueryRowContext(ctx, `SELECT created_ts FROM registration_nonces WHERE nonce = $1`, nonce).Scan(&created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: consume nonce: %w", err)
		}
		ok = created >= notBefore
		if _, err := tx.ExecContext(ctx, `DELETE FROM registration_nonces WHERE nonce = $1 OR created_ts < $2`, nonce, notBefore); err != nil {
			return fmt.Errorf("storage: consume nonce: %w", err)
		}
		return nil
	})
	return ok, err
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
