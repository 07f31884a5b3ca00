package storage

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
)

// roomKeptTables hold rows that name a room and outlive its purge on
// purpose: the block, the admins' evidence and the records of the purge.
var roomKeptTables = []string{"blocked_rooms", "reports", "room_delete_tasks", "purge_history_tasks"}

// Every table with a room_id column is purged with the room or kept on
// purpose: a new table has to be put in one list or the other.
func TestPurgeRoomCoversEveryRoomTable(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "h.db"), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables, err := queryStrings(ctx, db.r, `SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c
		WHERE m.type = 'table' AND c.name = 'room_id' ORDER BY m.name`)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		// state_groups go with their entries, before the loop over
		// purgeByRoom.
		if table != "state_groups" && !slices.Contains(purgeByRoom, table) && !slices.Contains(roomKeptTables, table) {
			t.Errorf("table %s has a room_id column but is neither purged with the room nor kept on purpose", table)
		}
	}
}
