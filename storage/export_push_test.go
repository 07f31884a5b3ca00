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
	rows, err := db.r.QueryContext(ctx, `SELECT n.thread_id, COUNT(*), SUM(CASE WHEN n.highlight THEN 1 ELSE 0 END)
		FROM push_notifications n WHERE n.user_id = $1 AND n.room_id = $2 AND `+unreadCond+` GROUP BY n.thread_id`, userID, roomID)
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
