package syncapi

import (
	"fmt"
	"strconv"
	"strings"

	"homeserver/mxhttp"
)

// Token is a sync position: one position per stream. Its text form is
// opaque to clients; it starts with the room-event position so that
// /messages accepts a prev_batch or next_batch as a pagination token.
type Token struct {
	Events, Receipts, AccountData, Presence, Typing int64
	// ToDevice is where the device is in the to-device stream: the
	// messages up to it were handed out, and are deleted when a sync
	// comes back with the token.
	ToDevice    int64
	DeviceLists int64
	// Notifications is the newest push notification the answer's unread
	// counts include: rooms whose counts changed after it come again,
	// even without new events (the counts come from the push evaluator,
	// a reader that may run just after an event reached /sync). -1 in
	// tokens from before it existed: counted from the present.
	Notifications int64
}

func (t Token) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d_%d_%d_%d_%d", t.Events, t.Receipts, t.AccountData, t.Presence, t.Typing, t.ToDevice, t.DeviceLists, t.Notifications)
}

// ParseToken reads a next_batch token. Tokens of five positions, from
// before end-to-end encryption streams existed, are read with those at 0;
// tokens of five or seven, from before notifications had a position, with
// Notifications at -1.
func ParseToken(s string) (Token, error) {
	bad := mxhttp.InvalidParam("Invalid sync token %q", s)
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return Token{}, bad
	}
	parts := strings.Split(rest, "_")
	if len(parts) != 5 && len(parts) != 7 && len(parts) != 8 {
		return Token{}, bad
	}
	var n [8]int64
	n[7] = -1
	for i, p := range parts {
		// Digits only: ParseInt would also take a sign, so that one
		// position had several spellings.
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return Token{}, bad
		}
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return Token{}, bad
		}
		n[i] = v
	}
	return Token{Events: n[0], Receipts: n[1], AccountData: n[2], Presence: n[3], Typing: n[4], ToDevice: n[5], DeviceLists: n[6], Notifications: n[7]}, nil
}

// after reports whether t is past now in a persistent stream: a token this
// server never handed out.
func (t Token) after(now Token) bool {
	return t.Events > now.Events || t.Receipts > now.Receipts || t.AccountData > now.AccountData || t.Presence > now.Presence ||
		t.ToDevice > now.ToDevice || t.DeviceLists > now.DeviceLists || t.Notifications > now.Notifications
}
