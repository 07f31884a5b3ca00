package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"homeserver/accountdata"
	"homeserver/presence"
	"homeserver/storage"
	"homeserver/stream"
)

// Snapshots that saw the same stream positions share a read; a write that
// moves the stream is seen by the next snapshot, never hidden by a kept
// answer, and what a caller does to its answer does not reach the others.
func TestSharedReadsFollowTheStream(t *testing.T) {
	db := openServerKeysDB(t)
	ctx := context.Background()
	const user = "@alice:example.org"
	write := func(content string) {
		t.Helper()
		if _, err := db.UpdateAccountData(ctx, user, "", "m.ignored_user_list", func(json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(content), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// read reads the ignore list under a snapshot, as a woken /sync does
	// (the stream heads first), and scribbles over the answer.
	read := func() string {
		t.Helper()
		var got string
		err := db.ReadSnapshot(ctx, func(ctx context.Context) error {
			if _, err := db.StreamHeads(ctx, []stream.Name{stream.Events, stream.AccountData}); err != nil {
				return err
			}
			raw, err := db.GetAccountData(ctx, user, "", "m.ignored_user_list")
			if errors.Is(err, accountdata.ErrNotFound) {
				got = "none"
				return nil
			}
			if err != nil {
				return err
			}
			got = string(raw)
			for i := range raw {
				raw[i] = 'x'
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read(); got != "none" {
		t.Fatalf("before any write: %s", got)
	}
	if got := read(); got != "none" {
		t.Fatalf("an absence kept: %s", got)
	}
	write(`{"ignored_users":{}}`)
	want := `{"ignored_users":{}}`
	for range 3 {
		if got := read(); got != want {
			t.Fatalf("after a write: %s, want %s", got, want)
		}
	}
	write(`{"ignored_users":{"@bob:example.org":{}}}`)
	if got := read(); got != `{"ignored_users":{"@bob:example.org":{}}}` {
		t.Fatalf("after a second write: %s", got)
	}
}

// Many snapshots at once, with writes between them, each see what their
// own position says.
func TestSharedReadsConcurrent(t *testing.T) {
	db := openServerKeysDB(t)
	ctx := context.Background()
	const user = "@alice:example.org"
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%8 == 0 {
				_, err := db.UpdateAccountData(ctx, user, "", "m.ignored_user_list", func(json.RawMessage) (json.RawMessage, error) {
					return json.RawMessage(`{"n":` + string(rune('0'+i/8)) + `}`), nil
				})
				if err != nil {
					errs <- err
				}
				return
			}
			err := db.ReadSnapshot(ctx, func(ctx context.Context) error {
				h, err := db.StreamHeads(ctx, []stream.Name{stream.AccountData})
				if err != nil {
					return err
				}
				shared, err := db.GetAccountData(ctx, user, "", "m.ignored_user_list")
				if errors.Is(err, accountdata.ErrNotFound) {
					if h[stream.AccountData] != 0 {
						return errors.New("absent after a write")
					}
					return nil
				}
				if err != nil {
					return err
				}
				// The same read again, bypassing nothing: within one
				// snapshot both must agree. (PostgreSQL's ReadSnapshot
				// runs each read on its own, with nothing shared.)
				if db.Engine() == storage.Postgres {
					return nil
				}
				again, err := db.GetAccountData(ctx, user, "", "m.ignored_user_list")
				if err != nil {
					return err
				}
				if string(shared) != string(again) {
					return errors.New("one snapshot read two answers: " + string(shared) + " " + string(again))
				}
				return nil
			})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A presence row read between syncs is the one last written, whichever
// came first.
func TestPresenceReadAfterWrite(t *testing.T) {
	db := openServerKeysDB(t)
	ctx := context.Background()
	const user = "@alice:example.org"
	get := func() (presence.Status, bool) {
		t.Helper()
		st, found, err := db.GetPresence(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return st, found
	}
	if _, found := get(); found {
		t.Fatal("presence before any write")
	}
	if _, found := get(); found {
		t.Fatal("presence before any write, read again")
	}
	for i, p := range []string{presence.Online, presence.Unavailable, presence.Offline} {
		_, _, err := db.UpdatePresence(ctx, user, func(cur presence.Status, _ bool) (presence.Status, bool) {
			cur.Presence, cur.LastActiveTS = p, int64(i+1)
			return cur, true
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			st, found := get()
			if !found || st.Presence != p || st.LastActiveTS != int64(i+1) {
				t.Fatalf("after writing %s: %+v (found %v)", p, st, found)
			}
		}
	}
}
