package storage

import (
	"context"
	"fmt"
	"time"

	"homeserver/presence"
)

var _ presence.ListStore = (*DB)(nil)

// PresenceList returns the users on userID's presence list, in user ID
// order.
func (db *DB) PresenceList(ctx context.Context, userID string) ([]string, error) {
	defer db.observe("get_presence_list", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT observed_user_id FROM presence_list WHERE user_id = $1 ORDER BY observed_user_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: get presence list: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("storage: get presence list: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: get presence list: %w", err)
	}
	return out, nil
}

// EditPresenceList adds add to userID's presence list and removes drop from
// it, in one transaction; a user in both ends up dropped. It fails with
// presence.ErrListFull, changing nothing, when the list would hold more
// than limit users.
func (db *DB) EditPresenceList(ctx context.Context, userID string, add, drop []string, limit int) error {
	return db.tx(ctx, "edit_presence_list", func(tx *txn) error {
		for _, id := range add {
			if _, err := tx.ExecContext(ctx, `INSERT INTO presence_list (user_id, observed_user_id) VALUES ($1, $2)
				ON CONFLICT (user_id, observed_user_id) DO NOTHING`, userID, id); err != nil {
				return fmt.Errorf("storage: add to presence list: %w", err)
			}
		}
		for _, id := range drop {
			if _, err := tx.ExecContext(ctx, `DELETE FROM presence_list WHERE user_id = $1 AND observed_user_id = $2`, userID, id); err != nil {
				return fmt.Errorf("storage: drop from presence list: %w", err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM presence_list WHERE user_id = $1`, userID).Scan(&n); err != nil {
			return fmt.Errorf("storage: count presence list: %w", err)
		}
		if n > limit {
			return presence.ErrListFull
		}
		return nil
	})
}
