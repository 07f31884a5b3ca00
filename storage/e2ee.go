package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"time"

	"homeserver/e2ee"
	"homeserver/stream"
)

var _ e2ee.Store = (*DB)(nil)

// recordDeviceListChange appends the users to the device-list stream at
// one new position.
func recordDeviceListChange(ctx context.Context, tx *txn, users ...string) error {
	if len(users) == 0 {
		return nil
	}
	pos, err := nextStreamPos(ctx, tx, string(stream.DeviceLists))
	if err != nil {
		return err
	}
	for _, u := range users {
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_list_stream (pos, user_id) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, pos, u); err != nil {
			return fmt.Errorf("storage: record device list change: %w", err)
		}
	}
	return nil
}

func recordOTKChange(ctx context.Context, tx *txn, refs []e2ee.DeviceRef) error {
	if len(refs) == 0 {
		return nil
	}
	pos, err := nextStreamPos(ctx, tx, string(stream.OTK))
	if err != nil {
		return err
	}
	for _, r := range refs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO otk_stream (pos, user_id, device_id) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, pos, r.UserID, r.DeviceID); err != nil {
			return fmt.Errorf("storage: record key change: %w", err)
		}
	}
	return nil
}

func (db *DB) UploadKeys(ctx context.Context, u e2ee.Upload) (map[string]int, error) {
	var counts map[string]int
	err := db.tx(ctx, "upload_keys", func(tx *txn) error {
		if u.DeviceKeys != nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO device_keys (user_id, device_id, key_json, ts) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, ts = excluded.ts`,
				u.UserID, u.DeviceID, string(u.DeviceKeys), u.Now)
			if err != nil {
				return fmt.Errorf("storage: store device keys: %w", err)
			}
			if u.DeviceKeysChanged {
				if err := recordDeviceListChange(ctx, tx, u.UserID); err != nil {
					return err
				}
			}
		}
		if len(u.OneTimeKeys) > 0 {
			// One sequence number per upload: claims take the oldest
			// upload first, keys of one upload in any order.
			seq, err := nextStreamPos(ctx, tx, counterOTKUpload)
			if err != nil {
				return err
			}
			for _, k := range u.OneTimeKeys {
				_, err := tx.ExecContext(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq)
					VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
					u.UserID, u.DeviceID, k.Algorithm, k.KeyID, string(k.JSON), seq)
				if err != nil {
					return fmt.Errorf("storage: store one-time key: %w", err)
				}
			}
		}
		for _, k := range u.FallbackKeys {
			// A new fallback key is unused; the same one uploaded again
			// keeps its state.
			_, err := tx.ExecContext(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
				VALUES ($1, $2, $3, $4, $5, FALSE)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
					used = CASE WHEN fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE FALSE END`,
				u.UserID, u.DeviceID, k.Algorithm, k.KeyID, string(k.JSON))
			if err != nil {
				return fmt.Errorf("storage: store fallback key: %w", err)
			}
		}
		if len(u.OneTimeKeys) > 0 || len(u.FallbackKeys) > 0 {
			if err := recordOTKChange(ctx, tx, []e2ee.DeviceRef{{UserID: u.UserID, DeviceID: u.DeviceID}}); err != nil {
				return err
			}
		}
		var err error
		counts, err = otkCounts(ctx, tx, u.UserID, u.DeviceID)
		return err
	})
	return counts, err
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func otkCounts(ctx context.Context, q querier, userID, deviceID string) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys
		WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("storage: count one-time keys: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, fmt.Errorf("storage: count one-time keys: %w", err)
		}
		out[alg] = n
	}
	return out, rows.Err()
}

func (db *DB) OneTimeKeysByID(ctx context.Context, userID, deviceID string, names []string) (map[string]json.RawMessage, error) {
	defer db.observe("one_time_keys_by_id", time.Now())
	out := map[string]json.RawMessage{}
	for start := 0; start < len(names); start += 400 {
		chunk := names[start:min(start+400, len(names))]
		in, args := inList(chunk, []any{userID, deviceID})
		rows, err := db.r.QueryContext(ctx, `SELECT algorithm, key_id, key_json FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND algorithm || ':' || key_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: one-time keys: %w", err)
		}
		for rows.Next() {
			var alg, id, js string
			if err := rows.Scan(&alg, &id, &js); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: one-time keys: %w", err)
			}
			out[alg+":"+id] = json.RawMessage(js)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: one-time keys: %w", err)
		}
	}
	return out, nil
}

func (db *DB) DeviceKeys(ctx context.Context, userID string, deviceIDs []string) ([]e2ee.DeviceKeys, error) {
	defer db.observe("device_keys", time.Now())
	q := `SELECT k.device_id, k.key_json, COALESCE(d.display_name, '') FROM device_keys k
		JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = $1`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		if len(deviceIDs) > 1000 {
			deviceIDs = deviceIDs[:1000]
		}
		var in string
		in, args = inList(deviceIDs, args)
		q += ` AND k.device_id IN (` + in + `)`
	}
	rows, err := db.r.QueryContext(ctx, q+` ORDER BY k.device_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: device keys: %w", err)
	}
	defer rows.Close()
	var out []e2ee.DeviceKeys
	for rows.Next() {
		d := e2ee.DeviceKeys{UserID: userID}
		var js string
		if err := rows.Scan(&d.DeviceID, &js, &d.DisplayName); err != nil {
			return nil, fmt.Errorf("storage: device keys: %w", err)
		}
		d.JSON = json.RawMessage(js)
		out = append(out, d)
	}
	return out, rows.Err()
}

// maxClaimRetries bounds the retries of a claim whose chosen key another
// claimer took first.
const maxClaimRetries = 8

func (db *DB) ClaimKeys(ctx context.Context, want []e2ee.ClaimRequest) ([]e2ee.Claimed, error) {
	var out []e2ee.Claimed
	err := db.tx(ctx, "claim_keys", func(tx *txn) error {
		out = out[:0]
		var refs []e2ee.DeviceRef
		for _, w := range want {
			k, ok, err := claimOne(ctx, tx, w)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, e2ee.Claimed{UserID: w.UserID, DeviceID: w.DeviceID, Key: k})
				refs = append(refs, e2ee.DeviceRef{UserID: w.UserID, DeviceID: w.DeviceID})
			}
		}
		return recordOTKChange(ctx, tx, refs)
	})
	return out, err
}

// claimOne takes the oldest one-time key of the device and algorithm, or
// else its fallback key. Deleting the chosen row is what claims it: when a
// concurrent claimer deleted it first (PostgreSQL, read committed), no row
// is affected and the next oldest is tried.
func claimOne(ctx context.Context, tx *txn, w e2ee.ClaimRequest) (e2ee.Key, bool, error) {
	k := e2ee.Key{Algorithm: w.Algorithm}
	for range maxClaimRetries {
		var js string
		err := tx.QueryRowContext(ctx, `SELECT key_id, key_json FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY seq, key_id LIMIT 1`,
			w.UserID, w.DeviceID, w.Algorithm).Scan(&k.KeyID, &js)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return k, false, fmt.Errorf("storage: claim key: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
			w.UserID, w.DeviceID, w.Algorithm, k.KeyID)
		if err != nil {
			return k, false, fmt.Errorf("storage: claim key: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			k.JSON = json.RawMessage(js)
			return k, true, nil
		}
	}
	var js string
	err := tx.QueryRowContext(ctx, `UPDATE fallback_keys SET used = TRUE
		WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json`,
		w.UserID, w.DeviceID, w.Algorithm).Scan(&k.KeyID, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return k, false, nil
	}
	if err != nil {
		return k, false, fmt.Errorf("storage: claim fallback key: %w", err)
	}
	k.JSON = json.RawMessage(js)
	return k, true, nil
}

// KeyCounts is asked on every /sync: with SQLite its answers are kept
// until a write to the tables it reads (tableGens).
func (db *DB) KeyCounts(ctx context.Context, userID, deviceID string) (e2ee.Counts, error) {
	clone := func(c e2ee.Counts) e2ee.Counts {
		return e2ee.Counts{OneTimeKeys: maps.Clone(c.OneTimeKeys), FallbackKeys: slices.Clone(c.FallbackKeys)}
	}
	return cachedRead(db.w.gens, keyCountTables, db.keyCounts, userID+"\x00"+deviceID, clone, func() (e2ee.Counts, error) {
		return db.keyCountsOf(ctx, userID, deviceID)
	})
}

func (db *DB) keyCountsOf(ctx context.Context, userID, deviceID string) (e2ee.Counts, error) {
	defer db.observe("key_counts", time.Now())
	// One statement: every /sync asks.
	rows, err := db.r.QueryContext(ctx, `SELECT 'otk', algorithm, COUNT(*) FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL SELECT 'fallback', algorithm, 0 FROM fallback_keys
			WHERE user_id = $1 AND device_id = $2 AND NOT used`, userID, deviceID)
	if err != nil {
		return e2ee.Counts{}, fmt.Errorf("storage: key counts: %w", err)
	}
	defer rows.Close()
	c := e2ee.Counts{OneTimeKeys: map[string]int{}}
	for rows.Next() {
		var kind, alg string
		var n int
		if err := rows.Scan(&kind, &alg, &n); err != nil {
			return c, fmt.Errorf("storage: key counts: %w", err)
		}
		if kind == "otk" {
			c.OneTimeKeys[alg] = n
		} else {
			c.FallbackKeys = append(c.FallbackKeys, alg)
		}
	}
	sort.Strings(c.FallbackKeys)
	return c, rows.Err()
}

func (db *DB) CrossSigningKeys(ctx context.Context, userID string) (map[string]e2ee.CrossSigningKey, error) {
	defer db.observe("cross_signing_keys", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT key_type, public_key, key_json FROM cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: cross-signing keys: %w", err)
	}
	defer rows.Close()
	out := map[string]e2ee.CrossSigningKey{}
	for rows.Next() {
		k := e2ee.CrossSigningKey{UserID: userID}
		var js string
		if err := rows.Scan(&k.Type, &k.PublicKey, &js); err != nil {
			return nil, fmt.Errorf("storage: cross-signing keys: %w", err)
		}
		k.JSON = json.RawMessage(js)
		out[k.Type] = k
	}
	return out, rows.Err()
}

func (db *DB) PutCrossSigningKeys(ctx context.Context, userID string, keys []e2ee.CrossSigningKey) error {
	return db.tx(ctx, "put_cross_signing_keys", func(tx *txn) error {
		for _, k := range keys {
			_, err := tx.ExecContext(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
				userID, k.Type, k.PublicKey, string(k.JSON))
			if err != nil {
				return fmt.Errorf("storage: store cross-signing key: %w", err)
			}
		}
		return recordDeviceListChange(ctx, tx, userID)
	})
}

func (db *DB) Signatures(ctx context.Context, targetUser string, targetKeys []string) ([]e2ee.Signature, error) {
	defer db.observe("key_signatures", time.Now())
	if len(targetKeys) == 0 {
		return nil, nil
	}
	var out []e2ee.Signature
	for start := 0; start < len(targetKeys); start += 500 {
		chunk := targetKeys[start:min(start+500, len(targetKeys))]
		in, args := inList(chunk, []any{targetUser})
		rows, err := db.r.QueryContext(ctx, `SELECT target_key, signer_user, signer_key_id, signature FROM key_signatures
			WHERE target_user = $1 AND target_key IN (`+in+`) ORDER BY target_key, signer_user, signer_key_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: key signatures: %w", err)
		}
		for rows.Next() {
			s := e2ee.Signature{TargetUser: targetUser}
			if err := rows.Scan(&s.TargetKey, &s.SignerUser, &s.SignerKeyID, &s.Signature); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: key signatures: %w", err)
			}
			out = append(out, s)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: key signatures: %w", err)
		}
	}
	return out, nil
}

func (db *DB) PutSignatures(ctx context.Context, sigs []e2ee.Signature, changed []string) error {
	return db.tx(ctx, "put_signatures", func(tx *txn) error {
		for _, s := range sigs {
			_, err := tx.ExecContext(ctx, `INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key_id, signature)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (target_user, target_key, signer_user, signer_key_id) DO UPDATE SET signature = excluded.signature`,
				s.TargetUser, s.TargetKey, s.SignerUser, s.SignerKeyID, s.Signature)
			if err != nil {
				return fmt.Errorf("storage: store signature: %w", err)
			}
		}
		return recordDeviceListChange(ctx, tx, changed...)
	})
}

func (db *DB) DeviceListMaxPos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.DeviceLists))
}

func (db *DB) DeviceListChanges(ctx context.Context, from, to int64) ([]string, error) {
	defer db.observe("device_list_changes", time.Now())
	return queryStrings(ctx, db.r, `SELECT DISTINCT user_id FROM device_list_stream WHERE pos > $1 AND pos <= $2 ORDER BY user_id`, from, to)
}

func (db *DB) OTKMaxPos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.OTK))
}

func (db *DB) OTKChanges(ctx context.Context, from, to int64) ([]e2ee.DeviceRef, error) {
	defer db.observe("otk_changes", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT DISTINCT user_id, device_id FROM otk_stream
		WHERE pos > $1 AND pos <= $2 ORDER BY user_id, device_id`, from, to)
	if err != nil {
		return nil, fmt.Errorf("storage: key changes: %w", err)
	}
	defer rows.Close()
	var out []e2ee.DeviceRef
	for rows.Next() {
		var r e2ee.DeviceRef
		if err := rows.Scan(&r.UserID, &r.DeviceID); err != nil {
			return nil, fmt.Errorf("storage: key changes: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (db *DB) DeviceIDs(ctx context.Context, userID string) ([]string, error) {
	defer db.observe("device_ids", time.Now())
	return queryStrings(ctx, db.r, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
}

// deleteDeviceRows deletes devices (their keys, tokens and pending
// messages go with them by cascade), the signatures made of them, and
// records the change in the device-list stream when any existed.
func deleteDeviceRows(ctx context.Context, tx *txn, userID string, deviceIDs []string) error {
	deleted := 0
	for start := 0; start < len(deviceIDs); start += 500 {
		chunk := deviceIDs[start:min(start+500, len(deviceIDs))]
		in, args := inList(chunk, []any{userID})
		res, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id IN (`+in+`)`, args...)
		if err != nil {
			return fmt.Errorf("storage: delete devices: %w", err)
		}
		n, _ := res.RowsAffected()
		deleted += int(n)
		if _, err := tx.ExecContext(ctx, `DELETE FROM key_signatures WHERE target_user = $1 AND target_key IN (`+in+`)`, args...); err != nil {
			return fmt.Errorf("storage: delete device signatures: %w", err)
		}
		// The devices' sliding sync connections go too.
		keys, err := txStrings(ctx, tx, `SELECT CAST(conn_key AS TEXT) FROM sliding_sync_connections WHERE user_id = $1 AND device_id IN (`+in+`)`, args...)
		if err != nil {
			return err
		}
		for _, k := range keys {
			key, err := strconv.ParseInt(k, 10, 64)
			if err != nil {
				return fmt.Errorf("storage: sliding connection key %q: %w", k, err)
			}
			if err := dropSlidingConnection(ctx, tx, key); err != nil {
				return err
			}
		}
	}
	if deleted == 0 {
		return nil
	}
	return recordDeviceListChange(ctx, tx, userID)
}

func txStrings(ctx context.Context, tx *txn, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: query: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("storage: query: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
