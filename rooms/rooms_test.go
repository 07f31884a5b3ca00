package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/serverkey"
	"homeserver/storage"
)

// Identifiers of this file and bench_test.go start with rt, so as not to
// clash with other test files of the package.

const rtServer = "example.org"

// rtProfiles is the accounts side the rooms service asks for profiles:
// every local user exists and is called by their localpart.
type rtProfiles struct{}

func (rtProfiles) Profile(_ context.Context, userID string) (string, string, error) {
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return strings.ToUpper(local[:1]) + local[1:], "", nil
}

func (rtProfiles) Exists(context.Context, string) (bool, error) { return true, nil }

func (rtProfiles) IsGuest(context.Context, string) (bool, error) { return false, nil }

// rtEnv is a rooms service over a SQLite file.
type rtEnv struct {
	svc *rooms.Service
	db  *storage.DB
	key serverkey.Key
}

func rtOpen(tb testing.TB, path string) *rtEnv {
	tb.Helper()
	return rtOpenUntil(tb, path, tb.Cleanup)
}

// rtOpenUntil is rtOpen for an environment that outlives tb: cleanup
// registers its closing.
func rtOpenUntil(tb testing.TB, path string, cleanup func(func())) *rtEnv {
	tb.Helper()
	return rtOpenWith(tb, storage.Options{Path: path, Logger: rtQuiet}, cleanup)
}

func rtOpenWith(tb testing.TB, opts storage.Options, cleanup func(func())) *rtEnv {
	tb.Helper()
	db, err := storage.Open(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	cleanup(func() { db.Close() })
	key, err := serverkey.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	svc := rooms.New(db, rtProfiles{}, rooms.Config{
		ServerName: rtServer,
		Key:        pdu.Key{ServerName: rtServer, KeyID: key.ID, Private: key.Private},
		Logger:     rtQuiet,
	})
	return &rtEnv{svc: svc, db: db, key: key}
}

var rtQuiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func rtUser(name string) string { return "@" + name + ":" + rtServer }

// rtResult is a value with its error, for rtMust(f()).of(t).
type rtResult[T any] struct {
	v   T
	err error
}

func rtMust[T any](v T, err error) rtResult[T] { return rtResult[T]{v, err} }

// of returns the value, failing the test on an error.
func (r rtResult[T]) of(tb testing.TB) T {
	tb.Helper()
	if r.err != nil {
		tb.Fatal(r.err)
	}
	return r.v
}

func rtNoErr(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func (e *rtEnv) send(tb testing.TB, sender, roomID, eventType string, stateKey *string, content any) string {
	tb.Helper()
	body, err := json.Marshal(content)
	if err != nil {
		tb.Fatal(err)
	}
	return rtMust(e.svc.Send(context.Background(), rooms.SendRequest{
		Sender: sender, RoomID: roomID, Type: eventType, StateKey: stateKey, Content: body,
	})).of(tb)
}

func (e *rtEnv) say(tb testing.TB, sender, roomID, text string) string {
	tb.Helper()
	return e.send(tb, sender, roomID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": text})
}

func (e *rtEnv) setState(tb testing.TB, sender, roomID, eventType, key string, content any) string {
	tb.Helper()
	return e.send(tb, sender, roomID, eventType, &key, content)
}

// rtBusyRoom fills a room of the given version with everything the rooms
// service writes: joins and leaves, invites, bans and kicks, power level,
// name and topic changes, 200 messages and redactions (own and a
// moderator's, of messages and of state, the power levels included). It
// returns the room ID.
func rtBusyRoom(t *testing.T, e *rtEnv, version string) string {
	ctx := context.Background()
	alice, bob, carol, dave, erin, frank := rtUser("alice"), rtUser("bob"), rtUser("carol"), rtUser("dave"), rtUser("erin"), rtUser("frank")
	room := rtMust(e.svc.CreateRoom(ctx, alice, rooms.CreateRoomRequest{
		Preset: rooms.PresetPublic, RoomVersion: version, Name: rtPtr("Busy"), Topic: rtPtr("Everything"),
		Invite: []string{frank},
	})).of(t)
	for _, u := range []string{bob, carol, dave, erin} {
		rtMust(e.svc.Join(ctx, u, room, "")).of(t)
	}
	// Senders take turns among those currently joined.
	everyone := []string{alice, bob, carol, dave, erin, frank}
	joined := map[string]bool{alice: true, bob: true, carol: true, dave: true, erin: true}
	var mine []string
	for i := range 200 {
		turn := i
		sender := everyone[turn%len(everyone)]
		for !joined[sender] {
			turn++
			sender = everyone[turn%len(everyone)]
		}
		id := e.say(t, sender, room, fmt.Sprintf("message %d", i))
		if sender == bob {
			mine = append(mine, id)
		}
		switch i {
		case 20:
			// bob becomes a moderator.
			pl := rtPowerLevels(t, e, alice, room)
			pl["users"].(map[string]any)[bob] = 50
			e.setState(t, alice, room, "m.room.power_levels", "", pl)
		case 30:
			rtNoErr(t, e.svc.Kick(ctx, bob, room, carol, "noise"))
			joined[carol] = false
		case 40:
			rtMust(e.svc.Join(ctx, carol, room, "sorry")).of(t)
			joined[carol] = true
		case 50:
			rtNoErr(t, e.svc.Ban(ctx, bob, room, dave, "spam"))
			joined[dave] = false
		case 60:
			rtNoErr(t, e.svc.Unban(ctx, alice, room, dave, ""))
			rtMust(e.svc.Join(ctx, dave, room, "")).of(t)
			joined[dave] = true
		case 70:
			e.setState(t, bob, room, "m.room.topic", "", map[string]any{"topic": "changed by bob"})
		case 80:
			rtNoErr(t, e.svc.Leave(ctx, erin, room, "later"))
			joined[erin] = false
		case 90:
			rtMust(e.svc.Join(ctx, frank, room, "")).of(t)
			rtMust(e.svc.Join(ctx, erin, room, "")).of(t)
			joined[frank], joined[erin] = true, true
		case 100:
			e.setState(t, alice, room, "m.room.name", "", map[string]any{"name": "Renamed"})
			e.setState(t, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
		case 110:
			// A redaction of a state event: the join rules keep their rule.
			jr := e.setState(t, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": "public", "note": "x"})
			rtMust(e.svc.Redact(ctx, alice, room, jr, json.RawMessage(`{"reason":"tidy"}`), nil)).of(t)
		case 120:
			// Redactions: one's own, and a moderator's of another's.
			rtMust(e.svc.Redact(ctx, bob, room, mine[0], nil, nil)).of(t)
			rtMust(e.svc.Redact(ctx, bob, room, e.lastOf(t, room, carol), json.RawMessage(`{"reason":"rude"}`), nil)).of(t)
		case 130:
			// bob is demoted again and may no longer kick.
			pl := rtPowerLevels(t, e, alice, room)
			delete(pl["users"].(map[string]any), bob)
			pl["kick"] = 60
			e.setState(t, alice, room, "m.room.power_levels", "", pl)
			if err := e.svc.Kick(ctx, bob, room, carol, ""); err == nil {
				t.Fatal("a demoted user could kick")
			}
		case 140:
			// Redacted power levels count redacted: before v11 that drops
			// "invite" (50 in a public room) back to 0, so that frank
			// (power 0) may invite.
			pl := rtMust(e.db.CurrentState(ctx, room, []pdu.StateKey{{Type: "m.room.power_levels"}})).of(t)[0]
			rtMust(e.svc.Redact(ctx, alice, room, pl.EventID, nil, nil)).of(t)
			_, err := e.svc.Invite(ctx, frank, room, rtUser("grace"), "", false)
			if keepsInvite := version == "11" || version == "12"; (err == nil) == keepsInvite {
				t.Fatalf("v%s: invite after redacting the power levels: %v", version, err)
			}
		case 150:
			rtNoErr(t, e.svc.Ban(ctx, alice, room, erin, ""))
			joined[erin] = false
		case 160:
			e.setState(t, alice, room, "m.custom.thing", "", map[string]any{"n": 1})
		}
		if i == 180 {
			// Memberships sent as state are judged by the auth rules: no
			// one joins another user.
			body := json.RawMessage(`{"membership":"join"}`)
			if _, err := e.svc.Send(ctx, rooms.SendRequest{Sender: alice, RoomID: room, Type: "m.room.member", StateKey: &erin, Content: body}); err == nil {
				t.Fatal("a join for another user was sent as state")
			}
		}
	}
	return room
}

// lastOf is the ID of the last event the user sent in the room.
func (e *rtEnv) lastOf(t *testing.T, roomID, user string) string {
	evs := rtMust(e.db.RoomEvents(context.Background(), roomID, math.MaxInt64, 0, false, 100)).of(t)
	for _, ev := range evs {
		if ev.Sender == user && ev.Type == "m.room.message" {
			return ev.EventID
		}
	}
	t.Fatalf("no message from %s", user)
	return ""
}

func rtPowerLevels(t *testing.T, e *rtEnv, user, roomID string) map[string]any {
	t.Helper()
	raw := rtMust(e.svc.StateEvent(context.Background(), user, roomID, "m.room.power_levels", "")).of(t)
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Content
}

func rtPtr[T any](v T) *T { return &v }

// rtState is state loaded for the auth rules.
type rtState map[pdu.StateKey]*pdu.Event

func (s rtState) Get(eventType, stateKey string) *pdu.Event {
	return s[pdu.StateKey{Type: eventType, StateKey: stateKey}]
}

// TestEveryEventVerifies writes busy rooms of several versions and then
// checks every event in the database as another server would: it parses,
// its content hash and our signature verify, its ID is the one its JSON
// gives, it follows the room's previous event, its auth events are state
// of the room before it, and the auth rules allow it against that state.
func TestEveryEventVerifies(t *testing.T) {
	e := rtOpen(t, filepath.Join(t.TempDir(), "rooms.db"))
	ctx := context.Background()
	versions := []string{"1", "3", "6", "8", "10", "11", "12"}
	var roomIDs []string
	for _, v := range versions {
		roomIDs = append(roomIDs, rtBusyRoomChecked(t, e, v))
	}

	total := 0
	for i, roomID := range roomIDs {
		version := versions[i]
		n, redactions := rtVerifyRoom(t, e, roomID, version)
		if n < 225 {
			t.Errorf("v%s: only %d events", version, n)
		}
		if redactions < 3 {
			t.Errorf("v%s: %d redactions, want at least 3", version, redactions)
		}
		total += n
	}
	// The checks do catch a forgery: altered content, another key.
	last := rtMust(e.db.RoomEvents(ctx, roomIDs[0], math.MaxInt64, 0, false, 1)).of(t)[0]
	forged := strings.Replace(string(last.JSON), "message", "massage", 1)
	if fe := rtMust(pdu.Parse(versions[0], []byte(forged))).of(t); pdu.CheckContentHash(fe) == nil {
		t.Error("altered content passes the content hash check")
	}
	other := rtMust(serverkey.Generate()).of(t)
	if pdu.VerifySignature(rtMust(pdu.Parse(versions[0], last.JSON)).of(t), rtServer, e.key.ID, other.Public()) == nil {
		t.Error("the signature verifies with another key")
	}

	// Every event of the database was walked: positions are dense.
	maxPos := rtMust(e.db.MaxPos(ctx)).of(t)
	if int64(total) != maxPos {
		t.Errorf("walked %d events, the log has %d", total, maxPos)
	}
}

func rtBusyRoomChecked(t *testing.T, e *rtEnv, version string) string {
	t.Helper()
	var room string
	t.Run("build v"+version, func(t *testing.T) { room = rtBusyRoom(t, e, version) })
	if room == "" {
		t.FailNow()
	}
	return room
}

// rtVerifyRoom checks every event of a room and returns how many there
// are, and how many of them are redactions.
func rtVerifyRoom(t *testing.T, e *rtEnv, roomID, version string) (count, redactions int) {
	t.Helper()
	ctx := context.Background()
	if got := rtMust(e.db.GetRoom(ctx, roomID)).of(t).Version; got != version {
		t.Fatalf("room %s is version %s, want %s", roomID, got, version)
	}
	pub := e.key.Public()
	var prev *rooms.Stored
	from := int64(0)
	for {
		batch := rtMust(e.db.RoomEvents(ctx, roomID, from, math.MaxInt64, true, 100)).of(t)
		for i := range batch {
			st := batch[i]
			count++
			from = st.Pos
			where := fmt.Sprintf("v%s event %d (%s %s)", version, st.Pos, st.Type, st.EventID)

			ev, err := pdu.Parse(version, st.JSON)
			if err != nil {
				t.Fatalf("%s: parse: %v", where, err)
			}
			if ev.ID() != st.EventID {
				t.Errorf("%s: the JSON gives ID %s", where, ev.ID())
			}
			if _, err := pdu.ParseUntrusted(version, st.JSON); err != nil {
				t.Errorf("%s: as received over federation: %v", where, err)
			}
			if err := pdu.CheckContentHash(ev); err != nil {
				t.Errorf("%s: %v", where, err)
			}
			if err := pdu.VerifySignature(ev, rtServer, e.key.ID, pub); err != nil {
				t.Errorf("%s: %v", where, err)
			}
			if ev.RoomID() != roomID || ev.Type() != st.Type || ev.Sender() != st.Sender || ev.Depth() != st.Depth {
				t.Errorf("%s: stored columns disagree with the event: %+v", where, st)
			}
			if ev.Type() == "m.room.redaction" {
				redactions++
				target := rtMust(e.db.GetEvent(ctx, ev.Redacts())).of(t)
				if target.RedactedBy != ev.ID() {
					t.Errorf("%s: target %s is redacted by %q", where, target.EventID, target.RedactedBy)
				}
			}

			// The room's log is a chain: each event follows the one before.
			var state rtState
			if prev == nil {
				if ev.Type() != "m.room.create" || len(ev.PrevEventIDs()) != 0 || ev.Depth() != 1 {
					t.Fatalf("%s: the room does not start with its create event", where)
				}
				state = rtState{}
			} else {
				if p := ev.PrevEventIDs(); !slices.Equal(p, []string{prev.EventID}) || ev.Depth() != prev.Depth+1 {
					t.Errorf("%s: prev_events %v depth %d, want [%s] %d", where, p, ev.Depth(), prev.EventID, prev.Depth+1)
				}
				state = rtStateBefore(t, e, version, ev, *prev)
			}
			// auth_events are state before the event (v12 lists the
			// create event implicitly; AuthEventIDs includes it).
			inState := map[string]bool{}
			for _, s := range state {
				inState[s.ID()] = true
			}
			for _, id := range ev.AuthEventIDs() {
				if !inState[id] {
					t.Errorf("%s: auth event %s is not in the state before it", where, id)
				}
			}
			if err := pdu.Allowed(ev, state); err != nil {
				t.Errorf("%s: not allowed by the state before it: %v", where, err)
			}
			prev = &batch[i]
		}
		if len(batch) < 100 {
			break
		}
	}
	return count, redactions
}

// rtStateBefore loads the state the auth rules need for ev from the state
// group of the event before it, each state event redacted if it had been
// by then.
func rtStateBefore(t *testing.T, e *rtEnv, version string, ev *pdu.Event, prev rooms.Stored) rtState {
	t.Helper()
	ctx := context.Background()
	keys := rtMust(pdu.NeededForAuth(pdu.Proto{
		Sender: ev.Sender(), RoomID: ev.RoomID(), Type: ev.Type(), StateKey: ev.StateKey(), Content: ev.Content(),
	}, version)).of(t)
	entries := rtMust(e.db.StateAt(ctx, prev.StateGroup, keys)).of(t)
	ids := make([]string, len(entries))
	for i, en := range entries {
		ids[i] = en.EventID
	}
	stored := rtMust(e.db.GetEvents(ctx, ids)).of(t)
	if len(stored) != len(ids) {
		t.Fatalf("state entries %v, found %d events", ids, len(stored))
	}
	state := rtState{}
	for _, s := range stored {
		data := s.JSON
		if s.RedactedBy != "" {
			red := rtMust(e.db.GetEvent(ctx, s.RedactedBy)).of(t)
			if red.Pos <= prev.Pos {
				data = rtMust(pdu.Redact(version, data)).of(t)
			}
		}
		pe := rtMust(pdu.Parse(version, data)).of(t)
		if pe.ID() != s.EventID {
			t.Fatalf("state event %s parses to ID %s", s.EventID, pe.ID())
		}
		state[pdu.StateKey{Type: s.Type, StateKey: *s.StateKey}] = pe
	}
	return state
}
