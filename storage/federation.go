package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"homeserver/federation"
	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// counterOutliers hands out the (negated) positions of outliers: events
// known from auth chains and joined rooms' state, outside the timeline.
const counterOutliers = "outliers"

// counterOutbox numbers federation_outbox rows.
const counterOutbox = "federation_outbox"

// insertOutliers stores those of events not stored yet with negative
// positions, the first of events getting the lowest, so that a room's
// imported history reads oldest first.
func insertOutliers(ctx context.Context, tx *txn, events []*pdu.Event) error {
	var fresh []*pdu.Event
	seen := map[string]bool{}
	for _, ev := range events {
		if seen[ev.ID()] {
			continue
		}
		seen[ev.ID()] = true
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM events WHERE event_id = $1`, ev.ID()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			fresh = append(fresh, ev)
			continue
		}
		if err != nil {
			return fmt.Errorf("storage: outlier lookup: %w", err)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	last, err := nextStreamBlock(ctx, tx, counterOutliers, int64(len(fresh)))
	if err != nil {
		return err
	}
	for i, ev := range fresh {
		pos := -(last - int64(i))
		var stateKey, membership any
		if sk := ev.StateKey(); sk != nil {
			stateKey = *sk
			if ev.Type() == "m.room.member" {
				membership = ev.Membership()
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO events (`+eventColumns+`, outlier) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, NULL, NULL, $10, TRUE)`,
			pos, ev.ID(), ev.RoomID(), ev.Type(), stateKey, ev.Sender(), membership, ev.Depth(), ev.OriginServerTS(), string(ev.JSON()))
		if err != nil {
			return fmt.Errorf("storage: insert outlier %s: %w", ev.ID(), err)
		}
	}
	return nil
}

// PersistOutliers stores events outside the timeline (an event that failed
// the checks against the room's current state, an auth chain).
func (db *DB) PersistOutliers(ctx context.Context, events []*pdu.Event) error {
	defer db.shared.changing()()
	return db.tx(ctx, "persist_outliers", func(tx *txn) error { return insertOutliers(ctx, tx, events) })
}

// ImportRoom records a room joined through another server: the room row
// (kept if an invite made it already), the auth chain and state as
// outliers, the state as the room's current state (one full state group),
// and the forward extremities the join event will replace.
func (db *DB) ImportRoom(ctx context.Context, room rooms.Room, outliers, state []*pdu.Event, extremities []string) error {
	defer db.shared.changing()()
	return db.tx(ctx, "import_room", func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, FALSE, $4)
			ON CONFLICT (room_id) DO UPDATE SET room_version = excluded.room_version, creator = excluded.creator`,
			room.RoomID, room.Version, room.Creator, room.CreatedTS)
		if err != nil {
			return fmt.Errorf("storage: import room: %w", err)
		}
		if err := insertOutliers(ctx, tx, append(append([]*pdu.Event{}, outliers...), state...)); err != nil {
			return err
		}
		entries := make([]rooms.StateEntry, 0, len(state))
		for _, ev := range state {
			sk := ev.StateKey()
			if sk == nil {
				return fmt.Errorf("storage: import state: %s is not a state event", ev.ID())
			}
			entries = append(entries, rooms.StateEntry{Type: ev.Type(), StateKey: *sk, EventID: ev.ID()})
		}
		group, err := writeFullGroup(ctx, tx, room.RoomID, entries)
		if err != nil {
			return err
		}
		if err := replaceCurrentState(ctx, tx, room.RoomID, entries, group); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM forward_extremities WHERE room_id = $1`, room.RoomID); err != nil {
			return fmt.Errorf("storage: import extremities: %w", err)
		}
		for _, id := range extremities {
			if _, err := tx.ExecContext(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, room.RoomID, id); err != nil {
				return fmt.Errorf("storage: import extremities: %w", err)
			}
		}
		return nil
	})
}

// EnsureRoom creates the row of a room this server knows only from an
// invite, so that the invite can be stored and synced.
func (db *DB) EnsureRoom(ctx context.Context, room rooms.Room) error {
	defer db.observe("ensure_room", time.Now())
	_, err := db.w.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, FALSE, $4)
		ON CONFLICT (room_id) DO NOTHING`, room.RoomID, room.Version, room.Creator, room.CreatedTS)
	if err != nil {
		return fmt.Errorf("storage: ensure room: %w", err)
	}
	return nil
}

// SaveInviteState keeps the stripped state another server sent with an
// invite of a local user.
func (db *DB) SaveInviteState(ctx context.Context, roomID, userID string, state []byte) error {
	defer db.observe("save_invite_state", time.Now())
	_, err := db.w.ExecContext(ctx, `INSERT INTO invite_stripped_state (room_id, user_id, state) VALUES ($1, $2, $3)
		ON CONFLICT (room_id, user_id) DO UPDATE SET state = excluded.state`, roomID, userID, string(state))
	if err != nil {
		return fmt.Errorf("storage: save invite state: %w", err)
	}
	return nil
}

// InviteState returns the stripped state of a remote invite (nil if none).
func (db *DB) InviteState(ctx context.Context, roomID, userID string) ([]byte, error) {
	defer db.observe("invite_state", time.Now())
	var s string
	err := db.r.QueryRowContext(ctx, `SELECT state FROM invite_stripped_state WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: invite state: %w", err)
	}
	return []byte(s), nil
}

// Enqueue adds entries to the destinations' outboxes and, when cursor is
// set, moves that reader's cursor to pos in the same transaction, so that
// the fan-out never loses or doubles an entry across a crash.
func (db *DB) Enqueue(ctx context.Context, entries []federation.OutboxEntry, cursor string, s stream.Name, pos int64) error {
	return db.tx(ctx, "federation_enqueue", func(tx *txn) error {
		if len(entries) > 0 {
			last, err := nextStreamBlock(ctx, tx, counterOutbox, int64(len(entries)))
			if err != nil {
				return err
			}
			now := time.Now().UnixMilli()
			first := last - int64(len(entries)) + 1
			for i, e := range entries {
				var eventID, edu any
				if e.EventID != "" {
					eventID = e.EventID
				}
				if e.EDU != nil {
					edu = string(e.EDU)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (destination, pos, event_id, edu, created_ts) VALUES ($1, $2, $3, $4, $5)`,
					e.Destination, first+int64(i), eventID, edu, now); err != nil {
					return fmt.Errorf("storage: enqueue: %w", err)
				}
			}
		}
		if cursor != "" {
			return setReaderCursor(ctx, tx, cursor, s, pos)
		}
		return nil
	})
}

// Outbox returns up to limit items owed to destination, oldest first.
func (db *DB) Outbox(ctx context.Context, destination string, limit int) ([]federation.OutboxItem, error) {
	defer db.observe("federation_outbox", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT pos, COALESCE(event_id, ''), edu, created_ts FROM federation_outbox
		WHERE destination = $1 ORDER BY pos LIMIT $2`, destination, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: outbox: %w", err)
	}
	defer rows.Close()
	var out []federation.OutboxItem
	for rows.Next() {
		var it federation.OutboxItem
		var edu sql.NullString
		if err := rows.Scan(&it.Pos, &it.EventID, &edu, &it.CreatedTS); err != nil {
			return nil, fmt.Errorf("storage: outbox: %w", err)
		}
		if edu.Valid {
			it.EDU = []byte(edu.String)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// OutboxDestinations lists the destinations with something owed.
func (db *DB) OutboxDestinations(ctx context.Context) ([]string, error) {
	defer db.observe("federation_outbox_destinations", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT DISTINCT destination FROM federation_outbox`)
	if err != nil {
		return nil, fmt.Errorf("storage: outbox destinations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// OutboxDepth counts the items owed to destination.
func (db *DB) OutboxDepth(ctx context.Context, destination string) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_outbox WHERE destination = $1`, destination).Scan(&n)
	return n, err
}

// Delivered removes the items of destination up to pos: the destination
// answered their transaction.
func (db *DB) Delivered(ctx context.Context, destination string, upTo int64) error {
	defer db.observe("federation_delivered", time.Now())
	if _, err := db.w.ExecContext(ctx, `DELETE FROM federation_outbox WHERE destination = $1 AND pos <= $2`, destination, upTo); err != nil {
		return fmt.Errorf("storage: delivered: %w", err)
	}
	return nil
}

// InboundTxn returns the answer already given to origin's transaction.
func (db *DB) InboundTxn(ctx context.Context, origin, txnID string) ([]byte, bool, error) {
	var s string
	err := db.r.QueryRowContext(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: inbound txn: %w", err)
	}
	return []byte(s), true, nil
}

// SaveInboundTxn records the answer to origin's transaction.
func (db *DB) SaveInboundTxn(ctx context.Context, origin, txnID string, response []byte) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("storage: save inbound txn: %w", err)
	}
	return nil
}

// RejectEvent records an event the auth rules rejected.
func (db *DB) RejectEvent(ctx context.Context, ev *pdu.Event, reason string) error {
	defer db.observe("reject_event", time.Now())
	_, err := db.w.ExecContext(ctx, `INSERT INTO rejected_events (event_id, room_id, reason, json, received_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (event_id) DO NOTHING`, ev.ID(), ev.RoomID(), reason, string(ev.JSON()), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("storage: reject event: %w", err)
	}
	return nil
}

// RejectedEvents returns the reasons of those of ids that were rejected.
func (db *DB) RejectedEvents(ctx context.Context, ids []string) (map[string]string, error) {
	defer db.observe("rejected_events", time.Now())
	out := map[string]string{}
	for start := 0; start < len(ids); start += 500 {
		ph, args := inList(ids[start:min(start+500, len(ids))], nil)
		rows, err := db.r.QueryContext(ctx, `SELECT event_id, reason FROM rejected_events WHERE event_id IN (`+ph+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: rejected events: %w", err)
		}
		for rows.Next() {
			var id, reason string
			if err := rows.Scan(&id, &reason); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: rejected events: %w", err)
			}
			out[id] = reason
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
