package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"homeserver/accounts"
)

// Creating a nonce or a UIA session sweeps the expired ones and keeps only
// the newest few: of one user's sessions, or of all nonces.
func TestNoncesAndUIASessionsTrimmed(t *testing.T) {
	ctx := context.Background()
	db := openServerKeysDB(t)
	for i, ts := range []int64{100, 200, 300, 400, 500} {
		if err := db.CreateNonce(ctx, fmt.Sprint("n", i), ts, 150, 3); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []bool{false, false, true, true, true} {
		if ok, err := db.ConsumeNonce(ctx, fmt.Sprint("n", i), 0); err != nil || ok != want {
			t.Errorf("nonce %d: %v, %v; want %v", i, ok, err, want)
		}
	}

	create := func(id, user string, ts, notBefore int64) {
		t.Helper()
		s := accounts.UIASession{ID: id, Method: "POST", Path: "/p", UserID: user, CreatedTS: ts}
		if err := db.CreateUIASession(ctx, s, notBefore, 2); err != nil {
			t.Fatal(err)
		}
	}
	create("expired", "@bob:x", 50, 0)
	create("a1", "@alice:x", 100, 0)
	create("r1", "", 110, 0)
	create("a2", "@alice:x", 200, 60)
	create("a3", "@alice:x", 300, 60)
	create("r2", "", 310, 60)
	create("r3", "", 320, 60)
	for id, want := range map[string]bool{"expired": false, "a1": false, "a2": true, "a3": true, "r1": false, "r2": true, "r3": true} {
		_, err := db.GetUIASession(ctx, id)
		if err != nil && !errors.Is(err, accounts.ErrNotFound) {
			t.Fatal(err)
		}
		if (err == nil) != want {
			t.Errorf("session %s: present %v, want %v", id, err == nil, want)
		}
	}
}
