package pdu

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const (
	alice = "@alice:example.org"
	bob   = "@bob:example.org"
	carol = "@carol:example.org"
)

func testKey(t testing.TB) Key {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "pdu package test signing key!!!!")
	return Key{ServerName: "example.org", KeyID: "ed25519:a_test", Private: ed25519.NewKeyFromSeed(seed)}
}

// memState is room state in memory, for the tests.
type memState map[StateKey]*Event

func (s memState) Get(eventType, stateKey string) *Event {
	return s[StateKey{eventType, stateKey}]
}

// testRoom builds events one after another in a linear DAG, keeping the
// state after the last accepted one.
type testRoom struct {
	t       *testing.T
	version string
	key     Key
	roomID  string
	state   memState
	last    *Event
	events  []*Event
	ts      int64
}

func newTestRoom(t *testing.T, version string) *testRoom {
	t.Helper()
	r := &testRoom{t: t, version: version, key: testKey(t), state: memState{}, ts: 1_700_000_000_000}
	content := map[string]any{"room_version": version}
	if n, _ := strconv.Atoi(version); n < 11 {
		// Before v11 the creator is named in the content, and the auth
		// rules require it.
		content["creator"] = alice
	}
	roomID := "!room:example.org"
	if version == "12" {
		roomID = ""
	}
	create := r.mustAccept(Proto{Sender: alice, RoomID: roomID, Type: "m.room.create", StateKey: ptr(""), Content: mustJSON(t, content)})
	r.roomID = create.RoomID()
	return r
}

func ptr(s string) *string { return &s }

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// build makes the next event without checking it.
func (r *testRoom) build(p Proto) *Event {
	r.t.Helper()
	if p.RoomID == "" && !(r.version == "12" && p.Type == "m.room.create") {
		p.RoomID = r.roomID
	}
	r.ts++
	p.OriginTS = r.ts
	var prev []string
	depth := int64(1)
	if r.last != nil {
		prev = []string{r.last.ID()}
		depth = r.last.Depth() + 1
	}
	e, err := Build(p, r.version, prev, depth, r.state, r.key)
	if err != nil {
		r.t.Fatalf("Build(%s from %s): %v", p.Type, p.Sender, err)
	}
	r.checkBuilt(e, p)
	return e
}

// checkBuilt checks what every built event must satisfy.
func (r *testRoom) checkBuilt(e *Event, p Proto) {
	r.t.Helper()
	if err := CheckContentHash(e); err != nil {
		r.t.Errorf("%s: CheckContentHash: %v", e.Type(), err)
	}
	if err := VerifySignature(e, r.key.ServerName, r.key.KeyID, r.key.Private.Public().(ed25519.PublicKey)); err != nil {
		r.t.Errorf("%s: VerifySignature: %v", e.Type(), err)
	}
	if e.Version() != r.version || e.Type() != p.Type || e.Sender() != p.Sender || e.OriginServerTS() != p.OriginTS {
		r.t.Errorf("built event fields: version %s type %s sender %s ts %d; asked for %s %s %s %d",
			e.Version(), e.Type(), e.Sender(), e.OriginServerTS(), r.version, p.Type, p.Sender, p.OriginTS)
	}
	if (p.StateKey == nil) != (e.StateKey() == nil) || (p.StateKey != nil && *p.StateKey != *e.StateKey()) || e.IsState() != (p.StateKey != nil) {
		r.t.Errorf("built event state key %v, asked for %v", e.StateKey(), p.StateKey)
	}
	// What federation sends must parse back, as a peer would, to the same
	// event.
	back, err := ParseUntrusted(r.version, e.JSON())
	if err != nil {
		r.t.Fatalf("%s: ParseUntrusted(JSON()): %v", e.Type(), err)
	}
	if back.ID() != e.ID() || string(back.JSON()) != string(e.JSON()) {
		r.t.Errorf("%s: round trip changed the event: %s %s vs %s %s", e.Type(), e.ID(), e.JSON(), back.ID(), back.JSON())
	}
}

// mustAccept builds an event that the auth rules must allow, and applies it.
func (r *testRoom) mustAccept(p Proto) *Event {
	r.t.Helper()
	e := r.build(p)
	if err := Allowed(e, r.state); err != nil {
		r.t.Fatalf("Allowed(%s %s from %s): %v", e.Type(), e.Content(), e.Sender(), err)
	}
	r.last = e
	r.events = append(r.events, e)
	if sk := e.StateKey(); sk != nil {
		r.state[StateKey{e.Type(), *sk}] = e
	}
	return e
}

// mustReject builds an event that the auth rules must forbid.
func (r *testRoom) mustReject(p Proto, wantMsg string) {
	r.t.Helper()
	e := r.build(p)
	err := Allowed(e, r.state)
	var na *NotAllowedError
	if !errors.As(err, &na) {
		r.t.Fatalf("Allowed(%s %s from %s) = %v, want *NotAllowedError", e.Type(), e.Content(), e.Sender(), err)
	}
	if !strings.Contains(na.Message, wantMsg) {
		r.t.Errorf("Allowed(%s from %s): message %q does not mention %q", e.Type(), e.Sender(), na.Message, wantMsg)
	}
}

func member(sender, target, membership string) Proto {
	return Proto{Sender: sender, Type: "m.room.member", StateKey: ptr(target),
		Content: json.RawMessage(fmt.Sprintf(`{"membership":%q}`, membership))}
}

func message(sender, body string) Proto {
	return Proto{Sender: sender, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))}
}

func TestBuildAndAllowed(t *testing.T) {
	for _, version := range []string{"1", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			r := newTestRoom(t, version)
			create := r.events[0]
			checkCreate(t, version, create)

			join := r.mustAccept(member(alice, alice, "join"))
			if join.Membership() != "join" {
				t.Errorf("Membership() = %q", join.Membership())
			}
			users := map[string]int{alice: 100}
			if version == "12" {
				// Creators have infinite power in v12 and must not be
				// listed.
				users = map[string]int{}
			}
			pl := r.mustAccept(Proto{Sender: alice, Type: "m.room.power_levels", StateKey: ptr(""), Content: mustJSON(t, map[string]any{
				"users": users, "users_default": 0, "state_default": 50, "events_default": 0,
				"ban": 50, "kick": 50, "redact": 50, "invite": 0,
			})})
			r.mustAccept(Proto{Sender: alice, Type: "m.room.join_rules", StateKey: ptr(""), Content: json.RawMessage(`{"join_rule":"invite"}`)})
			msg := r.mustAccept(message(alice, "hello"))
			if msg.Membership() != "" || msg.IsState() || msg.Redacts() != "" {
				t.Errorf("message: Membership %q IsState %v Redacts %q", msg.Membership(), msg.IsState(), msg.Redacts())
			}
			checkAuthEvents(t, version, create, msg, []string{pl.ID(), join.ID()})

			r.mustReject(message(bob, "let me in"), "not in room")
			r.mustReject(member(bob, bob, "join"), `join rule "invite" forbids it`)
			r.mustAccept(member(alice, bob, "invite"))
			r.mustAccept(member(bob, bob, "join"))
			r.mustAccept(message(bob, "thanks"))
			r.mustReject(Proto{Sender: bob, Type: "m.room.name", StateKey: ptr(""), Content: json.RawMessage(`{"name":"bob's room"}`)}, "0 < 50")
			r.mustAccept(Proto{Sender: alice, Type: "m.room.name", StateKey: ptr(""), Content: json.RawMessage(`{"name":"alice's room"}`)})
			r.mustAccept(member(alice, carol, "ban"))
			r.mustReject(member(carol, carol, "join"), `from "ban" to "join"`)

			red := r.mustAccept(Proto{Sender: alice, Type: "m.room.redaction", Redacts: msg.ID()})
			if red.Redacts() != msg.ID() {
				t.Errorf("Redacts() = %q, want %q", red.Redacts(), msg.ID())
			}
			checkRedactsPlacement(t, version, red)

			for _, e := range r.events {
				if e.RoomID() != r.roomID {
					t.Errorf("%s: RoomID() = %q, want %q", e.Type(), e.RoomID(), r.roomID)
				}
			}
		})
	}
}

func checkCreate(t *testing.T, version string, create *Event) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(create.JSON(), &fields); err != nil {
		t.Fatal(err)
	}
	_, hasRoomID := fields["room_id"]
	_, hasEventID := fields["event_id"]
	switch version {
	case "12":
		if hasRoomID {
			t.Errorf("v12 create event JSON has a room_id: %s", create.JSON())
		}
		if want := "!" + strings.TrimPrefix(create.ID(), "$"); create.RoomID() != want {
			t.Errorf("v12 room ID = %q, want %q", create.RoomID(), want)
		}
	default:
		if !hasRoomID || create.RoomID() != "!room:example.org" {
			t.Errorf("create room ID = %q (in JSON: %v)", create.RoomID(), hasRoomID)
		}
	}
	if hasEventID != (version == "1") {
		t.Errorf("v%s create JSON has event_id: %v", version, hasEventID)
	}
	if version == "1" {
		if !strings.HasPrefix(create.ID(), "$") || !strings.HasSuffix(create.ID(), ":example.org") {
			t.Errorf("v1 event ID %q, want $random:example.org", create.ID())
		}
	} else if len(create.ID()) != 44 || strings.ContainsAny(create.ID(), "+/=") {
		t.Errorf("event ID %q, want $ + 43 URL-safe base64 characters", create.ID())
	}
	if len(create.AuthEventIDs()) != 0 || len(create.PrevEventIDs()) != 0 || create.Depth() != 1 {
		t.Errorf("create: auth %v prev %v depth %d", create.AuthEventIDs(), create.PrevEventIDs(), create.Depth())
	}
}

// checkAuthEvents checks the auth events chosen for a message: power levels
// and the sender's membership, plus the create event which v12 leaves out
// of the JSON but AuthEventIDs still reports.
func checkAuthEvents(t *testing.T, version string, create, msg *Event, others []string) {
	t.Helper()
	want := append([]string{create.ID()}, others...)
	got := msg.AuthEventIDs()
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("AuthEventIDs() = %v, want %v", got, want)
	}
	inJSON := strings.Contains(string(msg.JSON()), create.ID())
	if inJSON == (version == "12") {
		t.Errorf("v%s: create event listed in auth_events JSON: %v (%s)", version, inJSON, msg.JSON())
	}
}

func checkRedactsPlacement(t *testing.T, version string, red *Event) {
	t.Helper()
	var fields struct {
		Redacts *string `json:"redacts"`
		Content struct {
			Redacts *string `json:"redacts"`
		} `json:"content"`
	}
	if err := json.Unmarshal(red.JSON(), &fields); err != nil {
		t.Fatal(err)
	}
	inContent := version == "11" || version == "12"
	if (fields.Content.Redacts != nil) != inContent || (fields.Redacts != nil) == inContent {
		t.Errorf("v%s redaction: top-level redacts %v, content.redacts %v", version, fields.Redacts != nil, fields.Content.Redacts != nil)
	}
}

func TestAllowedIsSafeConcurrently(t *testing.T) {
	r := newTestRoom(t, "12")
	r.mustAccept(member(alice, alice, "join"))
	msg := r.build(message(alice, "hi"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := Allowed(msg, r.state); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestNeededForAuth(t *testing.T) {
	tests := []struct {
		name string
		p    Proto
		want []StateKey
	}{
		{"create", Proto{Sender: alice, Type: "m.room.create", StateKey: ptr("")}, nil},
		{"message", message(bob, "x"), []StateKey{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.member", bob}}},
		{"join", member(bob, bob, "join"), []StateKey{{"m.room.create", ""}, {"m.room.join_rules", ""}, {"m.room.power_levels", ""}, {"m.room.member", bob}}},
		{"invite", member(alice, bob, "invite"), []StateKey{{"m.room.create", ""}, {"m.room.join_rules", ""}, {"m.room.power_levels", ""}, {"m.room.member", alice}, {"m.room.member", bob}}},
		{"third-party join", Proto{Sender: bob, Type: "m.room.member", StateKey: ptr(bob),
			Content: json.RawMessage(`{"membership":"invite","third_party_invite":{"signed":{"token":"tok"}}}`)},
			[]StateKey{{"m.room.create", ""}, {"m.room.join_rules", ""}, {"m.room.power_levels", ""}, {"m.room.member", bob}, {"m.room.third_party_invite", "tok"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range []string{"1", "12"} {
				got, err := NeededForAuth(tt.p, v)
				if err != nil {
					t.Fatal(err)
				}
				less := func(a, b StateKey) int { return strings.Compare(a.Type+"\x00"+a.StateKey, b.Type+"\x00"+b.StateKey) }
				slices.SortFunc(got, less)
				want := slices.Clone(tt.want)
				slices.SortFunc(want, less)
				if !slices.Equal(got, want) {
					t.Errorf("v%s: NeededForAuth = %v, want %v", v, got, want)
				}
			}
		})
	}
	if _, err := NeededForAuth(Proto{Sender: bob, Type: "m.room.member", StateKey: ptr(bob), Content: json.RawMessage(`[]`)}, "10"); err == nil {
		t.Error("NeededForAuth accepted member content that is not an object")
	}
	if _, err := NeededForAuth(message(bob, "x"), "99"); err == nil {
		t.Error("NeededForAuth accepted room version 99")
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	key := testKey(t)
	ok := message(alice, "x")
	ok.RoomID = "!room:example.org"
	tests := []struct {
		name    string
		version string
		p       func(p Proto) Proto
		key     func(k Key) Key
		wantErr string
	}{
		{"unknown version", "99", nil, nil, "unsupported room version"},
		{"v12 create with room ID", "12", func(p Proto) Proto {
			p.Type, p.StateKey = "m.room.create", ptr("")
			return p
		}, nil, "no room ID"},
		{"no room ID", "10", func(p Proto) Proto { p.RoomID = ""; return p }, nil, "no room ID"},
		{"foreign sender", "10", func(p Proto) Proto { p.Sender = "@eve:evil.example"; return p }, nil, "not on example.org"},
		{"float content", "10", func(p Proto) Proto { p.Content = json.RawMessage(`{"n":1.5}`); return p }, nil, "float 1.5"},
		{"content not an object", "10", func(p Proto) Proto { p.Content = json.RawMessage(`[1]`); return p }, nil, "not an object"},
		{"redacts on a message", "10", func(p Proto) Proto { p.Redacts = "$x"; return p }, nil, "only for m.room.redaction"},
		{"redaction without target", "11", func(p Proto) Proto { p.Type = "m.room.redaction"; return p }, nil, "no target"},
		{"bad key", "10", nil, func(k Key) Key { k.Private = k.Private[:10]; return k }, "bytes"},
		{"bad key ID", "10", nil, func(k Key) Key { k.KeyID = "a_test"; return k }, "ed25519:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, k := ok, key
			if tt.p != nil {
				p = tt.p(p)
			}
			if tt.key != nil {
				k = tt.key(k)
			}
			_, err := Build(p, tt.version, []string{"$prev"}, 2, memState{}, k)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Build error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestAllowedRejectsMismatchedState(t *testing.T) {
	r := newTestRoom(t, "10")
	join := r.mustAccept(member(alice, alice, "join"))
	msg := r.build(message(alice, "x"))
	wrong := memState{
		{"m.room.create", ""}:       r.events[0],
		{"m.room.member", alice}:    join,
		{"m.room.power_levels", ""}: join, // not a power levels event
	}
	err := Allowed(msg, wrong)
	var na *NotAllowedError
	if err == nil || errors.As(err, &na) {
		t.Errorf("Allowed with a wrong state event = %v, want a plain error", err)
	}
	if err := Allowed(nil, r.state); err == nil {
		t.Error("Allowed(nil) succeeded")
	}
}
