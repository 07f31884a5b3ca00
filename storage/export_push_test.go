package storage

import (
	"context"
	"fmt"

	"homeserver/push"
)

// ExecRaw runs a statement on the writer, for tests that lay rows out
// directly.
func ExecRaw(ctx context.Context, db *DB, q string, args ...any) error {
	_, err := db.w.ExecContext(ctx, q, args...)
	return err
}

// CorrelatedUnreadCounts is UnreadCounts as it was before migration 29:
// every notification checked against the receipts on its own. Tests hold
// the new counts to it.
func CorrelatedUnreadCounts(ctx context.Context, db *DB, userID, roomID string) (map[string]push.Counts, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT n.thread_id, COUNT(*), SUM(CASE WHEN `+slotBitCond(`n.highlighted`, `s.slot`)+` THEN 1 ELSE 0 END)
		FROM push_event_notifications n JOIN push_room_slots s ON s.room_id = n.room_id AND s.user_id = $1
		WHERE n.room_id = $2 AND `+slotBitCond(`n.notified`, `s.slot`)+` AND `+unreadCondFor(`$1`)+` GROUP BY n.thread_id`, userID, roomID)
	if err != nil {
		return nil, fmt.Errorf("correlated unread counts: %w", err)
	}
	defer rows.Close()
	out := map[string]push.Counts{}
	for rows.Next() {
		var t string
		var c push.Counts
		if err := rows.Scan(&t, &c.Notifications, &c.Highlights); err != nil {
			return nil, err
		}
		out[t] = c
	}
	return out, rows.Err()
}

// SlotSet writes a set of notification slots as the event rows keep it.
func SlotSet(slots ...int) string {
	var s slotSet
	for _, n := range slots {
		s.add(n)
	}
	return s.String()
}

// SlotIn is slotIn, for tests.
func SlotIn(set string, slot int) bool { return slotIn(set, slot) }

// SlotInSQL tests a slot set for a slot as the SQL of unread counts does.
func SlotInSQL(ctx context.Context, db *DB, set string, slot int) (bool, error) {
	var in int
	err := db.r.QueryRowContext(ctx, `SELECT CASE WHEN `+slotBitCond(`CAST($1 AS TEXT)`, `CAST($2 AS INTEGER)`)+` THEN 1 ELSE 0 END`, set, slot).Scan(&in)
	return in == 1, err
}
