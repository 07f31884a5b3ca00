package storage

import (
	"context"

	"homeserver/reports"
)

var _ reports.Store = (*DB)(nil)

// AddReport stores a report for the server's admins.
func (db *DB) AddReport(ctx context.Context, r reports.Report) error {
	_, err := db.exec(ctx, "add_report", `INSERT INTO reports (report_id, reporter, room_id, event_id, user_id, reason, score, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		r.ID, r.Reporter, r.RoomID, r.EventID, r.UserID, r.Reason, r.Score, r.ReceivedTS)
	return err
}
