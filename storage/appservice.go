package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"homeserver/appservice"
	"homeserver/e2ee"
	"homeserver/rooms"
)

var _ appservice.Store = (*DB)(nil)

// EventsAfter returns the events of every room after stream position from,
// in stream order, at most limit.
func (db *DB) EventsAfter(ctx context.Context, from int64, limit int) ([]rooms.Stored, error) {
	defer db.observe("events_after", time.Now())
	return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_pos > $1 ORDER BY stream_pos LIMIT $2`, from, limit))
}

// ReceiptRoomsBetween returns the rooms whose receipts changed at a
// position of the receipts stream in (from, to].
func (db *DB) ReceiptRoomsBetween(ctx context.Context, from, to int64) ([]string, error) {
	defer db.observe("receipt_rooms_between", time.Now())
	return queryStrings(ctx, db.r, `SELECT DISTINCT room_id FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY room_id`, from, to)
}

// AppServiceState returns the queue state of a service. A service seen for
// the first time starts at the current end of the event stream: it gets no
// history. The row is created in the same statement that reads the end, so
// that no event slips between the two.
func (db *DB) AppServiceState(ctx context.Context, asID string) (appservice.State, error) {
	var st appservice.State
	err := db.tx(ctx, "appservice_state", func(tx *sql.Tx) error {
		// WHERE true: SQLite needs it to parse an upsert after a SELECT.
		// Device lists and key counts start at the end too; to-device
		// messages waiting for the service's devices are its to take.
		_, err := tx.ExecContext(ctx, `INSERT INTO appservice_state (as_id, stream_pos, device_list_pos, otk_pos)
			SELECT $1, COALESCE(MAX(stream_pos), 0),
				(SELECT COALESCE(MAX(pos), 0) FROM stream_counters WHERE name = $2),
				(SELECT COALESCE(MAX(pos), 0) FROM stream_counters WHERE name = $3)
			FROM events WHERE true
			ON CONFLICT (as_id) DO NOTHING`, asID, counterDeviceLists, counterOTK)
		if err != nil {
			return fmt.Errorf("storage: appservice state: %w", err)
		}
		err = tx.QueryRowContext(ctx, `SELECT stream_pos, last_txn, legacy, to_device_pos, device_list_pos, otk_pos
			FROM appservice_state WHERE as_id = $1`, asID).
			Scan(&st.Cursor, &st.LastTxn, &st.Legacy, &st.E2EE.ToDevice, &st.E2EE.DeviceLists, &st.E2EE.OTK)
		if err != nil {
			return fmt.Errorf("storage: appservice state: %w", err)
		}
		var t appservice.Txn
		var body string
		err = tx.QueryRowContext(ctx, `SELECT txn_id, body, stream_pos, num_events FROM appservice_txns WHERE as_id = $1`, asID).
			Scan(&t.ID, &body, &t.Pos, &t.Events)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("storage: appservice pending transaction: %w", err)
		default:
			t.Body = []byte(body)
			st.Pending = &t
		}
		return nil
	})
	return st, err
}

// QueueAppServiceTxn persists the transaction a service is about to be sent,
// numbered number, before it is sent.
func (db *DB) QueueAppServiceTxn(ctx context.Context, asID string, number int64, t appservice.Txn, cur appservice.E2EECursors, delivered []e2ee.DeviceRef) error {
	return db.tx(ctx, "appservice_queue_txn", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE appservice_state SET last_txn = $2, to_device_pos = $3, device_list_pos = $4, otk_pos = $5
			WHERE as_id = $1`, asID, number, cur.ToDevice, cur.DeviceLists, cur.OTK)
		if err != nil {
			return fmt.Errorf("storage: queue appservice transaction: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("storage: queue appservice transaction: unknown service %q", asID)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO appservice_txns (as_id, txn_id, body, stream_pos, num_events)
			VALUES ($1, $2, $3, $4, $5)`, asID, t.ID, string(t.Body), t.Pos, t.Events)
		if err != nil {
			return fmt.Errorf("storage: queue appservice transaction: %w", err)
		}
		// Devices the service drives itself never sync: nobody else would
		// ever acknowledge their messages.
		for _, d := range delivered {
			_, err := tx.ExecContext(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos <= $3
				AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.user_id = $1 AND a.device_id = $2)`,
				d.UserID, d.DeviceID, cur.ToDevice)
			if err != nil {
				return fmt.Errorf("storage: queue appservice transaction: %w", err)
			}
		}
		return nil
	})
}

// AdvanceAppServiceE2EE moves a service's encryption cursors.
func (db *DB) AdvanceAppServiceE2EE(ctx context.Context, asID string, cur appservice.E2EECursors) error {
	_, err := db.exec(ctx, "appservice_advance_e2ee", `UPDATE appservice_state SET to_device_pos = $2, device_list_pos = $3, otk_pos = $4
		WHERE as_id = $1`, asID, cur.ToDevice, cur.DeviceLists, cur.OTK)
	return err
}

// AppServiceTxnDone records that a service acknowledged its transaction:
// the transaction is forgotten and the cursor moves to pos, atomically.
func (db *DB) AppServiceTxnDone(ctx context.Context, asID, txnID string, pos int64) error {
	return db.tx(ctx, "appservice_txn_done", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM appservice_txns WHERE as_id = $1 AND txn_id = $2`, asID, txnID); err != nil {
			return fmt.Errorf("storage: appservice transaction done: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE appservice_state SET stream_pos = $2
			WHERE as_id = $1 AND stream_pos < $2`, asID, pos); err != nil {
			return fmt.Errorf("storage: appservice transaction done: %w", err)
		}
		return nil
	})
}

// AdvanceAppService moves a service's cursor over events that did not
// interest it.
func (db *DB) AdvanceAppService(ctx context.Context, asID string, pos int64) error {
	_, err := db.exec(ctx, "appservice_advance", `UPDATE appservice_state SET stream_pos = $2
		WHERE as_id = $1 AND stream_pos < $2`, asID, pos)
	return err
}

// SetAppServiceLegacy remembers whether a service answers only on the
// legacy, unprefixed paths.
func (db *DB) SetAppServiceLegacy(ctx context.Context, asID string, legacy bool) error {
	_, err := db.exec(ctx, "appservice_set_legacy", `UPDATE appservice_state SET legacy = $2 WHERE as_id = $1`, asID, legacy)
	return err
}
