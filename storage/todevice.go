package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"homeserver/todevice"
)

var _ todevice.Store = (*DB)(nil)

func (db *DB) SendToDevice(ctx context.Context, s todevice.Send) ([]string, error) {
	var users []string
	err := db.tx(ctx, "send_to_device", func(tx *txn) error {
		users = users[:0]
		res, err := tx.ExecContext(ctx, `INSERT INTO to_device_txns (user_id, scope, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, s.Sender, s.Scope, s.TxnID, s.Now)
		if err != nil {
			return fmt.Errorf("storage: to-device transaction: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // a retry: sent already
		}
		if len(s.Recipients) == 0 {
			return nil
		}
		pos, err := nextStreamPos(ctx, tx, counterToDevice)
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, r := range s.Recipients {
			var q string
			args := []any{r.UserID, pos, s.Sender, s.Type, string(r.Content)}
			if r.DeviceID == "*" {
				q = `INSERT INTO to_device_messages (user_id, device_id, pos, sender, type, content)
					SELECT user_id, device_id, $2, $3, $4, $5 FROM devices WHERE user_id = $1
					ON CONFLICT DO NOTHING`
			} else {
				// Messages for devices that do not exist are dropped, as
				// the spec allows.
				q = `INSERT INTO to_device_messages (user_id, device_id, pos, sender, type, content)
					SELECT user_id, device_id, $2, $3, $4, $5 FROM devices WHERE user_id = $1 AND device_id = $6
					ON CONFLICT DO NOTHING`
				args = append(args, r.DeviceID)
			}
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("storage: store to-device message: %w", err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				got[r.UserID] = true
			}
		}
		for u := range got {
			users = append(users, u)
		}
		sort.Strings(users)
		return nil
	})
	return users, err
}

func (db *DB) ToDeviceMessages(ctx context.Context, userID, deviceID string, after, upTo int64, limit int) ([]todevice.Message, error) {
	defer db.observe("to_device_messages", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT pos, sender, type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND pos > $3 AND pos <= $4 ORDER BY pos LIMIT $5`,
		userID, deviceID, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: to-device messages: %w", err)
	}
	defer rows.Close()
	var out []todevice.Message
	for rows.Next() {
		m := todevice.Message{UserID: userID, DeviceID: deviceID}
		var content string
		if err := rows.Scan(&m.Pos, &m.Sender, &m.Type, &content); err != nil {
			return nil, fmt.Errorf("storage: to-device messages: %w", err)
		}
		m.Content = json.RawMessage(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

func (db *DB) ToDeviceAfter(ctx context.Context, after, upTo int64, limit int) ([]todevice.Message, error) {
	defer db.observe("to_device_after", time.Now())
	return collectToDevice(db.r.QueryContext(ctx, `SELECT user_id, device_id, pos, sender, type, content FROM to_device_messages
		WHERE pos > $1 AND pos <= $2 ORDER BY pos, user_id, device_id LIMIT $3`, after, upTo, limit))
}

func (db *DB) ToDeviceAt(ctx context.Context, pos int64) ([]todevice.Message, error) {
	defer db.observe("to_device_at", time.Now())
	return collectToDevice(db.r.QueryContext(ctx, `SELECT user_id, device_id, pos, sender, type, content FROM to_device_messages
		WHERE pos = $1 ORDER BY user_id, device_id`, pos))
}

func collectToDevice(rows *sql.Rows, err error) ([]todevice.Message, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: to-device messages: %w", err)
	}
	defer rows.Close()
	var out []todevice.Message
	for rows.Next() {
		var m todevice.Message
		var content string
		if err := rows.Scan(&m.UserID, &m.DeviceID, &m.Pos, &m.Sender, &m.Type, &content); err != nil {
			return nil, fmt.Errorf("storage: to-device messages: %w", err)
		}
		m.Content = json.RawMessage(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

func (db *DB) DeleteToDevice(ctx context.Context, userID, deviceID string, pos int64) error {
	_, err := db.exec(ctx, "delete_to_device", `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos <= $3`,
		userID, deviceID, pos)
	return err
}

func (db *DB) ToDeviceMaxPos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, counterToDevice)
}
