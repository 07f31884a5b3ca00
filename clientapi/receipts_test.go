package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"homeserver/internal/testserver"
	"homeserver/receipts"
	"homeserver/server"
	"homeserver/storage"
)

var rcTxn atomic.Int64

func rcRoomPath(roomID, rest string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + rest
}

func rcReceiptPath(roomID, typ, eventID string) string {
	return rcRoomPath(roomID, "/receipt/"+url.PathEscape(typ)+"/"+url.PathEscape(eventID))
}

func rcTypingPath(roomID, userID string) string {
	return rcRoomPath(roomID, "/typing/"+url.PathEscape(userID))
}

func rcSend(t *testing.T, s *testserver.Server, u testserver.User, roomID string, content map[string]any) string {
	t.Helper()
	path := rcRoomPath(roomID, fmt.Sprintf("/send/m.room.message/rc%d", rcTxn.Add(1)))
	return s.MustDo(http.StatusOK, "PUT", path, u.Token, content).String("event_id")
}

func rcWantErr(t *testing.T, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.Errcode(), status, errcode, r.Body)
	}
}

// rcStoredReceipts stops the server and reads back the receipts it stored,
// through the same storage and service the server uses.
func rcStoredReceipts(t *testing.T, s *testserver.Server, roomIDs ...string) []receipts.Receipt {
	t.Helper()
	s.Stop()
	opts := server.StorageOptions(s.Config.Database)
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := storage.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc := receipts.New(db, nil)
	to, err := svc.MaxPos(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := svc.Since(context.Background(), roomIDs, 0, to)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestReceiptErrors(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw-alice"), s.Register("bob", "pw-bob")
	roomID := s.CreatePublicRoom(alice)
	e1 := s.SendText(alice, roomID, "one")
	other := s.CreatePublicRoom(alice)
	elsewhere := s.SendText(alice, other, "elsewhere")

	// Not joined.
	rcWantErr(t, s.Do("POST", rcReceiptPath(roomID, "m.read", e1), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	rcWantErr(t, s.Do("POST", rcReceiptPath("!nowhere:test.local", "m.read", e1), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", rcRoomPath(roomID, "/join"), bob.Token, map[string]any{})

	for _, c := range []struct {
		name, typ, event string
		body             any
		status           int
		errcode          string
	}{
		{"unknown type", "m.unknown", e1, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"old type name", "read", e1, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"not an event ID", "m.read", "e1", map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"unknown event", "m.read", "$nope", map[string]any{}, http.StatusNotFound, "M_NOT_FOUND"},
		{"event of another room", "m.read", elsewhere, map[string]any{}, http.StatusNotFound, "M_NOT_FOUND"},
		{"empty thread_id", "m.read", e1, map[string]any{"thread_id": ""}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"thread_id not a string", "m.read", e1, map[string]any{"thread_id": 5}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"thread_id not a thread", "m.read", e1, map[string]any{"thread_id": "thread"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"thread_id on m.fully_read", "m.fully_read", e1, map[string]any{"thread_id": "main"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"body not JSON", "m.read", e1, "{", http.StatusBadRequest, "M_NOT_JSON"},
		{"body not an object", "m.read", e1, "[]", http.StatusBadRequest, "M_BAD_JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rcWantErr(t, s.Do("POST", rcReceiptPath(roomID, c.typ, c.event), bob.Token, c.body), c.status, c.errcode)
		})
	}
	rcWantErr(t, s.Do("POST", rcReceiptPath(roomID, "m.read", e1), "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")

	// Having left, bob may no longer send receipts.
	s.MustDo(http.StatusOK, "POST", rcRoomPath(roomID, "/leave"), bob.Token, map[string]any{})
	rcWantErr(t, s.Do("POST", rcReceiptPath(roomID, "m.read", e1), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

	if rs := rcStoredReceipts(t, s, roomID, other); len(rs) != 0 {
		t.Fatalf("refused receipts were stored: %+v", rs)
	}
}

func TestReceiptsStored(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw-alice"), s.Register("bob", "pw-bob")
	roomID := s.CreatePublicRoom(alice)
	s.MustDo(http.StatusOK, "POST", rcRoomPath(roomID, "/join"), bob.Token, map[string]any{})
	e1 := s.SendText(alice, roomID, "one")
	e2 := s.SendText(alice, roomID, "two")
	inThread := rcSend(t, s, alice, roomID, map[string]any{
		"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": e1},
	})

	post := func(typ, eventID string, body any) *testserver.Response {
		return s.Do("POST", rcReceiptPath(roomID, typ, eventID), bob.Token, body)
	}
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read", e2), bob.Token, map[string]any{})
	// Receipts only move forward: an earlier event leaves it at e2.
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read", e1), bob.Token, map[string]any{})
	// Old clients send no body.
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read.private", e1), bob.Token, nil)
	// Threads: the root is in the main timeline, a thread event only in its thread.
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read", e1), bob.Token, map[string]any{"thread_id": "main"})
	rcWantErr(t, post("m.read", inThread, map[string]any{"thread_id": "main"}), http.StatusBadRequest, "M_INVALID_PARAM")
	rcWantErr(t, post("m.read", e2, map[string]any{"thread_id": e1}), http.StatusBadRequest, "M_INVALID_PARAM")
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read", inThread), bob.Token, map[string]any{"thread_id": e1})
	// Alice's receipt sits beside bob's.
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read", e2), alice.Token, map[string]any{})

	got := map[string]string{}
	for _, r := range rcStoredReceipts(t, s, roomID) {
		if r.RoomID != roomID || r.TS == 0 || r.Pos == 0 {
			t.Fatalf("receipt %+v", r)
		}
		got[r.UserID+" "+r.Type+" "+r.ThreadID] = r.EventID
	}
	want := map[string]string{
		bob.ID + " m.read ":         e2,
		bob.ID + " m.read.private ": e1,
		bob.ID + " m.read main":     e1,
		bob.ID + " m.read " + e1:    inThread,
		alice.ID + " m.read ":       e2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if len(got) != 5 {
		t.Errorf("stored %v", got)
	}
}

func rcFullyRead(t *testing.T, s *testserver.Server, u testserver.User, roomID string) string {
	t.Helper()
	path := "/_matrix/client/v3/user/" + url.PathEscape(u.ID) + "/rooms/" + url.PathEscape(roomID) + "/account_data/m.fully_read"
	r := s.Do("GET", path, u.Token, nil)
	if r.Status == http.StatusNotFound {
		return ""
	}
	if r.Status != http.StatusOK {
		t.Fatalf("GET m.fully_read: %d %s", r.Status, r.Body)
	}
	return r.String("event_id")
}

func TestReadMarkers(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw-alice"), s.Register("bob", "pw-bob")
	roomID := s.CreatePublicRoom(alice)
	e1 := s.SendText(alice, roomID, "one")
	e2 := s.SendText(alice, roomID, "two")
	path := rcRoomPath(roomID, "/read_markers")

	rcWantErr(t, s.Do("POST", path, bob.Token, map[string]any{"m.fully_read": e1}), http.StatusForbidden, "M_FORBIDDEN")
	s.MustDo(http.StatusOK, "POST", rcRoomPath(roomID, "/join"), bob.Token, map[string]any{})

	// m.fully_read through /receipt lands in room account data.
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.fully_read", e1), bob.Token, map[string]any{})
	if got := rcFullyRead(t, s, bob, roomID); got != e1 {
		t.Fatalf("m.fully_read %q, want %s", got, e1)
	}

	// One bad marker sets none of them.
	rcWantErr(t, s.Do("POST", path, bob.Token, map[string]any{"m.fully_read": e2, "m.read": "$nope"}), http.StatusNotFound, "M_NOT_FOUND")
	rcWantErr(t, s.Do("POST", path, bob.Token, map[string]any{"m.fully_read": e2, "m.read": 3}), http.StatusBadRequest, "M_BAD_JSON")
	rcWantErr(t, s.Do("POST", path, bob.Token, map[string]any{"m.fully_read": e2, "m.read.private": "e1"}), http.StatusBadRequest, "M_INVALID_PARAM")
	rcWantErr(t, s.Do("POST", path, bob.Token, nil), http.StatusBadRequest, "M_NOT_JSON")
	if got := rcFullyRead(t, s, bob, roomID); got != e1 {
		t.Fatalf("m.fully_read %q after refused requests, want %s", got, e1)
	}

	// All optional since v1.4; nothing to do is fine.
	s.MustDo(http.StatusOK, "POST", path, bob.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", path, bob.Token, map[string]any{"m.fully_read": e2, "m.read": e2, "m.read.private": e1})
	if got := rcFullyRead(t, s, bob, roomID); got != e2 {
		t.Fatalf("m.fully_read %q, want %s", got, e2)
	}
	// m.fully_read is no receipt.
	got := map[string]string{}
	for _, r := range rcStoredReceipts(t, s, roomID) {
		got[r.Type] = r.EventID
	}
	if len(got) != 2 || got["m.read"] != e2 || got["m.read.private"] != e1 {
		t.Fatalf("receipts %v", got)
	}
}

func TestTypingEndpoint(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw-alice"), s.Register("bob", "pw-bob")
	roomID := s.CreatePublicRoom(alice)

	s.MustDo(http.StatusOK, "PUT", rcTypingPath(roomID, alice.ID), alice.Token, map[string]any{"typing": true, "timeout": 30000})
	s.MustDo(http.StatusOK, "PUT", rcTypingPath(roomID, alice.ID), alice.Token, map[string]any{"typing": true}) // default timeout
	s.MustDo(http.StatusOK, "PUT", rcTypingPath(roomID, alice.ID), alice.Token, map[string]any{"typing": true, "timeout": int64(1) << 60})
	s.MustDo(http.StatusOK, "PUT", rcTypingPath(roomID, alice.ID), alice.Token, map[string]any{"typing": false})

	for _, c := range []struct {
		name    string
		user    testserver.User
		target  string
		body    any
		status  int
		errcode string
	}{
		{"someone else's typing", bob, alice.ID, map[string]any{"typing": true}, http.StatusForbidden, "M_FORBIDDEN"},
		{"not joined", bob, bob.ID, map[string]any{"typing": true}, http.StatusForbidden, "M_FORBIDDEN"},
		{"missing typing", alice, alice.ID, map[string]any{"timeout": 1000}, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"typing not a bool", alice, alice.ID, map[string]any{"typing": "yes"}, http.StatusBadRequest, "M_BAD_JSON"},
		{"timeout not a number", alice, alice.ID, map[string]any{"typing": true, "timeout": "soon"}, http.StatusBadRequest, "M_BAD_JSON"},
		{"negative timeout", alice, alice.ID, map[string]any{"typing": true, "timeout": -1}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"no body", alice, alice.ID, nil, http.StatusBadRequest, "M_NOT_JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rcWantErr(t, s.Do("PUT", rcTypingPath(roomID, c.target), c.user.Token, c.body), c.status, c.errcode)
		})
	}
	rcWantErr(t, s.Do("PUT", rcTypingPath("!nowhere:test.local", alice.ID), alice.Token, map[string]any{"typing": true}), http.StatusForbidden, "M_FORBIDDEN")
}

// The typing and receipt events as /sync delivers them.
func rcEphemeral(t *testing.T, s *testserver.Server, u testserver.User, roomID string) map[string]json.RawMessage {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", u.Token, nil)
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Ephemeral struct {
					Events []struct {
						Type    string          `json:"type"`
						Content json.RawMessage `json:"content"`
					} `json:"events"`
				} `json:"ephemeral"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	out := map[string]json.RawMessage{}
	for _, e := range body.Rooms.Join[roomID].Ephemeral.Events {
		out[e.Type] = e.Content
	}
	return out
}

func TestTypingAndReceiptsInSync(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw-alice"), s.Register("bob", "pw-bob")
	roomID := s.CreatePublicRoom(alice)
	s.MustDo(http.StatusOK, "POST", rcRoomPath(roomID, "/join"), bob.Token, map[string]any{})
	e1 := s.SendText(alice, roomID, "one")
	s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", alice.Token, nil)

	s.MustDo(http.StatusOK, "PUT", rcTypingPath(roomID, bob.ID), bob.Token, map[string]any{"typing": true})
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read", e1), alice.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", rcReceiptPath(roomID, "m.read.private", e1), bob.Token, map[string]any{})

	for _, u := range []testserver.User{alice, bob} {
		eph := rcEphemeral(t, s, u, roomID)
		var typing struct {
			UserIDs []string `json:"user_ids"`
		}
		if err := json.Unmarshal(eph["m.typing"], &typing); err != nil || len(typing.UserIDs) != 1 || typing.UserIDs[0] != bob.ID {
			t.Fatalf("%s sees typing %s", u.ID, eph["m.typing"])
		}
		var rc map[string]map[string]map[string]json.RawMessage
		if err := json.Unmarshal(eph["m.receipt"], &rc); err != nil {
			t.Fatalf("%s sees receipts %s", u.ID, eph["m.receipt"])
		}
		if rc[e1]["m.read"][alice.ID] == nil {
			t.Fatalf("%s misses alice's public receipt: %s", u.ID, eph["m.receipt"])
		}
		_, private := rc[e1]["m.read.private"][bob.ID]
		if private != (u.ID == bob.ID) {
			t.Fatalf("%s sees bob's private receipt: %v (%s)", u.ID, private, eph["m.receipt"])
		}
	}

	s.MustDo(http.StatusOK, "PUT", rcTypingPath(roomID, bob.ID), bob.Token, map[string]any{"typing": false})
	if eph := rcEphemeral(t, s, alice, roomID); eph["m.typing"] != nil && string(eph["m.typing"]) != `{"user_ids":[]}` {
		t.Fatalf("typing after stop: %s", eph["m.typing"])
	}
}
