package pdu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

// fuzzRoom is a small room of one version, built once per fuzz target: the
// events as seeds, and the state after them for the auth rules.
type fuzzRoom struct {
	events []*Event
	state  memState
}

// newFuzzRoom builds a room where alice created and joined, set power
// levels and a public join rule, sent a message and redacted it.
func newFuzzRoom(f *testing.F, version string) fuzzRoom {
	f.Helper()
	key := testKey(f)
	r := fuzzRoom{state: memState{}}
	roomID := "!room:example.org"
	createContent := fmt.Sprintf(`{"room_version":%q,"creator":%q}`, version, alice)
	if version == "12" {
		roomID = ""
	}
	add := func(p Proto) *Event {
		f.Helper()
		if p.RoomID == "" && len(r.events) > 0 {
			p.RoomID = r.events[0].RoomID()
		} else if p.RoomID == "" && version != "12" {
			p.RoomID = roomID
		}
		var prev []string
		depth := int64(len(r.events) + 1)
		if n := len(r.events); n > 0 {
			prev = []string{r.events[n-1].ID()}
		}
		p.OriginTS = 1_700_000_000_000 + depth
		e, err := Build(p, version, prev, depth, r.state, key)
		if err != nil {
			f.Fatalf("v%s: Build(%s): %v", version, p.Type, err)
		}
		if err := Allowed(e, r.state); err != nil {
			f.Fatalf("v%s: Allowed(%s): %v", version, p.Type, err)
		}
		r.events = append(r.events, e)
		if sk := e.StateKey(); sk != nil {
			r.state[StateKey{e.Type(), *sk}] = e
		}
		return e
	}
	add(Proto{Sender: alice, RoomID: roomID, Type: "m.room.create", StateKey: ptr(""), Content: json.RawMessage(createContent)})
	add(member(alice, alice, "join"))
	users := `{"@alice:example.org":100}`
	if version == "12" {
		users = `{}` // v12 creators have infinite power and must not be listed
	}
	add(Proto{Sender: alice, Type: "m.room.power_levels", StateKey: ptr(""),
		Content: json.RawMessage(`{"users":` + users + `,"users_default":0,"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0}`)})
	add(Proto{Sender: alice, Type: "m.room.join_rules", StateKey: ptr(""), Content: json.RawMessage(`{"join_rule":"public"}`)})
	msg := add(message(alice, "hello"))
	add(Proto{Sender: alice, Type: "m.room.redaction", Redacts: msg.ID(), Content: json.RawMessage(`{"reason":"oops"}`)})
	return r
}

// fuzzVersions are the room versions the event targets use: one of each
// event ID scheme and format (v1 IDs in the JSON, v3 hashes, v4 URL-safe
// hashes, v11 redaction and v12 room IDs from the create event).
var fuzzVersions = []string{"1", "3", "10", "11", "12"}

// fuzzVersion maps a fuzzed byte to a version, so that the fuzzer explores
// them all without wasting inputs on unknown ones.
func fuzzVersion(b byte) string { return fuzzVersions[int(b)%len(fuzzVersions)] }

// FuzzParseEvent checks that parsing is stable: an event parsed from
// arbitrary bytes (trusted or received) serialises to JSON that parses back
// to the same event, and redaction is idempotent.
func FuzzParseEvent(f *testing.F) {
	for i, v := range fuzzVersions {
		for _, e := range newFuzzRoom(f, v).events {
			f.Add(byte(i), e.JSON())
		}
	}
	f.Add(byte(0), []byte(`{"type":"m.room.message","event_id":"$x:y","room_id":"!r:y","sender":"@a:y","content":{},"depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":0}`))
	f.Add(byte(3), []byte(`{"type":"m.room.member","state_key":"@a:y","room_id":"!r:y","sender":"@a:y","content":[],"depth":-1,"prev_events":[{}],"auth_events":null,"hashes":{"sha256":""}}`))
	f.Fuzz(func(t *testing.T, vb byte, data []byte) {
		v := fuzzVersion(vb)
		if ev, err := Parse(v, data); err == nil {
			checkReparse(t, v, ev, func(b []byte) (*Event, error) { return Parse(v, b) })
		}
		if ev, _, err := ParseReceived(v, data); err == nil {
			checkReparse(t, v, ev, func(b []byte) (*Event, error) {
				e, _, err := ParseReceived(v, b)
				return e, err
			})
			// What federation accepted is stored and read back with Parse.
			checkReparse(t, v, ev, func(b []byte) (*Event, error) { return Parse(v, b) })
		}
		if red, err := Redact(v, data); err == nil {
			again, err := Redact(v, red)
			if err != nil || !bytes.Equal(again, red) {
				t.Fatalf("v%s: redacting the redacted %q gave %q, %v", v, red, again, err)
			}
		}
	})
}

// checkReparse parses ev's JSON again and requires the same event.
func checkReparse(t *testing.T, v string, ev *Event, parse func([]byte) (*Event, error)) {
	t.Helper()
	back, err := parse(ev.JSON())
	if err != nil {
		t.Fatalf("v%s: parsing JSON() of a parsed event %q: %v", v, ev.JSON(), err)
	}
	if back.ID() != ev.ID() || !bytes.Equal(back.JSON(), ev.JSON()) || back.Type() != ev.Type() ||
		back.Sender() != ev.Sender() || back.RoomID() != ev.RoomID() || !bytes.Equal(back.Content(), ev.Content()) ||
		back.IsState() != ev.IsState() || back.Redacts() != ev.Redacts() || back.Membership() != ev.Membership() {
		t.Fatalf("v%s: event changed on reparse:\n%s %s\n%s %s", v, ev.ID(), ev.JSON(), back.ID(), back.JSON())
	}
}

// FuzzAllowed runs the auth rules on arbitrary events against a small
// room's state. Parse (trusted) is used so that the fuzzer need not get
// hashes right to reach the rules.
func FuzzAllowed(f *testing.F) {
	rooms := make([]fuzzRoom, len(fuzzVersions))
	for i, v := range fuzzVersions {
		rooms[i] = newFuzzRoom(f, v)
		for _, e := range rooms[i].events {
			f.Add(byte(i), e.JSON())
		}
	}
	f.Fuzz(func(t *testing.T, vb byte, data []byte) {
		i := int(vb) % len(fuzzVersions)
		v, room := fuzzVersions[i], rooms[i]
		ev, err := Parse(v, data)
		if err != nil {
			return
		}
		err = Allowed(ev, room.state)
		if again := Allowed(ev, room.state); fmt.Sprint(again) != fmt.Sprint(err) {
			t.Fatalf("v%s: Allowed is not deterministic: %v, then %v", v, err, again)
		}
		// Only the create event and membership changes (and before v6,
		// a server's own m.room.aliases) can come from someone who is not
		// joined; everything else needs the sender in the room, and only
		// alice is.
		exempt := ev.Type() == "m.room.create" || ev.Type() == "m.room.member" || ev.Type() == "m.room.aliases"
		if err == nil && !exempt && ev.Sender() != alice {
			t.Fatalf("v%s: allowed %s from %s, who is not in the room: %s", v, ev.Type(), ev.Sender(), ev.JSON())
		}
		var na *NotAllowedError
		if errors.As(err, &na) && na.Message == "" {
			t.Fatalf("v%s: refusal without a reason for %s", v, ev.JSON())
		}
		// An empty room allows nothing but a create event (and the
		// exempt m.room.aliases).
		if Allowed(ev, nil) == nil && ev.Type() != "m.room.create" && ev.Type() != "m.room.aliases" {
			t.Fatalf("v%s: allowed %s in a room without state: %s", v, ev.Type(), ev.JSON())
		}
	})
}
