package storage

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"fmt"
	"time"

	"homeserver/federation/keys"
)

var _ keys.Store = (*DB)(nil)

// StoreServerKeys saves other servers' keys. The upsert keeps the row of the
// newer response (the later valid_until_ts), except that news of a key's
// expiry always lands.
func (db *DB) StoreServerKeys(ctx context.Context, ks []keys.StoredKey) error {
	if len(ks) == 0 {
		return nil
	}
	return db.tx(ctx, "store_server_keys", func(tx *txn) error {
		for _, k := range ks {
			expired := sql.NullInt64{Int64: k.ExpiredTS, Valid: k.ExpiredTS != 0}
			_, err := tx.ExecContext(ctx, `INSERT INTO server_keys
				(server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, key_json)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (server_name, key_id) DO UPDATE SET
					public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts,
					expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts,
					key_json = excluded.key_json
				WHERE excluded.valid_until_ts >= server_keys.valid_until_ts
					OR (excluded.expired_ts IS NOT NULL AND server_keys.expired_ts IS NULL)`,
				k.ServerName, k.KeyID, base64.RawStdEncoding.EncodeToString(k.Key),
				k.ValidUntilTS, expired, k.FetchedTS, string(k.KeyJSON))
			if err != nil {
				return fmt.Errorf("storage: store server key %s of %s: %w", k.KeyID, k.ServerName, err)
			}
		}
		return nil
	})
}

// ServerKeys returns serverName's stored keys with the given IDs, or all of
// them when keyIDs is empty, ordered by key ID.
func (db *DB) ServerKeys(ctx context.Context, serverName string, keyIDs []string) ([]keys.StoredKey, error) {
	defer db.observe("server_keys", time.Now())
	q := `SELECT key_id, public_key, valid_until_ts, expired_ts, fetched_ts, key_json
		FROM server_keys WHERE server_name = $1`
	args := []any{serverName}
	if len(keyIDs) > 0 {
		var in string
		in, args = inList(keyIDs, args)
		q += ` AND key_id IN (` + in + `)`
	}
	rows, err := db.r.QueryContext(ctx, q+` ORDER BY key_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
	}
	defer rows.Close()
	var out []keys.StoredKey
	for rows.Next() {
		k := keys.StoredKey{ServerName: serverName}
		var pub, keyJSON string
		var expired sql.NullInt64
		if err := rows.Scan(&k.KeyID, &pub, &k.ValidUntilTS, &expired, &k.FetchedTS, &keyJSON); err != nil {
			return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
		}
		b, err := base64.RawStdEncoding.DecodeString(pub)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("storage: server key %s of %s: malformed public key", k.KeyID, serverName)
		}
		k.Key, k.ExpiredTS, k.KeyJSON = b, expired.Int64, []byte(keyJSON)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
	}
	return out, nil
}
