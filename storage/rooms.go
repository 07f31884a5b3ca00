package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"homeserver/pdu"
	"homeserver/rooms"

	"homeserver/stream"
)

var _ rooms.Store = (*DB)(nil)

// fullStateEvery bounds state-group delta chains: reading state walks at
// most this many groups.
const fullStateEvery = 32

const eventColumns = `stream_pos, event_id, room_id, type, state_key, sender, membership, depth, origin_server_ts, state_group, redacted_by, replaces_state, json`

func scanStored(s scanner) (rooms.Stored, error) {
	var e rooms.Stored
	var stateKey, membership, redactedBy, replaces sql.NullString
	var js string
	err := s.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Type, &stateKey, &e.Sender, &membership, &e.Depth, &e.TS, &e.StateGroup, &redactedBy, &replaces, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return e, rooms.ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("storage: scan event: %w", err)
	}
	if stateKey.Valid {
		sk := stateKey.String
		e.StateKey = &sk
	}
	e.Membership, e.RedactedBy, e.ReplacesState, e.JSON = membership.String, redactedBy.String, replaces.String, []byte(js)
	return e, nil
}

func collectStored(rows *sql.Rows, err error) ([]rooms.Stored, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: query events: %w", err)
	}
	defer rows.Close()
	var out []rooms.Stored
	for rows.Next() {
		e, err := scanStored(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: query events: %w", err)
	}
	return out, nil
}

func (db *DB) PersistEvent(ctx context.Context, ne rooms.NewEvent) (int64, error) {
	ps, err := db.PersistEvents(ctx, []rooms.NewEvent{ne})
	if err != nil {
		return 0, err
	}
	return ps[0], nil
}

// PersistEvents writes events in one transaction, in order, each as
// PersistEvent would: one commit for several senders' events.
func (db *DB) PersistEvents(ctx context.Context, nes []rooms.NewEvent) ([]int64, error) {
	out := make([]int64, len(nes))
	err := db.tx(ctx, "persist_event", func(tx *txn) error {
		for i, ne := range nes {
			pos, err := persistEvent(ctx, tx, ne)
			if err != nil {
				return err
			}
			out[i] = pos
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func persistEvent(ctx context.Context, tx *txn, ne rooms.NewEvent) (int64, error) {
	ev := ne.Event
	var pos int64
	err := func() error {
		if t := ne.Txn; t != nil {
			var existing string
			err := tx.QueryRowContext(ctx, `SELECT event_id FROM event_txns WHERE user_id = $1 AND scope = $2 AND path = $3 AND txn_id = $4`,
				t.UserID, t.Scope, t.Path, t.TxnID).Scan(&existing)
			if err == nil {
				return rooms.ErrDuplicateTxn
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("storage: check txn: %w", err)
			}
		}
		var err error
		if pos, err = nextStreamPos(ctx, tx, string(stream.Events)); err != nil {
			return err
		}
		if r := ne.Room; r != nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, $4, $5)`,
				r.RoomID, r.Version, r.Creator, r.Published, r.CreatedTS)
			if err != nil {
				return fmt.Errorf("storage: create room: %w", err)
			}
		}
		var group int64
		if err := tx.QueryRowContext(ctx, `SELECT state_group FROM rooms WHERE room_id = $1`, ev.RoomID()).Scan(&group); err != nil {
			return fmt.Errorf("storage: room state group: %w", err)
		}
		var stateKey, membership, replaces any
		if sk := ev.StateKey(); sk != nil {
			stateKey = *sk
			if ev.Type() == "m.room.member" {
				membership = ev.Membership()
			}
			var prev string
			var prevMembership sql.NullString
			err := tx.QueryRowContext(ctx, `SELECT event_id, membership FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`,
				ev.RoomID(), ev.Type(), *sk).Scan(&prev, &prevMembership)
			if err == nil {
				replaces = prev
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("storage: replaced state: %w", err)
			}
			if ev.Type() == "m.room.member" && ne.StateAfter == nil {
				if err := adjustRoomServers(ctx, tx, ev.RoomID(), *sk, prevMembership.String, ev.Membership()); err != nil {
					return err
				}
			}
		}
		if sk := ev.StateKey(); sk != nil && ne.StateAfter == nil {
			_, err = tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (room_id, type, state_key) DO UPDATE SET
					event_id = excluded.event_id, membership = excluded.membership, stream_pos = excluded.stream_pos`,
				ev.RoomID(), ev.Type(), *sk, ev.ID(), membership, pos)
			if err != nil {
				return fmt.Errorf("storage: update current state: %w", err)
			}
			if group, err = newStateGroup(ctx, tx, ev, group, replaces == nil); err != nil {
				return err
			}
		}
		// After a fork, the caller resolved the state: written in full.
		currentGroup := int64(0)
		if ne.StateAfter != nil {
			if group, err = writeFullGroup(ctx, tx, ev.RoomID(), ne.StateAfter); err != nil {
				return err
			}
			currentGroup = group
			if ne.CurrentState != nil {
				if currentGroup, err = writeFullGroup(ctx, tx, ev.RoomID(), ne.CurrentState); err != nil {
					return err
				}
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO events (`+eventColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $12)`,
			pos, ev.ID(), ev.RoomID(), ev.Type(), stateKey, ev.Sender(), membership, ev.Depth(), ev.OriginServerTS(), group, replaces, string(ev.JSON()))
		if err != nil {
			return fmt.Errorf("storage: insert event: %w", err)
		}
		if rooms.IsBumpType(ev.Type()) {
			if _, err := tx.ExecContext(ctx, `UPDATE rooms SET bump_pos = $1 WHERE room_id = $2`, pos, ev.RoomID()); err != nil {
				return fmt.Errorf("storage: bump room: %w", err)
			}
		}
		if ne.StateAfter != nil {
			current := ne.CurrentState
			if current == nil {
				current = ne.StateAfter
			}
			if err := replaceCurrentState(ctx, tx, ev.RoomID(), current, currentGroup); err != nil {
				return err
			}
		}
		for _, prev := range ev.PrevEventIDs() {
			if _, err := tx.ExecContext(ctx, `DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2`, ev.RoomID(), prev); err != nil {
				return fmt.Errorf("storage: forward extremities: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)`, ev.RoomID(), ev.ID()); err != nil {
			return fmt.Errorf("storage: forward extremities: %w", err)
		}
		if ne.Received {
			if err := noteHoles(ctx, tx, ev, nil); err != nil {
				return err
			}
		}
		if t := ne.Txn; t != nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO event_txns (user_id, scope, path, txn_id, event_id) VALUES ($1, $2, $3, $4, $5)`,
				t.UserID, t.Scope, t.Path, t.TxnID, ev.ID())
			if err != nil {
				return fmt.Errorf("storage: record txn: %w", err)
			}
		}
		if r := ne.Relation; r != nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, stream_pos)
				VALUES ($1, $2, $3, $4, $5, $6)`, ev.ID(), ev.RoomID(), r.RelatesTo, r.RelType, ev.Type(), pos)
			if err != nil {
				return fmt.Errorf("storage: index relation: %w", err)
			}
		}
		if ev.Type() == "m.room.member" && ev.StateKey() != nil && (ev.Membership() == "join" || ev.Membership() == "invite") {
			// Coming back to a forgotten room makes it part of the user's history again.
			if _, err := tx.ExecContext(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, *ev.StateKey(), ev.RoomID()); err != nil {
				return fmt.Errorf("storage: unforget room: %w", err)
			}
		}
		if ne.RedactTarget != "" {
			_, err := tx.ExecContext(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND room_id = $3 AND redacted_by IS NULL`,
				ev.ID(), ne.RedactTarget, ev.RoomID())
			if err != nil {
				return fmt.Errorf("storage: apply redaction: %w", err)
			}
		}
		return nil
	}()
	return pos, err
}

// writeFullGroup writes a state group holding entries in full.
func writeFullGroup(ctx context.Context, tx *txn, roomID string, entries []rooms.StateEntry) (int64, error) {
	id, err := nextStreamPos(ctx, tx, counterStateGroups)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO state_groups (id, room_id, prev_id, chain_len, state_size) VALUES ($1, $2, NULL, 0, $3)`,
		id, roomID, len(entries)); err != nil {
		return 0, fmt.Errorf("storage: insert state group: %w", err)
	}
	for _, e := range entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, id, e.Type, e.StateKey, e.EventID); err != nil {
			return 0, fmt.Errorf("storage: insert state group entry: %w", err)
		}
	}
	return id, nil
}

// replaceCurrentState makes entries (stored events) the room's current
// state, held by state group group.
func replaceCurrentState(ctx context.Context, tx *txn, roomID string, entries []rooms.StateEntry, group int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM current_state WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("storage: replace current state: %w", err)
	}
	for _, e := range entries {
		res, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
			SELECT room_id, type, state_key, event_id, membership, stream_pos FROM events WHERE event_id = $1 AND room_id = $2`, e.EventID, roomID)
		if err != nil {
			return fmt.Errorf("storage: replace current state: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("storage: replace current state: event %s is not stored", e.EventID)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE rooms SET state_group = $1 WHERE room_id = $2`, group, roomID); err != nil {
		return fmt.Errorf("storage: replace current state: %w", err)
	}
	return rebuildRoomServers(ctx, tx, roomID)
}

// newStateGroup records the state after a state event: a one-entry delta
// over the previous group, or the full current state once the chain is as
// long as max(fullStateEvery, size/16) — so a full copy of S entries comes
// at most every S/16 state events, and big rooms' joins stay cheap.
func newStateGroup(ctx context.Context, tx *txn, ev *pdu.Event, prev int64, newKey bool) (int64, error) {
	var id int64
	id, err := nextStreamPos(ctx, tx, counterStateGroups)
	if err != nil {
		return 0, err
	}
	var chain, size int64
	if prev != 0 {
		if err := tx.QueryRowContext(ctx, `SELECT chain_len, state_size FROM state_groups WHERE id = $1`, prev).Scan(&chain, &size); err != nil {
			return 0, fmt.Errorf("storage: state group chain: %w", err)
		}
	}
	if newKey {
		size++
	}
	if prev == 0 || chain+1 >= max(fullStateEvery, size/16) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_groups (id, room_id, prev_id, chain_len, state_size) VALUES ($1, $2, NULL, 0, $3)`,
			id, ev.RoomID(), size); err != nil {
			return 0, fmt.Errorf("storage: insert state group: %w", err)
		}
		// current_state already includes ev.
		_, err := tx.ExecContext(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id)
			SELECT $1, type, state_key, event_id FROM current_state WHERE room_id = $2`, id, ev.RoomID())
		if err != nil {
			return 0, fmt.Errorf("storage: snapshot state: %w", err)
		}
	} else {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_groups (id, room_id, prev_id, chain_len, state_size) VALUES ($1, $2, $3, $4, $5)`,
			id, ev.RoomID(), prev, chain+1, size); err != nil {
			return 0, fmt.Errorf("storage: insert state group: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
			id, ev.Type(), *ev.StateKey(), ev.ID()); err != nil {
			return 0, fmt.Errorf("storage: insert state delta: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE rooms SET state_group = $1 WHERE room_id = $2`, id, ev.RoomID()); err != nil {
		return 0, fmt.Errorf("storage: update room state group: %w", err)
	}
	return id, nil
}

func (db *DB) GetRoom(ctx context.Context, roomID string) (rooms.Room, error) {
	defer db.observe("get_room", time.Now())
	var r rooms.Room
	err := db.r.QueryRowContext(ctx, `SELECT room_id, room_version, creator, published, created_ts FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.RoomID, &r.Version, &r.Creator, &r.Published, &r.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return r, rooms.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("storage: get room: %w", err)
	}
	return r, nil
}

func (db *DB) Extremities(ctx context.Context, roomID string) ([]string, int64, error) {
	defer db.observe("extremities", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT f.event_id, e.depth FROM forward_extremities f
		JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY f.event_id`, roomID)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: extremities: %w", err)
	}
	defer rows.Close()
	var ids []string
	var depth int64
	for rows.Next() {
		var id string
		var d int64
		if err := rows.Scan(&id, &d); err != nil {
			return nil, 0, fmt.Errorf("storage: extremities: %w", err)
		}
		ids = append(ids, id)
		depth = max(depth, d)
	}
	return ids, depth, rows.Err()
}

// keyFilter builds "(type = $n AND state_key = $n+1) OR ..." for keys.
// scope, when set, is a condition repeated in every term, so that each
// term can be looked up by a whole primary key (SQLite's OR optimisation).
func keyFilter(keys []pdu.StateKey, scope, typeCol, keyCol string, args []any) (string, []any) {
	parts := make([]string, 0, len(keys))
	if scope != "" {
		scope += " AND "
	}
	for _, k := range keys {
		args = append(args, k.Type, k.StateKey)
		parts = append(parts, fmt.Sprintf("(%s%s = $%d AND %s = $%d)", scope, typeCol, len(args)-1, keyCol, len(args)))
	}
	return "(" + strings.Join(parts, " OR ") + ")", args
}

func (db *DB) currentState(ctx context.Context, roomID string, keys []pdu.StateKey) ([]rooms.Stored, error) {
	defer db.observe("current_state", time.Now())
	q := `SELECT ` + prefixed("e", eventColumns) + ` FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE `
	args := []any{roomID}
	if keys == nil {
		q += `c.room_id = $1`
	} else {
		if len(keys) == 0 {
			return nil, nil
		}
		// The room ID only inside the terms: with it outside too, SQLite
		// prefers scanning the whole room's state, which grows with its
		// members.
		var f string
		f, args = keyFilter(keys, "c.room_id = $1", "c.type", "c.state_key", args)
		q += f
	}
	return collectStored(db.r.QueryContext(ctx, q+` ORDER BY c.stream_pos`, args...))
}

func (db *DB) CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]rooms.Stored, error) {
	defer db.observe("current_state_of_type", time.Now())
	return collectStored(db.r.QueryContext(ctx, `SELECT `+prefixed("e", eventColumns)+` FROM current_state c
		JOIN events e ON e.event_id = c.event_id WHERE c.room_id = $1 AND c.type = $2 ORDER BY c.stream_pos`, roomID, eventType))
}

func (db *DB) StateAt(ctx context.Context, group int64, keys []pdu.StateKey) ([]rooms.StateEntry, error) {
	defer db.observe("state_at", time.Now())
	if group == 0 {
		return nil, nil
	}
	q := `WITH RECURSIVE chain (id, prev_id, depth) AS (
			SELECT id, prev_id, 0 FROM state_groups WHERE id = $1
			UNION ALL
			SELECT g.id, g.prev_id, c.depth + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_id
		)
		SELECT s.type, s.state_key, s.event_id FROM chain c JOIN state_group_entries s ON s.group_id = c.id`
	args := []any{group}
	if keys != nil {
		if len(keys) == 0 {
			return nil, nil
		}
		var f string
		f, args = keyFilter(keys, "", "s.type", "s.state_key", args)
		q += " WHERE " + f
	}
	rows, err := db.r.QueryContext(ctx, q+` ORDER BY c.depth`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: state at group: %w", err)
	}
	defer rows.Close()
	seen := map[[2]string]bool{}
	var out []rooms.StateEntry
	for rows.Next() {
		var e rooms.StateEntry
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventID); err != nil {
			return nil, fmt.Errorf("storage: state at group: %w", err)
		}
		k := [2]string{e.Type, e.StateKey}
		if !seen[k] { // nearer deltas win
			seen[k] = true
			out = append(out, e)
		}
	}
	return out, rows.Err()
}

func (db *DB) GetEvent(ctx context.Context, eventID string) (rooms.Stored, error) {
	defer db.observe("get_event", time.Now())
	return scanStored(db.r.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
}

func (db *DB) GetEvents(ctx context.Context, ids []string) ([]rooms.Stored, error) {
	defer db.observe("get_events", time.Now())
	var out []rooms.Stored
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		evs, err := collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+strings.Join(ph, ",")+`) ORDER BY stream_pos`, args...))
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

func (db *DB) TxnEvent(ctx context.Context, t rooms.TxnRef) (string, error) {
	defer db.observe("txn_event", time.Now())
	var id string
	err := db.r.QueryRowContext(ctx, `SELECT event_id FROM event_txns WHERE user_id = $1 AND scope = $2 AND path = $3 AND txn_id = $4`,
		t.UserID, t.Scope, t.Path, t.TxnID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", rooms.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("storage: txn event: %w", err)
	}
	return id, nil
}

func (db *DB) Membership(ctx context.Context, roomID, userID string) (string, error) {
	defer db.observe("membership", time.Now())
	var m sql.NullString
	err := db.r.QueryRowContext(ctx, `SELECT membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`,
		roomID, userID).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("storage: membership: %w", err)
	}
	return m.String, nil
}

func (db *DB) RoomsOf(ctx context.Context, userID, membership string) ([]string, error) {
	defer db.observe("rooms_of", time.Now())
	return queryStrings(ctx, db.r, `SELECT room_id FROM current_state WHERE state_key = $1 AND type = 'm.room.member' AND membership = $2 ORDER BY room_id`,
		userID, membership)
}

func (db *DB) MemberEvents(ctx context.Context, roomID, userID string) ([]rooms.Stored, error) {
	defer db.observe("member_events", time.Now())
	return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND state_key = $2 AND type = 'm.room.member' ORDER BY stream_pos`, roomID, userID))
}

func (db *DB) TypeEvents(ctx context.Context, roomID, eventType string) ([]rooms.Stored, error) {
	defer db.observe("type_events", time.Now())
	return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND state_key = '' AND type = $2 ORDER BY stream_pos`, roomID, eventType))
}

func (db *DB) roomEvents(ctx context.Context, roomID string, from, to int64, forward bool, limit int) ([]rooms.Stored, error) {
	defer db.observe("room_events", time.Now())
	order := "DESC"
	if forward {
		order = "ASC"
	}
	lo, hi := from, to
	if !forward {
		lo, hi = to, from
	}
	return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 ORDER BY stream_pos `+order+` LIMIT $4`, roomID, lo, hi, limit))
}

func (db *DB) MaxPos(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.Events))
}

func (db *DB) StateGroupAt(ctx context.Context, roomID string, pos int64) (int64, error) {
	defer db.observe("state_group_at", time.Now())
	var g int64
	err := db.r.QueryRowContext(ctx, `SELECT state_group FROM events WHERE room_id = $1 AND stream_pos <= $2
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&g)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("storage: state group at: %w", err)
	}
	return g, nil
}

func (db *DB) stateGroupAtCurrent(ctx context.Context, roomID string, pos int64) (int64, bool, error) {
	defer db.observe("state_group_at_current", time.Now())
	var g, current int64
	err := db.r.QueryRowContext(ctx, `SELECT e.state_group, r.state_group FROM events e JOIN rooms r ON r.room_id = e.room_id
		WHERE e.room_id = $1 AND e.stream_pos <= $2 ORDER BY e.stream_pos DESC LIMIT 1`, roomID, pos).Scan(&g, &current)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("storage: state group at: %w", err)
	}
	return g, g != 0 && g == current, nil
}

func (db *DB) CreateAlias(ctx context.Context, alias, roomID, creator string) error {
	_, err := db.exec(ctx, "create_alias", `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	if isUniqueViolation(err) {
		return rooms.ErrAliasExists
	}
	return err
}

func (db *DB) ResolveAlias(ctx context.Context, alias string) (string, string, error) {
	defer db.observe("resolve_alias", time.Now())
	var roomID, creator string
	err := db.r.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", rooms.ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("storage: resolve alias: %w", err)
	}
	return roomID, creator, nil
}

func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	res, err := db.exec(ctx, "delete_alias", `DELETE FROM room_aliases WHERE alias = $1`, alias)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return rooms.ErrNotFound
	}
	return nil
}

func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	defer db.observe("room_aliases", time.Now())
	return queryStrings(ctx, db.r, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
}

func (db *DB) SetPublished(ctx context.Context, roomID string, published bool) error {
	res, err := db.exec(ctx, "set_published", `UPDATE rooms SET published = $1 WHERE room_id = $2`, published, roomID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return rooms.ErrNotFound
	}
	return nil
}

func (db *DB) PublishedRooms(ctx context.Context) ([]string, error) {
	defer db.observe("published_rooms", time.Now())
	return queryStrings(ctx, db.r, `SELECT room_id FROM rooms WHERE published = TRUE ORDER BY room_id`)
}

func (db *DB) Forget(ctx context.Context, userID, roomID string) error {
	_, err := db.exec(ctx, "forget_room", `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
	return err
}

func (db *DB) Forgotten(ctx context.Context, userID, roomID string) (bool, error) {
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: forgotten: %w", err)
	}
	return n > 0, nil
}

func queryStrings(ctx context.Context, db querier, q string, args ...any) ([]string, error) {
	return queryValues[string](ctx, db, q, args...)
}

// queryValues reads the one column of q's rows.
func queryValues[T any](ctx context.Context, db querier, q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: query: %w", err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("storage: query: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// prefixed qualifies a column list with a table alias.
func prefixed(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = alias + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

func (db *DB) DirectoryRooms(ctx context.Context) ([]rooms.DirectoryRoom, error) {
	defer db.observe("directory_rooms", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT r.room_id, COUNT(c.state_key) FROM rooms r
		LEFT JOIN current_state c ON c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join'
		WHERE r.published = TRUE GROUP BY r.room_id`)
	if err != nil {
		return nil, fmt.Errorf("storage: directory rooms: %w", err)
	}
	defer rows.Close()
	var out []rooms.DirectoryRoom
	for rows.Next() {
		var d rooms.DirectoryRoom
		if err := rows.Scan(&d.RoomID, &d.JoinedMembers); err != nil {
			return nil, fmt.Errorf("storage: directory rooms: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (db *DB) JoinedUserIDs(ctx context.Context, roomID string) ([]string, error) {
	defer db.observe("joined_user_ids", time.Now())
	return queryStrings(ctx, db.r, `SELECT state_key FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join' ORDER BY state_key`, roomID)
}

func (db *DB) MoveAliases(ctx context.Context, fromRoomID, toRoomID string) ([]string, error) {
	var moved []string
	err := db.tx(ctx, "move_aliases", func(tx *txn) error {
		rows, err := tx.QueryContext(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, fromRoomID)
		if err != nil {
			return fmt.Errorf("storage: move aliases: %w", err)
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return fmt.Errorf("storage: move aliases: %w", err)
			}
			moved = append(moved, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storage: move aliases: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, toRoomID, fromRoomID); err != nil {
			return fmt.Errorf("storage: move aliases: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return moved, nil
}

// inList appends vals to args and returns the placeholders for an IN list.
func inList(vals []string, args []any) (string, []any) {
	ph := make([]string, len(vals))
	for i, v := range vals {
		args = append(args, v)
		ph[i] = fmt.Sprintf("$%d", len(args))
	}
	return strings.Join(ph, ", "), args
}

func (db *DB) RelatedEvents(ctx context.Context, q rooms.RelationQuery) ([]rooms.Stored, error) {
	defer db.observe("related_events", time.Now())
	args := []any{q.Parent, q.RoomID}
	// match restricts a relation (r) and its event (e) at every level: the
	// same room, not redacted (a redacted child's relation is gone), and
	// the requested rel_type and type.
	match := `r.room_id = $2 AND e.redacted_by IS NULL`
	if q.RelType != "" {
		args = append(args, q.RelType)
		match += fmt.Sprintf(" AND r.rel_type = $%d", len(args))
	}
	if q.EventType != "" {
		args = append(args, q.EventType)
		match += fmt.Sprintf(" AND r.type = $%d", len(args))
	}
	order := "DESC"
	if q.Forward {
		order = "ASC"
	}
	var query string
	if q.Depth <= 1 {
		query = `SELECT ` + prefixed("e", eventColumns) + ` FROM event_relations r JOIN events e ON e.event_id = r.event_id
			WHERE r.relates_to = $1 AND ` + match
	} else {
		args = append(args, q.Depth)
		query = `WITH RECURSIVE related (event_id, depth) AS (
				SELECT r.event_id, 1 FROM event_relations r JOIN events e ON e.event_id = r.event_id
				WHERE r.relates_to = $1 AND ` + match + `
				UNION ALL
				SELECT r.event_id, p.depth + 1 FROM related p
				JOIN event_relations r ON r.relates_to = p.event_id
				JOIN events e ON e.event_id = r.event_id
				WHERE ` + fmt.Sprintf("p.depth < $%d", len(args)) + ` AND ` + match + `
			)
			SELECT ` + prefixed("e", eventColumns) + ` FROM related x JOIN events e ON e.event_id = x.event_id WHERE TRUE`
	}
	args = append(args, q.After, q.Before, q.Limit)
	n := len(args)
	query += fmt.Sprintf(" AND e.stream_pos > $%d AND e.stream_pos < $%d ORDER BY e.stream_pos %s LIMIT $%d", n-2, n-1, order, n)
	return collectStored(db.r.QueryContext(ctx, query, args...))
}

func (db *DB) ThreadRoots(ctx context.Context, roomID string, before int64, participant string, limit int) ([]rooms.ThreadRoot, error) {
	defer db.observe("thread_roots", time.Now())
	args := []any{roomID, before, limit}
	having := `MAX(r.stream_pos) < $2`
	if participant != "" {
		args = append(args, participant)
		having += ` AND (root.sender = $4 OR MAX(CASE WHEN e.sender = $4 THEN 1 ELSE 0 END) = 1)`
	}
	rows, err := db.r.QueryContext(ctx, `SELECT r.relates_to, MAX(r.stream_pos) FROM event_relations r
		JOIN events e ON e.event_id = r.event_id
		JOIN events root ON root.event_id = r.relates_to
		WHERE r.room_id = $1 AND root.room_id = $1 AND r.rel_type = 'm.thread' AND e.redacted_by IS NULL
		GROUP BY r.relates_to, root.sender
		HAVING `+having+`
		ORDER BY MAX(r.stream_pos) DESC LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: thread roots: %w", err)
	}
	defer rows.Close()
	var out []rooms.ThreadRoot
	for rows.Next() {
		var t rooms.ThreadRoot
		if err := rows.Scan(&t.RootID, &t.LatestPos); err != nil {
			return nil, fmt.Errorf("storage: thread roots: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (db *DB) ThreadSummaries(ctx context.Context, roomID string, roots []string, user string) (map[string]rooms.ThreadSummary, error) {
	defer db.observe("thread_summaries", time.Now())
	out := map[string]rooms.ThreadSummary{}
	if len(roots) == 0 {
		return out, nil
	}
	in, args := inList(roots, []any{roomID, user})
	rows, err := db.r.QueryContext(ctx, `SELECT r.relates_to, COUNT(*), MAX(r.stream_pos), MAX(CASE WHEN e.sender = $2 THEN 1 ELSE 0 END)
		FROM event_relations r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.rel_type = 'm.thread' AND e.redacted_by IS NULL AND r.relates_to IN (`+in+`)
		GROUP BY r.relates_to`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: thread summaries: %w", err)
	}
	defer rows.Close()
	rootAt := map[int64]string{}
	var latest []any
	var ph []string
	for rows.Next() {
		var root string
		var s rooms.ThreadSummary
		var pos, participated int64
		if err := rows.Scan(&root, &s.Count, &pos, &participated); err != nil {
			return nil, fmt.Errorf("storage: thread summaries: %w", err)
		}
		s.Participated = participated == 1
		out[root] = s
		rootAt[pos] = root
		latest = append(latest, pos)
		ph = append(ph, fmt.Sprintf("$%d", len(latest)))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: thread summaries: %w", err)
	}
	rows.Close()
	if len(latest) == 0 {
		return out, nil
	}
	evs, err := collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events WHERE stream_pos IN (`+strings.Join(ph, ", ")+`)`, latest...))
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		root := rootAt[e.Pos]
		s := out[root]
		s.Latest = e
		out[root] = s
	}
	return out, nil
}

func (db *DB) RelationChildren(ctx context.Context, roomID string, parents, relTypes []string) ([]rooms.RelatedEvent, error) {
	defer db.observe("relation_children", time.Now())
	if len(parents) == 0 || len(relTypes) == 0 {
		return nil, nil
	}
	inTypes, args := inList(relTypes, []any{roomID})
	inParents, args := inList(parents, args)
	rows, err := db.r.QueryContext(ctx, `SELECT r.relates_to, r.rel_type, `+prefixed("e", eventColumns)+`
		FROM event_relations r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND e.redacted_by IS NULL AND r.rel_type IN (`+inTypes+`) AND r.relates_to IN (`+inParents+`)
		ORDER BY r.stream_pos`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: relation children: %w", err)
	}
	defer rows.Close()
	var out []rooms.RelatedEvent
	for rows.Next() {
		var c rooms.RelatedEvent
		var parent, relType string
		ev, err := scanStored(prefixScanner{rows, []any{&parent, &relType}})
		if err != nil {
			return nil, err
		}
		c.Parent, c.RelType, c.Event = parent, relType, ev
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: relation children: %w", err)
	}
	return out, nil
}

// prefixScanner scans leading columns into extra before the ones its
// caller asks for.
type prefixScanner struct {
	s     scanner
	extra []any
}

func (p prefixScanner) Scan(dest ...any) error { return p.s.Scan(append(p.extra, dest...)...) }

func (db *DB) EventsByTime(ctx context.Context, roomID string, ts, pos int64, forward bool, limit int) ([]rooms.Stored, error) {
	defer db.observe("events_by_time", time.Now())
	q := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1
		AND (origin_server_ts < $2 OR (origin_server_ts = $2 AND stream_pos < $3))
		ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT $4`
	if forward {
		q = `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1
		AND (origin_server_ts > $2 OR (origin_server_ts = $2 AND stream_pos > $3))
		ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT $4`
	}
	return collectStored(db.r.QueryContext(ctx, q, roomID, ts, pos, limit))
}

func (db *DB) UserMemberships(ctx context.Context, userID string) ([]rooms.Stored, error) {
	defer db.observe("user_memberships", time.Now())
	return collectStored(db.r.QueryContext(ctx, `SELECT `+prefixed("e", eventColumns)+` FROM current_state c
		JOIN events e ON e.event_id = c.event_id
		WHERE c.state_key = $1 AND c.type = 'm.room.member' ORDER BY c.room_id`, userID))
}

// UserMembershipHeads is UserMemberships without the events' JSON: what
// current_state holds, and the sender where it matters (invites, leaves
// and bans), so that a user in many rooms costs an index walk and not a
// read of every membership event.
//
// With SQLite the answer is kept until the next write to current_state
// (tableGens): it may then be newer than a read snapshot asking for it,
// which /sync allows for (a membership past its snapshot's position is
// read as it stood at that position).
func (db *DB) UserMembershipHeads(ctx context.Context, userID string) ([]rooms.Stored, error) {
	return cachedRead(db.w.gens, membershipTables, db.memberships, userID, cloneSlice,
		func() ([]rooms.Stored, error) { return db.userMembershipHeads(ctx, userID) })
}

func (db *DB) userMembershipHeads(ctx context.Context, userID string) ([]rooms.Stored, error) {
	defer db.observe("user_membership_heads", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, event_id, stream_pos, membership FROM current_state
		WHERE state_key = $1 AND type = 'm.room.member' ORDER BY room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: user memberships: %w", err)
	}
	var out []rooms.Stored
	for rows.Next() {
		var m sql.NullString
		st := rooms.Stored{Type: "m.room.member", StateKey: &userID}
		if err := rows.Scan(&st.RoomID, &st.EventID, &st.Pos, &m); err != nil {
			rows.Close()
			return nil, fmt.Errorf("storage: user memberships: %w", err)
		}
		st.Membership = m.String
		out = append(out, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: user memberships: %w", err)
	}
	var ids []string
	at := map[string]int{}
	for i, m := range out {
		if m.Membership != "join" && m.Membership != "knock" {
			ids = append(ids, m.EventID)
			at[m.EventID] = i
		}
	}
	for start := 0; start < len(ids); start += 500 {
		in, args := inList(ids[start:min(start+500, len(ids))], nil)
		rows, err := db.r.QueryContext(ctx, `SELECT event_id, sender FROM events WHERE event_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: membership senders: %w", err)
		}
		for rows.Next() {
			var id, sender string
			if err := rows.Scan(&id, &sender); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: membership senders: %w", err)
			}
			out[at[id]].Sender = sender
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("storage: membership senders: %w", err)
		}
	}
	return out, nil
}

func (db *DB) roomsWithEventsBetween(ctx context.Context, from, to int64) ([]string, error) {
	defer db.observe("rooms_with_events_between", time.Now())
	return queryStrings(ctx, db.r, `SELECT DISTINCT room_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
}

func (db *DB) StateEventsBetween(ctx context.Context, roomID string, from, to int64) ([]rooms.Stored, error) {
	defer db.observe("state_events_between", time.Now())
	return collectStored(db.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 AND state_key IS NOT NULL ORDER BY stream_pos`, roomID, from, to))
}

func (db *DB) MemberCounts(ctx context.Context, roomID string) (map[string]int, error) {
	defer db.observe("member_counts", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT membership, COUNT(*) FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member' GROUP BY membership`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: member counts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var m sql.NullString
		var n int
		if err := rows.Scan(&m, &n); err != nil {
			return nil, fmt.Errorf("storage: member counts: %w", err)
		}
		out[m.String] = n
	}
	return out, rows.Err()
}

func (db *DB) Heroes(ctx context.Context, roomID, user string, limit int) ([]string, error) {
	defer db.observe("heroes", time.Now())
	return queryStrings(ctx, db.r, `SELECT state_key FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND membership IN ('join', 'invite') AND state_key <> $2
		ORDER BY stream_pos LIMIT $3`, roomID, user, limit)
}

func (db *DB) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	defer db.observe("shares_room", time.Now())
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM current_state x
		JOIN current_state y ON y.room_id = x.room_id AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join'
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join' LIMIT 1) s`, a, b).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: shares room: %w", err)
	}
	return n > 0, nil
}

func (db *DB) UsersSharingRoom(ctx context.Context, user string, candidates []string) ([]string, error) {
	defer db.observe("users_sharing_room", time.Now())
	var out []string
	for start := 0; start < len(candidates); start += 500 {
		chunk := candidates[start:min(start+500, len(candidates))]
		in, args := inList(chunk, []any{user})
		got, err := queryStrings(ctx, db.r, `SELECT DISTINCT y.state_key FROM current_state x
			JOIN current_state y ON y.room_id = x.room_id AND y.type = 'm.room.member' AND y.membership = 'join'
			WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join' AND y.state_key IN (`+in+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func (db *DB) memberChangesBetween(ctx context.Context, roomIDs []string, from, to int64) ([]rooms.MemberChange, error) {
	defer db.observe("member_changes_between", time.Now())
	var out []rooms.MemberChange
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		in, args := inList(chunk, []any{from, to})
		rows, err := db.r.QueryContext(ctx, `SELECT e.room_id, e.state_key, COALESCE(e.membership, ''), COALESCE(p.membership, ''), e.stream_pos
			FROM events e LEFT JOIN events p ON p.event_id = e.replaces_state
			WHERE e.type = 'm.room.member' AND e.stream_pos > $1 AND e.stream_pos <= $2 AND e.room_id IN (`+in+`)
			ORDER BY e.stream_pos`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: member changes: %w", err)
		}
		for rows.Next() {
			var c rooms.MemberChange
			if err := rows.Scan(&c.RoomID, &c.UserID, &c.Membership, &c.Previous, &c.Pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: member changes: %w", err)
			}
			out = append(out, c)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: member changes: %w", err)
		}
	}
	return out, nil
}

func (db *DB) TxnIDs(ctx context.Context, userID, scope string, eventIDs []string) (map[string]string, error) {
	defer db.observe("txn_ids", time.Now())
	out := map[string]string{}
	for start := 0; start < len(eventIDs); start += 500 {
		chunk := eventIDs[start:min(start+500, len(eventIDs))]
		args := []any{userID, scope}
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", i+3)
		}
		rows, err := db.r.QueryContext(ctx, `SELECT event_id, txn_id FROM event_txns
			WHERE user_id = $1 AND scope = $2 AND event_id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: txn ids: %w", err)
		}
		for rows.Next() {
			var ev, txn string
			if err := rows.Scan(&ev, &txn); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: txn ids: %w", err)
			}
			out[ev] = txn
		}
		rows.Close()
	}
	return out, nil
}
