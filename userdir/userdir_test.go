package userdir_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"homeserver/accounts"
	"homeserver/storage"
	"homeserver/userdir"
)

// prefer_local_users puts local users before remote ones; without it,
// results are ordered by display name.
func TestPreferLocalUsers(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "homeserver.db")
	db, err := storage.Open(ctx, storage.Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const local, remote, searcher = "@alex:here", "@alex:there", "@searcher:here"
	for _, id := range []string{local, searcher} {
		if err := db.CreateAccount(ctx, accounts.Account{UserID: id, Localpart: id[1:5], CreatedTS: 1}, "", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	name := "Alex Zed"
	if err := db.PutProfile(ctx, local, accounts.Profile{DisplayName: &name}); err != nil {
		t.Fatal(err)
	}
	svc := userdir.New(db, userdir.Config{ServerName: "here", Enabled: true})
	if err := svc.ProfileChanged(ctx, local); err != nil {
		t.Fatal(err)
	}
	// A remote user as the reader stores one from a member event.
	if err := db.UpdateUserDirectory(ctx, "test", userdir.Update{Put: []userdir.Entry{{
		UserID: remote, DisplayName: "Alex Abc", SortKey: "alex abc", Tokens: []string{"alex", "abc", "there"},
	}}, Public: map[string]bool{"!pub:here": true}}, -1); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for i, id := range []string{local, remote} {
		if _, err := raw.Exec(`INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
			VALUES ('!pub:here', 'm.room.member', $1, $2, 'join', $3)`, id, "$e"+id, i); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		prefer bool
		want   []string
	}{{false, []string{remote, local}}, {true, []string{local, remote}}} {
		svc := userdir.New(db, userdir.Config{ServerName: "here", Enabled: true, PreferLocalUsers: c.prefer})
		got, _, err := svc.Search(ctx, searcher, "alex", 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range got {
			ids = append(ids, r.UserID)
		}
		if !slices.Equal(ids, c.want) {
			t.Errorf("prefer_local_users=%v: %v, want %v", c.prefer, ids, c.want)
		}
	}
}
