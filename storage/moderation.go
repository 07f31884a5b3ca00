package storage

import "context"

// SetSuspended suspends or unsuspends an account.
func (db *DB) SetSuspended(ctx context.Context, userID string, suspended bool) error {
	_, err := db.exec(ctx, "set_suspended", `UPDATE users SET suspended = $1 WHERE user_id = $2`, suspended, userID)
	return err
}

// SetLocked locks or unlocks an account.
func (db *DB) SetLocked(ctx context.Context, userID string, locked bool) error {
	_, err := db.exec(ctx, "set_locked", `UPDATE users SET locked = $1 WHERE user_id = $2`, locked, userID)
	return err
}
