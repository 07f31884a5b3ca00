package storage

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
)

// room_servers counts each room's joined members by server, kept in the
// transaction that changes current_state, so that "which servers are in
// this room" (every event the federation sender fans out, every event
// received) and "is this server in it" cost a few rows, not a scan of the
// room's members.

// goMigrations are the migrations a portable SQL file cannot express:
// room_servers is filled from the server part of member state keys, which
// SQLite and PostgreSQL extract with different functions (30), and
// notifications are regrouped by event (37, push_slots_migrate.go).
func goMigrations() []*goose.Migration {
	return []*goose.Migration{
		goose.NewGoMigration(30, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error { return upRoomServers(ctx, &txn{Tx: tx}) }},
			&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error { return downRoomServers(ctx, &txn{Tx: tx}) }}),
		goose.NewGoMigration(37, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error { return upEventNotifications(ctx, &txn{Tx: tx}) }},
			&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error { return downEventNotifications(ctx, &txn{Tx: tx}) }}),
	}
}

func upRoomServers(ctx context.Context, tx *txn) error {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE room_servers (
		room_id TEXT   NOT NULL,
		server  TEXT   NOT NULL,
		joined  BIGINT NOT NULL,
		PRIMARY KEY (room_id, server))`); err != nil {
		return fmt.Errorf("storage: room_servers: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT room_id FROM current_state WHERE type = 'm.room.member' AND membership = 'join'`)
	if err != nil {
		return fmt.Errorf("storage: room_servers: %w", err)
	}
	var roomIDs []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("storage: room_servers: %w", err)
		}
		roomIDs = append(roomIDs, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: room_servers: %w", err)
	}
	for _, id := range roomIDs {
		if err := rebuildRoomServers(ctx, tx, id); err != nil {
			return err
		}
	}
	return nil
}

func downRoomServers(ctx context.Context, tx *txn) error {
	_, err := tx.ExecContext(ctx, `DROP TABLE room_servers`)
	return err
}

// serverOfUser is the server part of a user ID ("" when it has none).
func serverOfUser(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// rebuildRoomServers recounts a room's servers from its current state,
// after the state was replaced wholesale.
func rebuildRoomServers(ctx context.Context, tx *txn, roomID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_servers WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("storage: room servers: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
	if err != nil {
		return fmt.Errorf("storage: room servers: %w", err)
	}
	counts := map[string]int64{}
	for rows.Next() {
		var user string
		if err := rows.Scan(&user); err != nil {
			rows.Close()
			return fmt.Errorf("storage: room servers: %w", err)
		}
		if s := serverOfUser(user); s != "" {
			counts[s]++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: room servers: %w", err)
	}
	for s, n := range counts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO room_servers (room_id, server, joined) VALUES ($1, $2, $3)`, roomID, s, n); err != nil {
			return fmt.Errorf("storage: room servers: %w", err)
		}
	}
	return nil
}

// adjustRoomServers counts a member's change from membership before to
// after in the room's servers.
func adjustRoomServers(ctx context.Context, tx *txn, roomID, userID, before, after string) error {
	server := serverOfUser(userID)
	if server == "" || (before == "join") == (after == "join") {
		return nil
	}
	if after == "join" {
		_, err := tx.ExecContext(ctx, `INSERT INTO room_servers (room_id, server, joined) VALUES ($1, $2, 1)
			ON CONFLICT (room_id, server) DO UPDATE SET joined = room_servers.joined + 1`, roomID, server)
		if err != nil {
			return fmt.Errorf("storage: room servers: %w", err)
		}
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE room_servers SET joined = joined - 1 WHERE room_id = $1 AND server = $2`, roomID, server); err != nil {
		return fmt.Errorf("storage: room servers: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_servers WHERE room_id = $1 AND server = $2 AND joined <= 0`, roomID, server); err != nil {
		return fmt.Errorf("storage: room servers: %w", err)
	}
	return nil
}

// JoinedServers lists the servers with a joined member in the room.
func (db *DB) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	defer db.observe("joined_servers", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT server FROM room_servers WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: joined servers: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("storage: joined servers: %w", err)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, rows.Err()
}

// ServerInRoom reports whether the server has a joined member in the room.
func (db *DB) ServerInRoom(ctx context.Context, roomID, server string) (bool, error) {
	defer db.observe("server_in_room", time.Now())
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM room_servers WHERE room_id = $1 AND server = $2`, roomID, server).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: server in room: %w", err)
	}
	return n > 0, nil
}
