package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"homeserver/federation"
	"homeserver/stream"
)

var _ federation.DeviceListStore = (*DB)(nil)

// RecordDeviceListChange records a change of a user's devices or keys in
// the device-list stream (another server's user, whose server said so).
func (db *DB) RecordDeviceListChange(ctx context.Context, userID string) error {
	return db.tx(ctx, "record_device_list_change", func(tx *txn) error {
		return recordDeviceListChange(ctx, tx, userID)
	})
}

// DeviceListState returns what other servers were last told of a local
// user's devices and cross-signing keys.
func (db *DB) DeviceListState(ctx context.Context, userID string) (federation.DeviceListState, error) {
	defer db.observe("device_list_state", time.Now())
	st := federation.DeviceListState{UserID: userID, Devices: map[string]string{}}
	err := db.r.QueryRowContext(ctx, `SELECT stream_id, signing_keys FROM device_lists_announced WHERE user_id = $1`, userID).
		Scan(&st.StreamID, &st.SigningKeys)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("storage: device list state: %w", err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT device_id, digest FROM device_lists_announced_devices WHERE user_id = $1`, userID)
	if err != nil {
		return st, fmt.Errorf("storage: device list state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, digest string
		if err := rows.Scan(&id, &digest); err != nil {
			return st, fmt.Errorf("storage: device list state: %w", err)
		}
		st.Devices[id] = digest
	}
	return st, rows.Err()
}

// AnnounceDeviceLists enqueues the EDUs that announce device-list changes,
// records what they said and moves the reader's cursor, in one
// transaction: a crash neither loses an announcement nor records one that
// was not queued.
func (db *DB) AnnounceDeviceLists(ctx context.Context, entries []federation.OutboxEntry, states []federation.DeviceListState, reader string, s stream.Name, pos int64) error {
	return db.tx(ctx, "announce_device_lists", func(tx *txn) error {
		if len(entries) > 0 {
			last, err := nextStreamBlock(ctx, tx, counterOutbox, int64(len(entries)))
			if err != nil {
				return err
			}
			now := time.Now().UnixMilli()
			first := last - int64(len(entries)) + 1
			for i, e := range entries {
				if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (destination, pos, event_id, edu, created_ts) VALUES ($1, $2, NULL, $3, $4)`,
					e.Destination, first+int64(i), string(e.EDU), now); err != nil {
					return fmt.Errorf("storage: enqueue device list update: %w", err)
				}
			}
		}
		for _, st := range states {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_lists_announced (user_id, stream_id, signing_keys) VALUES ($1, $2, $3)
				ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, signing_keys = excluded.signing_keys`,
				st.UserID, st.StreamID, st.SigningKeys); err != nil {
				return fmt.Errorf("storage: record device list state: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_lists_announced_devices WHERE user_id = $1`, st.UserID); err != nil {
				return fmt.Errorf("storage: record device list state: %w", err)
			}
			for id, digest := range st.Devices {
				if _, err := tx.ExecContext(ctx, `INSERT INTO device_lists_announced_devices (user_id, device_id, digest) VALUES ($1, $2, $3)`,
					st.UserID, id, digest); err != nil {
					return fmt.Errorf("storage: record device list state: %w", err)
				}
			}
		}
		return setReaderCursor(ctx, tx, reader, s, pos)
	})
}
