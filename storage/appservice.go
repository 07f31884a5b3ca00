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
	"homeserver/stream"
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

// appServiceReader is the name of a service's queue among the readers.
func appServiceReader(asID string) string { return "appservice:" + asID }

// appServiceStreams are the streams a queue keeps cursors in, and where a
// new service starts in each: at the end (no history), but for to-device
// messages already waiting for its devices, which are its to take.
var appServiceStreams = []struct {
	name      stream.Name
	fromStart bool
	ephemeral func(*appservice.EphemeralCursors) *int64
}{
	{stream.Events, false, nil},
	{stream.Receipts, false, func(c *appservice.EphemeralCursors) *int64 { return &c.Receipts }},
	{stream.Presence, false, func(c *appservice.EphemeralCursors) *int64 { return &c.Presence }},
	{stream.ToDevice, true, func(c *appservice.EphemeralCursors) *int64 { return &c.ToDevice }},
	{stream.DeviceLists, false, func(c *appservice.EphemeralCursors) *int64 { return &c.DeviceLists }},
	{stream.OTK, false, func(c *appservice.EphemeralCursors) *int64 { return &c.OTK }},
}

// AppServiceState returns the queue state of a service. A service seen for
// the first time starts at the current end of each stream it follows: it
// gets no history. The cursors are created in the transaction that reads
// the ends; the counter rows it reads are locked by writers until they
// commit, so no write slips between the two.
func (db *DB) AppServiceState(ctx context.Context, asID string) (appservice.State, error) {
	var st appservice.State
	reader := appServiceReader(asID)
	err := db.tx(ctx, "appservice_state", func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO appservice_state (as_id) VALUES ($1) ON CONFLICT (as_id) DO NOTHING`, asID)
		if err != nil {
			return fmt.Errorf("storage: appservice state: %w", err)
		}
		for _, s := range appServiceStreams {
			var pos int64
			err := tx.QueryRowContext(ctx, `SELECT pos FROM reader_cursors WHERE reader = $1 AND stream = $2`, reader, string(s.name)).Scan(&pos)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if !s.fromStart {
					if pos, err = streamMaxPosOn(ctx, tx, string(s.name)); err != nil {
						return err
					}
				}
				if err := setReaderCursor(ctx, tx, reader, s.name, pos); err != nil {
					return err
				}
			case err != nil:
				return fmt.Errorf("storage: appservice state: %w", err)
			}
			if s.ephemeral == nil {
				st.Cursor = pos
			} else {
				*s.ephemeral(&st.Ephemeral) = pos
			}
		}
		err = tx.QueryRowContext(ctx, `SELECT last_txn, legacy FROM appservice_state WHERE as_id = $1`, asID).
			Scan(&st.LastTxn, &st.Legacy)
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

// setAppServiceEphemeral writes a service's cursors in the streams other
// than events.
func setAppServiceEphemeral(ctx context.Context, tx *txn, asID string, cur appservice.EphemeralCursors) error {
	for _, s := range appServiceStreams {
		if s.ephemeral != nil {
			if err := setReaderCursor(ctx, tx, appServiceReader(asID), s.name, *s.ephemeral(&cur)); err != nil {
				return err
			}
		}
	}
	return nil
}

// QueueAppServiceTxn persists the transaction a service is about to be sent,
// numbered number, before it is sent, with the cursors of what it carries.
func (db *DB) QueueAppServiceTxn(ctx context.Context, asID string, number int64, t appservice.Txn, cur appservice.EphemeralCursors, delivered []e2ee.DeviceRef) error {
	return db.tx(ctx, "appservice_queue_txn", func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE appservice_state SET last_txn = $2 WHERE as_id = $1`, asID, number)
		if err != nil {
			return fmt.Errorf("storage: queue appservice transaction: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("storage: queue appservice transaction: unknown service %q", asID)
		}
		if err := setAppServiceEphemeral(ctx, tx, asID, cur); err != nil {
			return err
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

// AdvanceAppServiceEphemeral moves a service's cursors in the streams
// other than events over what did not interest it.
func (db *DB) AdvanceAppServiceEphemeral(ctx context.Context, asID string, cur appservice.EphemeralCursors) error {
	return db.tx(ctx, "appservice_advance_ephemeral", func(tx *txn) error {
		return setAppServiceEphemeral(ctx, tx, asID, cur)
	})
}

// AppServiceTxnDone records that a service acknowledged its transaction:
// the transaction is forgotten and the cursor moves to pos, atomically.
func (db *DB) AppServiceTxnDone(ctx context.Context, asID, txnID string, pos int64) error {
	return db.tx(ctx, "appservice_txn_done", func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM appservice_txns WHERE as_id = $1 AND txn_id = $2`, asID, txnID); err != nil {
			return fmt.Errorf("storage: appservice transaction done: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE reader_cursors SET pos = $3
			WHERE reader = $1 AND stream = $2 AND pos < $3`, appServiceReader(asID), string(stream.Events), pos); err != nil {
			return fmt.Errorf("storage: appservice transaction done: %w", err)
		}
		return nil
	})
}

// AdvanceAppService moves a service's cursor over events that did not
// interest it.
func (db *DB) AdvanceAppService(ctx context.Context, asID string, pos int64) error {
	_, err := db.exec(ctx, "appservice_advance", `UPDATE reader_cursors SET pos = $3
		WHERE reader = $1 AND stream = $2 AND pos < $3`, appServiceReader(asID), string(stream.Events), pos)
	return err
}

// SetAppServiceLegacy remembers whether a service answers only on the
// legacy, unprefixed paths.
func (db *DB) SetAppServiceLegacy(ctx context.Context, asID string, legacy bool) error {
	_, err := db.exec(ctx, "appservice_set_legacy", `UPDATE appservice_state SET legacy = $2 WHERE as_id = $1`, asID, legacy)
	return err
}
