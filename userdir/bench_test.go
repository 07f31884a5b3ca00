package userdir_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"homeserver/accounts"
	"homeserver/storage"
	"homeserver/userdir"
)

// BenchmarkSearch searches a directory of 10,000 local users on SQLite:
// users in 100 private rooms of 100 and, the first 1,000 of them, in one
// public room, the searcher in the first private room.
func BenchmarkSearch(b *testing.B) {
	const users, roomSize = 10000, 100
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "homeserver.db")
	db, err := storage.Open(ctx, storage.Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	first := []string{"Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"}
	last := []string{"Smith", "Jones", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas", "Roberts", "Walker"}
	id := func(i int) string { return fmt.Sprintf("@user%05d:bench", i) }
	for i := range users {
		acc := accounts.Account{UserID: id(i), Localpart: fmt.Sprintf("user%05d", i), CreatedTS: 1}
		name := fmt.Sprintf("%s %s%d", first[i%len(first)], last[(i/len(first))%len(last)], i)
		if err := db.CreateAccount(ctx, acc, name, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	// Memberships go straight into current_state: building 101 rooms of
	// signed events would measure the rooms package, not the directory.
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	tx, err := raw.Begin()
	if err != nil {
		b.Fatal(err)
	}
	join := func(room, user string, pos int) {
		if _, err := tx.Exec(`INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
			VALUES ($1, 'm.room.member', $2, $3, 'join', $4)`, room, user, fmt.Sprintf("$e%d", pos), pos); err != nil {
			b.Fatal(err)
		}
	}
	for i := range users {
		join(fmt.Sprintf("!private%03d:bench", i/roomSize), id(i), i)
		if i < 1000 {
			join("!public:bench", id(i), users+i)
		}
	}
	if _, err := tx.Exec(`INSERT INTO user_directory_public_rooms (room_id) VALUES ('!public:bench')`); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		svc := userdir.New(db, userdir.Config{ServerName: "bench", Enabled: true, SearchAllUsers: all})
		if !all {
			for i := range users {
				if err := svc.ProfileChanged(ctx, id(i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		for _, term := range []string{"alice smith1", "a", "user0999", "zzz"} {
			b.Run(fmt.Sprintf("search_all_users=%v/term=%q", all, term), func(b *testing.B) {
				for b.Loop() {
					if _, _, err := svc.Search(ctx, id(0), term, 10); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
