package storage

import (
	"context"
	"fmt"
	"time"

	"homeserver/rooms"
)

func (db *DB) SetNetworkPublished(ctx context.Context, appServiceID, networkID, roomID string, published bool) error {
	q := `DELETE FROM appservice_room_list WHERE as_id = $1 AND network_id = $2 AND room_id = $3`
	if published {
		q = `INSERT INTO appservice_room_list (as_id, network_id, room_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	}
	_, err := db.exec(ctx, "set_network_published", q, appServiceID, networkID, roomID)
	return err
}

func (db *DB) NetworkDirectoryRooms(ctx context.Context, appServiceID, networkID string) ([]rooms.DirectoryRoom, error) {
	defer db.observe("network_directory_rooms", time.Now())
	// "" matches any service or network.
	where, args := "TRUE", []any{}
	if appServiceID != "" {
		args = append(args, appServiceID)
		where += fmt.Sprintf(" AND as_id = $%d", len(args))
	}
	if networkID != "" {
		args = append(args, networkID)
		where += fmt.Sprintf(" AND network_id = $%d", len(args))
	}
	rows, err := db.r.QueryContext(ctx, `SELECT r.room_id, COUNT(c.state_key) FROM rooms r
		LEFT JOIN current_state c ON c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join'
		WHERE r.room_id IN (SELECT room_id FROM appservice_room_list WHERE `+where+`)
		GROUP BY r.room_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: network directory rooms: %w", err)
	}
	defer rows.Close()
	var out []rooms.DirectoryRoom
	for rows.Next() {
		var d rooms.DirectoryRoom
		if err := rows.Scan(&d.RoomID, &d.JoinedMembers); err != nil {
			return nil, fmt.Errorf("storage: network directory rooms: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
