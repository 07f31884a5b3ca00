package storage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"homeserver/rooms"
	"homeserver/syncapi"
)

var _ syncapi.SlidingStore = (*DB)(nil)

// UserRoomInfos reads the bump position and, when asked, whether it is
// encrypted, of each room the user has a membership of: one walk of the
// user's memberships (in room order, which leads SQLite to the index of
// them that holds room IDs).
func (db *DB) UserRoomInfos(ctx context.Context, userID string, encryption bool) ([]rooms.RoomInfoRow, error) {
	defer db.observe("user_room_infos", time.Now())
	encrypted := "FALSE"
	if encryption {
		encrypted = `EXISTS (SELECT 1 FROM current_state e WHERE e.room_id = c.room_id AND e.type = 'm.room.encryption' AND e.state_key = '')`
	}
	rows, err := db.r.QueryContext(ctx, `SELECT c.room_id, r.bump_pos, `+encrypted+` FROM current_state c
		JOIN rooms r ON r.room_id = c.room_id
		WHERE c.state_key = $1 AND c.type = 'm.room.member' ORDER BY c.room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: room infos: %w", err)
	}
	defer rows.Close()
	var out []rooms.RoomInfoRow
	for rows.Next() {
		var r rooms.RoomInfoRow
		if err := rows.Scan(&r.RoomID, &r.BumpPos, &r.Encrypted); err != nil {
			return nil, fmt.Errorf("storage: room infos: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: room infos: %w", err)
	}
	return out, nil
}

// CreateEvents reads the create event of each room, a chunk per query.
func (db *DB) CreateEvents(ctx context.Context, roomIDs []string) (map[string][]byte, error) {
	defer db.observe("create_events", time.Now())
	out := map[string][]byte{}
	for start := 0; start < len(roomIDs); start += 500 {
		in, args := inList(roomIDs[start:min(start+500, len(roomIDs))], nil)
		rows, err := db.r.QueryContext(ctx, `SELECT c.room_id, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id IN (`+in+`) AND c.type = 'm.room.create' AND c.state_key = ''`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: create events: %w", err)
		}
		for rows.Next() {
			var id, js string
			if err := rows.Scan(&id, &js); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: create events: %w", err)
			}
			out[id] = []byte(js)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("storage: create events: %w", err)
		}
	}
	return out, nil
}

// maxSlidingConnections bounds the connections kept per device: a client
// that opens many loses its oldest.
const maxSlidingConnections = 10

// NewSlidingConnection starts a connection, replacing one of the same ID,
// with position 0 standing for token.
func (db *DB) NewSlidingConnection(ctx context.Context, userID, deviceID, connID, token string, nowMS int64) (int64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("storage: sliding connection key: %w", err)
	}
	key := int64(binary.BigEndian.Uint64(b[:]) >> 1)
	err := db.tx(ctx, "new_sliding_connection", func(tx *txn) error {
		// The oldest connections of the device beyond the limit go, with
		// the one this replaces.
		rows, err := tx.QueryContext(ctx, `SELECT conn_key, conn_id FROM sliding_sync_connections
			WHERE user_id = $1 AND device_id = $2 ORDER BY last_used_ts DESC`, userID, deviceID)
		if err != nil {
			return fmt.Errorf("storage: sliding connections: %w", err)
		}
		var drop []int64
		kept := 0
		for rows.Next() {
			var k int64
			var id string
			if err := rows.Scan(&k, &id); err != nil {
				rows.Close()
				return fmt.Errorf("storage: sliding connections: %w", err)
			}
			if id == connID || kept >= maxSlidingConnections-1 {
				drop = append(drop, k)
				continue
			}
			kept++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storage: sliding connections: %w", err)
		}
		for _, k := range drop {
			if err := dropSlidingConnection(ctx, tx, k); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sliding_sync_connections (conn_key, user_id, device_id, conn_id, last_pos, last_used_ts)
			VALUES ($1, $2, $3, $4, 0, $5)`, key, userID, deviceID, connID, nowMS); err != nil {
			return fmt.Errorf("storage: new sliding connection: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sliding_sync_positions (conn_key, pos, token) VALUES ($1, 0, $2)`, key, token); err != nil {
			return fmt.Errorf("storage: new sliding connection: %w", err)
		}
		return nil
	})
	return key, err
}

func dropSlidingConnection(ctx context.Context, tx *txn, key int64) error {
	for _, q := range []string{
		`DELETE FROM sliding_sync_rooms WHERE conn_key = $1`,
		`DELETE FROM sliding_sync_positions WHERE conn_key = $1`,
		`DELETE FROM sliding_sync_connections WHERE conn_key = $1`,
	} {
		if _, err := tx.ExecContext(ctx, q, key); err != nil {
			return fmt.Errorf("storage: drop sliding connection: %w", err)
		}
	}
	return nil
}

// ResumeSlidingConnection finds the connection and the token of pos, and
// forgets what the connection kept for later positions (the client never
// processed those answers) and for earlier ones that pos supersedes.
// syncapi.ErrNotFound when the connection or the position is unknown.
func (db *DB) ResumeSlidingConnection(ctx context.Context, userID, deviceID, connID string, pos, nowMS int64) (int64, string, error) {
	var key int64
	var token string
	err := db.tx(ctx, "resume_sliding_connection", func(tx *txn) error {
		err := tx.QueryRowContext(ctx, `SELECT c.conn_key, p.token FROM sliding_sync_connections c
			JOIN sliding_sync_positions p ON p.conn_key = c.conn_key AND p.pos = $4
			WHERE c.user_id = $1 AND c.device_id = $2 AND c.conn_id = $3`, userID, deviceID, connID, pos).Scan(&key, &token)
		if errors.Is(err, sql.ErrNoRows) {
			return syncapi.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("storage: resume sliding connection: %w", err)
		}
		for _, q := range []string{
			`DELETE FROM sliding_sync_rooms WHERE conn_key = $1 AND pos > $2`,
			`DELETE FROM sliding_sync_rooms WHERE conn_key = $1 AND pos < $2 AND EXISTS (SELECT 1 FROM sliding_sync_rooms n
				WHERE n.conn_key = sliding_sync_rooms.conn_key AND n.room_id = sliding_sync_rooms.room_id
				AND n.pos > sliding_sync_rooms.pos AND n.pos <= $2)`,
			`DELETE FROM sliding_sync_positions WHERE conn_key = $1 AND pos <> $2`,
		} {
			if _, err := tx.ExecContext(ctx, q, key, pos); err != nil {
				return fmt.Errorf("storage: resume sliding connection: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sliding_sync_connections SET last_used_ts = $2 WHERE conn_key = $1`, key, nowMS); err != nil {
			return fmt.Errorf("storage: resume sliding connection: %w", err)
		}
		return nil
	})
	return key, token, err
}

// SlidingRooms returns what the connection's client has of each room as
// of pos (after ResumeSlidingConnection, one row per room).
func (db *DB) SlidingRooms(ctx context.Context, key, pos int64) (map[string]syncapi.SlidingRoomState, error) {
	defer db.observe("sliding_rooms", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, pos, sent_to, config FROM sliding_sync_rooms WHERE conn_key = $1 AND pos <= $2`, key, pos)
	if err != nil {
		return nil, fmt.Errorf("storage: sliding rooms: %w", err)
	}
	defer rows.Close()
	out := map[string]syncapi.SlidingRoomState{}
	at := map[string]int64{}
	for rows.Next() {
		var roomID, config string
		var p int64
		var st syncapi.SlidingRoomState
		if err := rows.Scan(&roomID, &p, &st.SentTo, &config); err != nil {
			return nil, fmt.Errorf("storage: sliding rooms: %w", err)
		}
		// A retried answer may have left two rows: the newest holds.
		if old, ok := at[roomID]; ok && old > p {
			continue
		}
		at[roomID] = p
		st.Config = []byte(config)
		out[roomID] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: sliding rooms: %w", err)
	}
	return out, nil
}

// SaveSlidingPos hands out the connection's next position, standing for
// token, with what the answer changed of its rooms.
func (db *DB) SaveSlidingPos(ctx context.Context, key int64, token string, changed map[string]syncapi.SlidingRoomState) (int64, error) {
	var pos int64
	err := db.tx(ctx, "save_sliding_pos", func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `UPDATE sliding_sync_connections SET last_pos = last_pos + 1 WHERE conn_key = $1 RETURNING last_pos`, key).Scan(&pos); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return syncapi.ErrNotFound
			}
			return fmt.Errorf("storage: save sliding pos: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sliding_sync_positions (conn_key, pos, token) VALUES ($1, $2, $3)`, key, pos, token); err != nil {
			return fmt.Errorf("storage: save sliding pos: %w", err)
		}
		for roomID, st := range changed {
			if _, err := tx.ExecContext(ctx, `INSERT INTO sliding_sync_rooms (conn_key, room_id, pos, sent_to, config) VALUES ($1, $2, $3, $4, $5)`,
				key, roomID, pos, st.SentTo, string(st.Config)); err != nil {
				return fmt.Errorf("storage: save sliding pos: %w", err)
			}
		}
		return nil
	})
	return pos, err
}
