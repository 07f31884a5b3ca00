package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"homeserver/adminapi"
	"homeserver/rooms"
)

// The admin API's queries and changes of rooms (adminapi/rooms.go and
// rooms/admin.go).

// jsonText is the SQL expression of the field at path of a JSON text
// column, as text (NULL when absent).
func (db *DB) jsonText(col string, path ...string) string {
	if db.engine == Postgres {
		return fmt.Sprintf("((%s)::jsonb #>> '{%s}')", col, strings.Join(path, ","))
	}
	quoted := make([]string, len(path))
	for i, p := range path {
		quoted[i] = `"` + p + `"`
	}
	return fmt.Sprintf("json_extract(%s, '$.%s')", col, strings.Join(quoted, "."))
}

// notFalse is the SQL expression telling that the JSON field at path is not
// the literal false (m.federate: absent means true).
func (db *DB) notFalse(col string, path ...string) string {
	if db.engine == Postgres {
		return fmt.Sprintf("COALESCE((%s)::jsonb #> '{%s}' <> 'false'::jsonb, TRUE)", col, strings.Join(path, ","))
	}
	quoted := make([]string, len(path))
	for i, p := range path {
		quoted[i] = `"` + p + `"`
	}
	return fmt.Sprintf("COALESCE(json_type(%s, '$.%s'), '') <> 'false'", col, strings.Join(quoted, "."))
}

// roomStatsSQL selects one row per room with the fields of the admin
// API's room list, from the current state. stateField reads a content
// field of a current state event; redacted events have lost it, but for
// the join rule and history visibility, which redaction keeps. $1 is the
// server's name, for the local member count.
func (db *DB) roomStatsSQL() string {
	stateField := func(eventType, field string, keptByRedaction bool) string {
		cond := ""
		if !keptByRedaction {
			cond = " AND e.redacted_by IS NULL"
		}
		return `(SELECT ` + db.jsonText("e.json", "content", field) + ` FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = r.room_id AND c.type = '` + eventType + `' AND c.state_key = ''` + cond + `)`
	}
	return `SELECT r.room_id AS room_id,
		` + stateField("m.room.name", "name", false) + ` AS name,
		` + stateField("m.room.canonical_alias", "alias", false) + ` AS canonical_alias,
		(SELECT COUNT(*) FROM current_state c WHERE c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join') AS joined_members,
		(SELECT COALESCE(SUM(s.joined), 0) FROM room_servers s WHERE s.room_id = r.room_id AND s.server = $1) AS joined_local_members,
		r.room_version AS version,
		r.creator AS creator,
		` + stateField("m.room.encryption", "algorithm", false) + ` AS encryption,
		COALESCE((SELECT ` + db.notFalse("e.json", "content", "m.federate") + ` FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = r.room_id AND c.type = 'm.room.create' AND c.state_key = ''), TRUE) AS federatable,
		r.published AS public,
		` + stateField("m.room.join_rules", "join_rule", true) + ` AS join_rules,
		` + stateField("m.room.guest_access", "guest_access", false) + ` AS guest_access,
		` + stateField("m.room.history_visibility", "history_visibility", true) + ` AS history_visibility,
		(SELECT COUNT(*) FROM current_state c WHERE c.room_id = r.room_id) AS state_events,
		` + stateField("m.room.create", "type", false) + ` AS room_type,
		` + stateField("m.room.topic", "topic", false) + ` AS topic,
		` + stateField("m.room.avatar", "url", false) + ` AS avatar
		FROM rooms r`
}

const roomStatsColumns = `room_id, name, canonical_alias, joined_members, joined_local_members, version, creator, encryption,
	federatable, public, join_rules, guest_access, history_visibility, state_events, room_type, topic, avatar`

func scanRoomStats(s scanner) (adminapi.RoomDetails, error) {
	var d adminapi.RoomDetails
	var name, alias, enc, joinRules, guest, hist, roomType, topic, avatar sql.NullString
	err := s.Scan(&d.RoomID, &name, &alias, &d.JoinedMembers, &d.JoinedLocalMembers, &d.Version, &d.Creator, &enc,
		&d.Federatable, &d.Public, &joinRules, &guest, &hist, &d.StateEvents, &roomType, &topic, &avatar)
	if err != nil {
		return d, err
	}
	str := func(n sql.NullString) *string {
		if !n.Valid {
			return nil
		}
		return &n.String
	}
	d.Name, d.CanonicalAlias, d.Encryption = str(name), str(alias), str(enc)
	d.JoinRules, d.GuestAccess, d.HistoryVisibility, d.RoomType = str(joinRules), str(guest), str(hist), str(roomType)
	d.Topic, d.Avatar = str(topic), str(avatar)
	return d, nil
}

// roomOrderColumns maps the admin API's order_by to a column of
// roomStatsSQL and whether it sorts ascending when dir is f (Synapse's).
var roomOrderColumns = map[string]struct {
	col string
	asc bool
}{
	"name": {"name", true}, "alphabetical": {"name", true},
	"canonical_alias": {"canonical_alias", true},
	"joined_members":  {"joined_members", false}, "size": {"joined_members", false},
	"joined_local_members": {"joined_local_members", false},
	"version":              {"version", false},
	"creator":              {"creator", true},
	"encryption":           {"encryption", true},
	"federatable":          {"federatable", true},
	"public":               {"public", true},
	"join_rules":           {"join_rules", true},
	"guest_access":         {"guest_access", true},
	"history_visibility":   {"history_visibility", true},
	"state_events":         {"state_events", false},
}

// contains is the SQL condition that text expression col contains the
// parameter $n (case-sensitively, with no wildcards).
func (db *DB) contains(col string, n int) string {
	if db.engine == Postgres {
		return fmt.Sprintf("strpos(%s, $%d) > 0", col, n)
	}
	return fmt.Sprintf("instr(%s, $%d) > 0", col, n)
}

func (db *DB) ListRooms(ctx context.Context, q adminapi.RoomListQuery) ([]adminapi.RoomDetails, int, error) {
	defer db.observe("admin_list_rooms", time.Now())
	order, ok := roomOrderColumns[q.OrderBy]
	if !ok {
		return nil, 0, fmt.Errorf("storage: list rooms: unknown order %q", q.OrderBy)
	}
	args := []any{q.ServerName}
	var where []string
	if q.SearchTerm != "" {
		// Name and alias case-insensitively, the room ID exactly, as Synapse.
		args = append(args, strings.ToLower(q.SearchTerm), q.SearchTerm)
		n := len(args)
		where = append(where, "("+db.contains("LOWER(name)", n-1)+" OR "+db.contains("LOWER(canonical_alias)", n-1)+" OR "+db.contains("room_id", n)+")")
	}
	if q.PublicRooms != nil {
		args = append(args, *q.PublicRooms)
		where = append(where, fmt.Sprintf("public = $%d", len(args)))
	}
	if q.EmptyRooms != nil {
		if *q.EmptyRooms {
			where = append(where, "joined_members = 0")
		} else {
			where = append(where, "joined_members > 0")
		}
	}
	filter := ""
	if len(where) > 0 {
		filter = " WHERE " + strings.Join(where, " AND ")
	}
	base := `SELECT ` + roomStatsColumns + ` FROM (` + db.roomStatsSQL() + `) s` + filter
	var total int
	countSQL, countArgs := `SELECT COUNT(*) FROM (`+base+`) t`, args
	if filter == "" {
		countSQL, countArgs = `SELECT COUNT(*) FROM rooms`, nil // no need for every room's stats
	}
	if err := db.r.QueryRowContext(ctx, countSQL, countArgs...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: list rooms: %w", err)
	}
	asc := order.asc != q.Backward
	dir := "ASC"
	if !asc {
		dir = "DESC"
	}
	args = append(args, q.Limit, q.From)
	rows, err := db.r.QueryContext(ctx, base+fmt.Sprintf(` ORDER BY %s %s NULLS LAST, room_id %s LIMIT $%d OFFSET $%d`,
		order.col, dir, dir, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list rooms: %w", err)
	}
	defer rows.Close()
	out := []adminapi.RoomDetails{}
	for rows.Next() {
		d, err := scanRoomStats(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list rooms: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: list rooms: %w", err)
	}
	return out, total, nil
}

func (db *DB) RoomDetails(ctx context.Context, serverName, roomID string) (adminapi.RoomDetails, error) {
	defer db.observe("admin_room_details", time.Now())
	d, err := scanRoomStats(db.r.QueryRowContext(ctx, `SELECT `+roomStatsColumns+` FROM (`+db.roomStatsSQL()+` WHERE r.room_id = $2) s`,
		serverName, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return d, rooms.ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("storage: room details: %w", err)
	}
	// The devices of the local joined members; forgotten when no local
	// user has a membership they have not forgotten (Synapse's).
	local := `c.room_id = $1 AND c.type = 'm.room.member' AND substr(c.state_key, length(c.state_key) - $3 + 1) = $2`
	var remembered int64
	err = db.r.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM current_state c JOIN devices d ON d.user_id = c.state_key WHERE `+local+` AND c.membership = 'join'),
		(SELECT COUNT(*) FROM current_state c WHERE `+local+`
			AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = c.state_key AND f.room_id = c.room_id))`,
		roomID, ":"+serverName, len(serverName)+1).Scan(&d.JoinedLocalDevices, &remembered)
	if err != nil {
		return d, fmt.Errorf("storage: room details: %w", err)
	}
	d.Forgotten = remembered == 0
	return d, nil
}

func (db *DB) ForwardExtremities(ctx context.Context, roomID string) ([]adminapi.Extremity, error) {
	defer db.observe("admin_forward_extremities", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT f.event_id, e.state_group, e.depth, e.origin_server_ts FROM forward_extremities f
		JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY e.depth, f.event_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: forward extremities: %w", err)
	}
	defer rows.Close()
	out := []adminapi.Extremity{}
	for rows.Next() {
		var x adminapi.Extremity
		if err := rows.Scan(&x.EventID, &x.StateGroup, &x.Depth, &x.ReceivedTS); err != nil {
			return nil, fmt.Errorf("storage: forward extremities: %w", err)
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

func (db *DB) BlockRoom(ctx context.Context, roomID, admin string) error {
	_, err := db.exec(ctx, "block_room", `INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO NOTHING`, roomID, admin, time.Now().UnixMilli())
	return err
}

func (db *DB) UnblockRoom(ctx context.Context, roomID string) error {
	_, err := db.exec(ctx, "unblock_room", `DELETE FROM blocked_rooms WHERE room_id = $1`, roomID)
	return err
}

func (db *DB) RoomBlockedBy(ctx context.Context, roomID string) (string, bool, error) {
	defer db.observe("room_blocked_by", time.Now())
	var by string
	err := db.r.QueryRowContext(ctx, `SELECT user_id FROM blocked_rooms WHERE room_id = $1`, roomID).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("storage: room blocked: %w", err)
	}
	return by, true, nil
}

// purgeByEvent are the tables whose rows name an event of the room but
// not the room itself.
var purgeByEvent = []struct{ table, col string }{
	{"event_txns", "event_id"},
	{"federation_outbox", "event_id"},
}

// purgeByRoom are the tables whose rows name the room, in an order the
// foreign keys allow (events and aliases before rooms, last).
var purgeByRoom = []string{
	"current_state", "forward_extremities", "backward_extremities", "event_relations", "event_search",
	"receipts", "account_data", "push_event_notifications", "push_room_slots", "key_backup_keys", "invite_stripped_state",
	"rejected_events", "appservice_room_list", "user_directory_public_rooms", "room_servers",
	"forgotten_rooms", "federation_destination_rooms", "sliding_sync_rooms", "room_aliases", "events", "rooms",
}

func (db *DB) PurgeRoom(ctx context.Context, roomID string) error {
	defer db.unread.invalidate()
	defer db.shared.changing()()
	err := db.tx(ctx, "purge_room", func(tx *txn) error {
		for _, t := range purgeByEvent {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t.table+` WHERE `+t.col+` IN
				(SELECT event_id FROM events WHERE room_id = $1)`, roomID); err != nil {
				return fmt.Errorf("storage: purge room: %s: %w", t.table, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM state_group_entries WHERE group_id IN
			(SELECT id FROM state_groups WHERE room_id = $1)`, roomID); err != nil {
			return fmt.Errorf("storage: purge room: state_group_entries: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM state_groups WHERE room_id = $1`, roomID); err != nil {
			return fmt.Errorf("storage: purge room: state_groups: %w", err)
		}
		for _, t := range purgeByRoom {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE room_id = $1`, roomID); err != nil {
				return fmt.Errorf("storage: purge room: %s: %w", t, err)
			}
		}
		return nil
	})
	if err == nil && db.search != nil {
		// A failure here leaves entries whose events are gone, which
		// searches skip; a retried purge removes them.
		err = db.search.purgeRoom(ctx, db, roomID)
	}
	return err
}

func (db *DB) CreateDeleteTask(ctx context.Context, t adminapi.DeleteTask) error {
	result, err := json.Marshal(t.Result)
	if err != nil {
		return fmt.Errorf("storage: create delete task: %w", err)
	}
	_, err = db.exec(ctx, "create_delete_task", `INSERT INTO room_delete_tasks (delete_id, room_id, status, error, result, created_ts, updated_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $6)`, t.DeleteID, t.RoomID, t.Status, t.Error, string(result), t.CreatedTS)
	return err
}

func (db *DB) UpdateDeleteTask(ctx context.Context, t adminapi.DeleteTask) error {
	result, err := json.Marshal(t.Result)
	if err != nil {
		return fmt.Errorf("storage: update delete task: %w", err)
	}
	_, err = db.exec(ctx, "update_delete_task", `UPDATE room_delete_tasks SET status = $1, error = $2, result = $3, updated_ts = $4
		WHERE delete_id = $5`, t.Status, t.Error, string(result), time.Now().UnixMilli(), t.DeleteID)
	return err
}

const deleteTaskColumns = `delete_id, room_id, status, error, result, created_ts, updated_ts`

func scanDeleteTask(s scanner) (adminapi.DeleteTask, error) {
	var t adminapi.DeleteTask
	var result string
	if err := s.Scan(&t.DeleteID, &t.RoomID, &t.Status, &t.Error, &result, &t.CreatedTS, &t.UpdatedTS); err != nil {
		return t, err
	}
	if err := json.Unmarshal([]byte(result), &t.Result); err != nil {
		return t, fmt.Errorf("storage: delete task %s: %w", t.DeleteID, err)
	}
	return t, nil
}

func (db *DB) DeleteTask(ctx context.Context, deleteID string) (adminapi.DeleteTask, error) {
	defer db.observe("delete_task", time.Now())
	t, err := scanDeleteTask(db.r.QueryRowContext(ctx, `SELECT `+deleteTaskColumns+` FROM room_delete_tasks WHERE delete_id = $1`, deleteID))
	if errors.Is(err, sql.ErrNoRows) {
		return t, rooms.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("storage: delete task: %w", err)
	}
	return t, nil
}

func (db *DB) DeleteTasksOfRoom(ctx context.Context, roomID string) ([]adminapi.DeleteTask, error) {
	defer db.observe("delete_tasks_of_room", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT `+deleteTaskColumns+` FROM room_delete_tasks WHERE room_id = $1
		ORDER BY created_ts, delete_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: delete tasks: %w", err)
	}
	defer rows.Close()
	var out []adminapi.DeleteTask
	for rows.Next() {
		t, err := scanDeleteTask(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: delete tasks: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (db *DB) PurgeHistory(ctx context.Context, roomID string, beforeDepth int64, keepSuffix string) (int64, error) {
	// The events to delete: the room's timeline events (never state, which
	// the current state and every state group reference) below the depth,
	// but for the forward extremities, which the room's next events name
	// as their prev_events, and, when keepSuffix is set, the events of
	// the senders it ends (this server's users).
	sel := `SELECT event_id FROM events WHERE room_id = $1 AND depth < $2 AND state_key IS NULL
		AND event_id NOT IN (SELECT event_id FROM forward_extremities WHERE room_id = $1)`
	args := []any{roomID, beforeDepth}
	if keepSuffix != "" {
		sel += ` AND substr(sender, length(sender) - $3 + 1) <> $4`
		args = append(args, len(keepSuffix), keepSuffix)
	}
	var deleted int64
	end := db.shared.changing()
	defer end()
	var positions []int64
	err := db.tx(ctx, "purge_history", func(tx *txn) error {
		if db.search != nil {
			// The index's entries are removed by their stream positions,
			// once the events are.
			var err error
			positions, err = queryValues[int64](ctx, tx, `SELECT stream_pos FROM events WHERE event_id IN (`+sel+`)`, args...)
			if err != nil {
				return fmt.Errorf("storage: purge history: %w", err)
			}
		}
		for _, table := range []string{"event_relations", "event_search", "push_event_notifications", "event_txns", "federation_outbox"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE event_id IN (`+sel+`)`, args...); err != nil {
				return fmt.Errorf("storage: purge history: %s: %w", table, err)
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE event_id IN (`+sel+`)`, args...)
		if err != nil {
			return fmt.Errorf("storage: purge history: events: %w", err)
		}
		deleted, _ = res.RowsAffected()
		return nil
	})
	if err == nil && db.search != nil {
		err = db.search.purgeEvents(ctx, db, positions)
	}
	db.unread.invalidate()
	return deleted, err
}

func (db *DB) CreatePurgeTask(ctx context.Context, t adminapi.PurgeTask) error {
	_, err := db.exec(ctx, "create_purge_task", `INSERT INTO purge_history_tasks (purge_id, room_id, status, error, created_ts, updated_ts)
		VALUES ($1, $2, $3, $4, $5, $5)`, t.PurgeID, t.RoomID, t.Status, t.Error, t.CreatedTS)
	return err
}

func (db *DB) UpdatePurgeTask(ctx context.Context, t adminapi.PurgeTask) error {
	_, err := db.exec(ctx, "update_purge_task", `UPDATE purge_history_tasks SET status = $1, error = $2, updated_ts = $3 WHERE purge_id = $4`,
		t.Status, t.Error, time.Now().UnixMilli(), t.PurgeID)
	return err
}

func (db *DB) PurgeTask(ctx context.Context, purgeID string) (adminapi.PurgeTask, error) {
	defer db.observe("purge_task", time.Now())
	var t adminapi.PurgeTask
	err := db.r.QueryRowContext(ctx, `SELECT purge_id, room_id, status, error, created_ts, updated_ts FROM purge_history_tasks WHERE purge_id = $1`, purgeID).
		Scan(&t.PurgeID, &t.RoomID, &t.Status, &t.Error, &t.CreatedTS, &t.UpdatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return t, rooms.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("storage: purge task: %w", err)
	}
	return t, nil
}
