package syncapi

import (
	"errors"
	"net/http"
	"testing"

	"homeserver/mxhttp"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, tok := range []Token{
		{},
		{Events: 1},
		{Events: 12, Receipts: 3, AccountData: 45, Presence: 6, Typing: 1700000000000000},
		{Events: 1<<63 - 1, Receipts: 1<<63 - 1, AccountData: 1<<63 - 1, Presence: 1<<63 - 1, Typing: 1<<63 - 1},
		{Events: 5, ToDevice: 8, DeviceLists: 9},
		{Events: 5, ToDevice: 8, DeviceLists: 9, Notifications: 10},
	} {
		s := tok.String()
		got, err := ParseToken(s)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", s, err)
		}
		if got != tok {
			t.Fatalf("ParseToken(%q) = %+v, want %+v", s, got, tok)
		}
	}
	if s := (Token{Events: 7, Receipts: 1, AccountData: 2, Presence: 3, Typing: 4, ToDevice: 5, DeviceLists: 6, Notifications: 8}).String(); s != "s7_1_2_3_4_5_6_8" {
		t.Fatalf("String() = %q", s)
	}
	// Tokens handed out before the end-to-end encryption streams existed
	// stay valid.
	if got, err := ParseToken("s7_1_2_3_4"); err != nil || got != (Token{Events: 7, Receipts: 1, AccountData: 2, Presence: 3, Typing: 4, Notifications: -1}) {
		t.Fatalf("ParseToken(old) = %+v, %v", got, err)
	}
}

func TestParseTokenRejects(t *testing.T) {
	for _, s := range []string{
		"", "s", "x1_2_3_4_5", "1_2_3_4_5", "S1_2_3_4_5", "p12",
		"s1_2_3_4", "s1_2_3_4_5_6", "s1_2_3_4_5_6_7_8_9", "s1_2_3_4_5_6_", "s1__3_4_5", "s_1_2_3_4",
		"s-1_2_3_4_5", "s1_2_3_4_-5", "s+1_2_3_4_5", "s1_2_3_4_5 ", " s1_2_3_4_5",
		"s1.5_2_3_4_5", "s0x1_2_3_4_5", "s99999999999999999999_0_0_0_0",
		"s1_2_3_4_5\x00", "s１_2_3_4_5",
	} {
		_, err := ParseToken(s)
		var me *mxhttp.Error
		if !errors.As(err, &me) {
			t.Fatalf("ParseToken(%q): err %v, want a Matrix error", s, err)
		}
		if me.Status != http.StatusBadRequest || me.Code != "M_INVALID_PARAM" {
			t.Fatalf("ParseToken(%q): %d %s, want 400 M_INVALID_PARAM", s, me.Status, me.Code)
		}
	}
}

func TestTokenAfter(t *testing.T) {
	now := Token{Events: 10, Receipts: 10, AccountData: 10, Presence: 10, Typing: 10, ToDevice: 10, DeviceLists: 10}
	for _, c := range []struct {
		t     Token
		after bool
	}{
		{Token{}, false},
		{now, false},
		{Token{Events: 11}, true},
		{Token{Receipts: 11}, true},
		{Token{AccountData: 11}, true},
		{Token{Presence: 11}, true},
		{Token{ToDevice: 11}, true},
		{Token{DeviceLists: 11}, true},
		// Typing lives in memory: a position from before a restart may be
		// ahead, and that is no reason to refuse the token.
		{Token{Typing: 11}, false},
	} {
		if got := c.t.after(now); got != c.after {
			t.Errorf("%+v.after(%+v) = %v, want %v", c.t, now, got, c.after)
		}
	}
}

// signalled reports whether w has been woken (and consumes the signal).
func signalled(w *Waiter) bool {
	select {
	case <-w.C():
		return true
	default:
		return false
	}
}

func TestNotifierWakesByRoom(t *testing.T) {
	n := NewNotifier()
	a := n.Listen("@a:x", []string{"!r1:x", "!r2:x"})
	b := n.Listen("@b:x", []string{"!r2:x"})
	c := n.Listen("@c:x", []string{"!r3:x"})
	defer a.Close()
	defer b.Close()
	defer c.Close()

	n.WakeRoom("!r1:x")
	if !signalled(a) || signalled(b) || signalled(c) {
		t.Fatal("waking !r1 should wake only a")
	}
	n.WakeRoom("!r2:x")
	if !signalled(a) || !signalled(b) || signalled(c) {
		t.Fatal("waking !r2 should wake a and b")
	}
	n.WakeRoom("!nobody:x")
	if signalled(a) || signalled(b) || signalled(c) {
		t.Fatal("waking a room nobody listens to woke someone")
	}
}

func TestNotifierWakesByUser(t *testing.T) {
	n := NewNotifier()
	a := n.Listen("@a:x", []string{"!r:x"})
	a2 := n.Listen("@a:x", nil) // another device of the same user
	b := n.Listen("@b:x", []string{"!r:x"})
	defer a.Close()
	defer a2.Close()
	defer b.Close()

	n.WakeUser("@a:x")
	if !signalled(a) || !signalled(a2) || signalled(b) {
		t.Fatal("waking @a should wake both of a's waiters and not b")
	}
	n.WakeUser("@c:x")
	if signalled(a) || signalled(a2) || signalled(b) {
		t.Fatal("waking @c woke someone else")
	}
}

func TestNotifierSignalIsNotLost(t *testing.T) {
	n := NewNotifier()
	w := n.Listen("@a:x", []string{"!r:x"})
	defer w.Close()
	// Wakes before the waiter reads coalesce into one, and none blocks.
	for range 5 {
		n.WakeRoom("!r:x")
		n.WakeUser("@a:x")
	}
	if !signalled(w) {
		t.Fatal("wake before the read was lost")
	}
	if signalled(w) {
		t.Fatal("several wakes gave several signals")
	}
}

func TestNotifierCloseUnregisters(t *testing.T) {
	n := NewNotifier()
	a := n.Listen("@a:x", []string{"!r1:x", "!r2:x"})
	b := n.Listen("@b:x", []string{"!r1:x"})
	if got := n.Waiting(); got != 2 {
		t.Fatalf("Waiting() = %d, want 2", got)
	}
	a.Close()
	if got := n.Waiting(); got != 1 {
		t.Fatalf("Waiting() after a closed = %d, want 1", got)
	}
	n.WakeRoom("!r1:x")
	n.WakeRoom("!r2:x")
	n.WakeUser("@a:x")
	if signalled(a) {
		t.Fatal("closed waiter was woken")
	}
	if !signalled(b) {
		t.Fatal("b was not woken")
	}
	b.Close()
	if got := n.Waiting(); got != 0 {
		t.Fatalf("Waiting() after all closed = %d, want 0", got)
	}
	// The indexes hold nothing for keys nobody listens to any more.
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.byRoom) != 0 || len(n.byUser) != 0 {
		t.Fatalf("indexes not emptied: %d rooms, %d users", len(n.byRoom), len(n.byUser))
	}
}

func TestNotifierConcurrent(t *testing.T) {
	n := NewNotifier()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			n.WakeRoom("!r:x")
			n.WakeUser("@a:x")
		}
	}()
	for range 1000 {
		w := n.Listen("@a:x", []string{"!r:x"})
		w.Close()
	}
	<-done
	if n.Waiting() != 0 {
		t.Fatal("waiters left behind")
	}
}
