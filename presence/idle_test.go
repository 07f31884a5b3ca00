package presence_test

import (
	"context"
	"testing"
	"time"

	"homeserver/presence"
)

// A user who stops syncing goes offline once idle for five minutes; one who
// keeps syncing stays online; the change is a new position and a wake-up.
func TestExpireIdle(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	var woken []string
	svc := presence.New(openDB(t), func(u string) { woken = append(woken, u) }, clk.now)
	gone, here := "@gone:test.local", "@here:test.local"
	for _, u := range []string{gone, here} {
		if err := svc.Touch(ctx, u, ""); err != nil {
			t.Fatal(err)
		}
	}
	clk.advance(4 * time.Minute)
	if err := svc.Touch(ctx, here, ""); err != nil { // still syncing
		t.Fatal(err)
	}
	if n, err := svc.ExpireIdle(ctx); err != nil || n != 0 {
		t.Fatalf("after 4 minutes: %d expired, %v", n, err)
	}
	clk.advance(2 * time.Minute)
	before, _ := svc.MaxPos(ctx)
	woken = nil
	if n, err := svc.ExpireIdle(ctx); err != nil || n != 1 {
		t.Fatalf("after 6 minutes: %d expired, %v", n, err)
	}
	if st, _ := svc.Get(ctx, gone); st.Presence != presence.Offline || st.CurrentlyActive || st.Pos <= before {
		t.Fatalf("idle user: %+v", st)
	}
	if st, _ := svc.Get(ctx, here); st.Presence != presence.Online {
		t.Fatalf("syncing user: %+v", st)
	}
	if len(woken) != 1 || woken[0] != gone {
		t.Fatalf("woken %v", woken)
	}
	// Offline users are not touched again.
	if n, err := svc.ExpireIdle(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
}
