package storage

import (
	"context"
	"fmt"

	"homeserver/push"
)

// Migration 37 moves push_notifications (a row per user and event) to
// push_event_notifications and push_room_slots (a row per event; see
// push_slots.go). It is Go because the slot sets are built here. Each
// event keeps the smallest ID of its rows, so the IDs stay in event order
// and every cursor on the notifications stream keeps its place.

const migrateChunk = 10_000

func upEventNotifications(ctx context.Context, tx *txn) error {
	for _, q := range []string{
		`CREATE TABLE push_event_notifications (
			id          BIGINT NOT NULL PRIMARY KEY,
			room_id     TEXT   NOT NULL,
			event_id    TEXT   NOT NULL,
			stream_pos  BIGINT NOT NULL,
			ts          BIGINT NOT NULL,
			thread_id   TEXT   NOT NULL,
			notified    TEXT   NOT NULL,
			highlighted TEXT   NOT NULL,
			actions     TEXT   NOT NULL,
			UNIQUE (room_id, stream_pos))`,
		`CREATE INDEX push_event_notifications_room_id ON push_event_notifications (room_id, id)`,
		`CREATE TABLE push_room_slots (
			room_id TEXT    NOT NULL,
			user_id TEXT    NOT NULL,
			slot    INTEGER NOT NULL,
			PRIMARY KEY (room_id, user_id),
			UNIQUE (room_id, slot))`,
		`CREATE INDEX push_room_slots_user ON push_room_slots (user_id, room_id)`,
		// The old rows are read in event order, through this index.
		`CREATE INDEX push_notifications_event ON push_notifications (room_id, stream_pos, id)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("storage: migrate notifications: %w", err)
		}
	}
	room, pos := "", int64(-1<<62)
	for limit := migrateChunk; ; {
		ns, err := readOldNotifications(ctx, tx, room, pos, limit)
		if err != nil {
			return err
		}
		events := groupByEvent(ns)
		full := len(ns) == limit
		if full && len(events) == 1 {
			limit *= 2 // one event of more rows than a chunk
			continue
		}
		if full {
			events = events[:len(events)-1] // may be cut short; read again next
		}
		ids := make([]int64, len(events))
		for i, ev := range events {
			ids[i] = ev[0].ID
			for _, n := range ev {
				ids[i] = min(ids[i], n.ID)
			}
		}
		if err := storeEventNotifications(ctx, tx, events, ids, 1); err != nil {
			return fmt.Errorf("storage: migrate notifications: %w", err)
		}
		if len(events) > 0 {
			last := events[len(events)-1][0]
			room, pos = last.RoomID, last.Pos
		}
		if !full {
			break
		}
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE push_notifications`); err != nil {
		return fmt.Errorf("storage: migrate notifications: %w", err)
	}
	return nil
}

// readOldNotifications reads up to limit rows of push_notifications after
// the event (room, pos), in event order.
func readOldNotifications(ctx context.Context, tx *txn, room string, pos int64, limit int) ([]push.Notification, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id
		FROM push_notifications WHERE room_id > $1 OR (room_id = $1 AND stream_pos > $2)
		ORDER BY room_id, stream_pos, id LIMIT $3`, room, pos, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: migrate notifications: %w", err)
	}
	defer rows.Close()
	var out []push.Notification
	for rows.Next() {
		var n push.Notification
		var actions string
		if err := rows.Scan(&n.ID, &n.UserID, &n.RoomID, &n.EventID, &n.Pos, &n.TS, &actions, &n.Highlight, &n.ThreadID); err != nil {
			return nil, fmt.Errorf("storage: migrate notifications: %w", err)
		}
		n.Actions = []byte(actions)
		out = append(out, n)
	}
	return out, rows.Err()
}

func downEventNotifications(ctx context.Context, tx *txn) error {
	for _, q := range []string{
		`CREATE TABLE push_notifications (
			id         BIGINT  NOT NULL,
			user_id    TEXT    NOT NULL,
			room_id    TEXT    NOT NULL,
			event_id   TEXT    NOT NULL,
			stream_pos BIGINT  NOT NULL,
			ts         BIGINT  NOT NULL,
			actions    TEXT    NOT NULL,
			highlight  BOOLEAN NOT NULL,
			thread_id  TEXT    NOT NULL,
			PRIMARY KEY (user_id, id),
			UNIQUE (user_id, room_id, stream_pos))`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("storage: migrate notifications down: %w", err)
		}
	}
	users := map[string]map[int]string{}
	rows, err := tx.QueryContext(ctx, `SELECT room_id, user_id, slot FROM push_room_slots`)
	if err != nil {
		return fmt.Errorf("storage: migrate notifications down: %w", err)
	}
	for rows.Next() {
		var r, u string
		var s int
		if err := rows.Scan(&r, &u, &s); err != nil {
			rows.Close()
			return fmt.Errorf("storage: migrate notifications down: %w", err)
		}
		if users[r] == nil {
			users[r] = map[int]string{}
		}
		users[r][s] = u
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: migrate notifications down: %w", err)
	}
	for after := int64(-1 << 62); ; {
		rows, err := tx.QueryContext(ctx, `SELECT id, room_id, event_id, stream_pos, ts, thread_id, notified, highlighted, actions
			FROM push_event_notifications WHERE id > $1 ORDER BY id LIMIT $2`, after, migrateChunk)
		if err != nil {
			return fmt.Errorf("storage: migrate notifications down: %w", err)
		}
		var evs []eventNotifications
		var ids []int64
		for rows.Next() {
			var e eventNotifications
			var id int64
			if err := rows.Scan(&id, &e.roomID, &e.eventID, &e.pos, &e.ts, &e.threadID, &e.notified, &e.highlighted, &e.actions); err != nil {
				rows.Close()
				return fmt.Errorf("storage: migrate notifications down: %w", err)
			}
			evs, ids = append(evs, e), append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storage: migrate notifications down: %w", err)
		}
		for i, e := range evs {
			for s, u := range users[e.roomID] {
				if !slotIn(e.notified, s) {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO push_notifications (id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, ids[i], u, e.roomID, e.eventID, e.pos, e.ts,
					string(actionsOf(e.actions, s)), slotIn(e.highlighted, s), e.threadID); err != nil {
					return fmt.Errorf("storage: migrate notifications down: %w", err)
				}
			}
			after = ids[i]
		}
		if len(evs) < migrateChunk {
			break
		}
	}
	for _, q := range []string{`DROP TABLE push_event_notifications`, `DROP TABLE push_room_slots`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("storage: migrate notifications down: %w", err)
		}
	}
	return nil
}
