package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"homeserver/pdu"
	"homeserver/rooms"
)

// noteHoles keeps backward_extremities for a timeline event that came from
// another server: it is no longer a hole, and those of its prev_events that
// are not in the timeline here (nor rejected, nor in batch: written in the
// same transaction) are.
func noteHoles(ctx context.Context, tx *txn, ev *pdu.Event, batch map[string]bool) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM backward_extremities WHERE room_id = $1 AND event_id = $2`, ev.RoomID(), ev.ID()); err != nil {
		return fmt.Errorf("storage: backward extremities: %w", err)
	}
	for _, prev := range ev.PrevEventIDs() {
		if batch[prev] {
			continue
		}
		var outlier bool
		err := tx.QueryRowContext(ctx, `SELECT outlier FROM events WHERE event_id = $1`, prev).Scan(&outlier)
		if err == nil && !outlier {
			continue
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: backward extremities: %w", err)
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM rejected_events WHERE event_id = $1`, prev).Scan(&one)
		if err == nil {
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: backward extremities: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO backward_extremities (room_id, event_id, depth) VALUES ($1, $2, $3)
			ON CONFLICT (room_id, event_id) DO NOTHING`, ev.RoomID(), prev, ev.Depth()); err != nil {
			return fmt.Errorf("storage: backward extremities: %w", err)
		}
	}
	return nil
}

// PromoteBackfilled moves events stored as outliers (checked by the
// caller) into the room's timeline, oldest first, and updates the holes.
func (db *DB) PromoteBackfilled(ctx context.Context, roomID string, events []*pdu.Event) error {
	batch := make(map[string]bool, len(events))
	for _, ev := range events {
		batch[ev.ID()] = true
	}
	defer db.shared.changing()()
	return db.tx(ctx, "promote_backfilled", func(tx *txn) error {
		for _, ev := range events {
			if ev.RoomID() != roomID {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE events SET outlier = FALSE WHERE event_id = $1 AND room_id = $2`, ev.ID(), roomID); err != nil {
				return fmt.Errorf("storage: promote backfilled: %w", err)
			}
			if err := noteHoles(ctx, tx, ev, batch); err != nil {
				return err
			}
		}
		return nil
	})
}

// BackwardExtremities returns up to limit holes of the room named by
// timeline events of depth at most maxDepth, deepest first.
func (db *DB) BackwardExtremities(ctx context.Context, roomID string, maxDepth int64, limit int) ([]rooms.Hole, error) {
	defer db.observe("backward_extremities", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT event_id, depth FROM backward_extremities WHERE room_id = $1 AND depth <= $2
		ORDER BY depth DESC, event_id LIMIT $3`, roomID, maxDepth, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: backward extremities: %w", err)
	}
	defer rows.Close()
	var out []rooms.Hole
	for rows.Next() {
		var h rooms.Hole
		if err := rows.Scan(&h.EventID, &h.Depth); err != nil {
			return nil, fmt.Errorf("storage: backward extremities: %w", err)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// RoomEventsTopological pages through a room's timeline (backfilled
// history included) in topological order. Backward, it returns the events
// at or before from, down to (excluding) to; forward, those after from up
// to (including) to.
func (db *DB) RoomEventsTopological(ctx context.Context, roomID string, from, to rooms.TopoPoint, forward bool, limit int) ([]rooms.Stored, error) {
	defer db.observe("room_events_topological", time.Now())
	if forward {
		return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
			WHERE room_id = $1 AND NOT outlier
			AND depth >= $2 AND (depth > $2 OR stream_pos > $3)
			AND depth <= $4 AND (depth < $4 OR stream_pos <= $5)
			ORDER BY depth, stream_pos LIMIT $6`, roomID, from.Depth, from.Pos, to.Depth, to.Pos, limit))
	}
	return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND NOT outlier
		AND depth <= $2 AND (depth < $2 OR stream_pos <= $3)
		AND depth >= $4 AND (depth > $4 OR stream_pos > $5)
		ORDER BY depth DESC, stream_pos DESC LIMIT $6`, roomID, from.Depth, from.Pos, to.Depth, to.Pos, limit))
}

// TopoPointAt returns the topological point just after the room's newest
// timeline event at or before stream position pos (the lowest point when
// there is none).
func (db *DB) TopoPointAt(ctx context.Context, roomID string, pos int64) (rooms.TopoPoint, error) {
	defer db.observe("topo_point_at", time.Now())
	var p rooms.TopoPoint
	err := db.r.QueryRowContext(ctx, `SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos > 0 AND stream_pos <= $2
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&p.Depth, &p.Pos)
	if errors.Is(err, sql.ErrNoRows) {
		return rooms.TopoPoint{Depth: math.MinInt64, Pos: math.MinInt64}, nil
	}
	if err != nil {
		return p, fmt.Errorf("storage: topological point: %w", err)
	}
	return p, nil
}
