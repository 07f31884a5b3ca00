package storage

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"homeserver/receipts"

	"homeserver/stream"
)

var _ receipts.Store = (*DB)(nil)

func (db *DB) PutReceipt(ctx context.Context, r receipts.Receipt) (int64, error) {
	var pos int64
	err := db.tx(ctx, "put_receipt", func(tx *txn) error {
		// The current receipt and where its event and the new one stand in
		// the room's log (NULL for events this server does not hold).
		var oldEvent string
		var oldPos sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT r.event_id, e.stream_pos FROM receipts r
			LEFT JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = $1 AND r.receipt_type = $2 AND r.user_id = $3 AND r.thread_id = $4`,
			r.RoomID, r.Type, r.UserID, r.ThreadID).Scan(&oldEvent, &oldPos)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("storage: put receipt: %w", err)
		case oldEvent == r.EventID:
			return nil
		case oldPos.Valid:
			var newPos sql.NullInt64
			err := tx.QueryRowContext(ctx, `SELECT stream_pos FROM events WHERE event_id = $1`, r.EventID).Scan(&newPos)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("storage: put receipt: %w", err)
			}
			if newPos.Valid && newPos.Int64 < oldPos.Int64 {
				return nil
			}
		}
		if pos, err = nextStreamPos(ctx, tx, string(stream.Receipts)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
				event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
			r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.TS, pos)
		if err != nil {
			return fmt.Errorf("storage: put receipt: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return pos, nil
}

func (db *DB) ReceiptsSince(ctx context.Context, roomIDs []string, from, to int64) ([]receipts.Receipt, error) {
	defer db.observe("receipts_since", time.Now())
	var out []receipts.Receipt
	// Chunked to stay under the engines' bound-parameter limits.
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		args := make([]any, 0, len(chunk)+2)
		args = append(args, from, to)
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", i+3)
		}
		rows, err := db.r.QueryContext(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos
			FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN (`+strings.Join(ph, ",")+`)
			ORDER BY stream_pos`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: receipts since: %w", err)
		}
		for rows.Next() {
			var r receipts.Receipt
			if err := rows.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.Pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: receipts since: %w", err)
			}
			out = append(out, r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: receipts since: %w", err)
		}
	}
	if len(roomIDs) > 500 {
		// Several chunks: merge them into one position order.
		slices.SortFunc(out, func(a, b receipts.Receipt) int { return cmp.Compare(a.Pos, b.Pos) })
	}
	return out, nil
}

func (db *DB) MaxReceiptPos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.Receipts))
}
