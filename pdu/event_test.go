package pdu

import (
	"crypto/ed25519"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	gmsl "github.com/matrix-org/gomatrixserverlib"
)

func TestVersions(t *testing.T) {
	want := []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}
	if got := Versions(); !slices.Equal(got, want) {
		t.Errorf("Versions() = %v", got)
	}
	for _, v := range want {
		if !SupportedVersion(v) {
			t.Errorf("SupportedVersion(%q) = false", v)
		}
	}
	for _, v := range []string{"", "0", "13", "org.matrix.hydra.11", "org.matrix.msc4014"} {
		if SupportedVersion(v) {
			t.Errorf("SupportedVersion(%q) = true", v)
		}
	}
	Versions()[0] = "changed"
	if Versions()[0] != "1" {
		t.Error("Versions() exposes internal state")
	}
}

// Our version table must agree with GMSL where both describe the same
// rule, or events would be laid out for one version and hashed for another.
func TestVersionTableAgreesWithGMSL(t *testing.T) {
	ids := map[gmsl.EventIDFormat]eventIDScheme{
		gmsl.EventIDFormatV1: eventIDRandom,
		gmsl.EventIDFormatV2: eventIDHashStd,
		gmsl.EventIDFormatV3: eventIDHashURL,
	}
	for _, v := range Versions() {
		r := versions[v]
		g := gmsl.MustGetRoomVersion(gmsl.RoomVersion(v))
		if ids[g.EventIDFormat()] != r.eventID {
			t.Errorf("v%s: event ID scheme %d, GMSL format %d", v, r.eventID, g.EventIDFormat())
		}
		if strict := g.CheckCanonicalJSON([]byte(`{"a":1.5}`)) != nil; strict != r.strictJSON {
			t.Errorf("v%s: strictJSON %v, GMSL %v", v, r.strictJSON, strict)
		}
		if g.DomainlessRoomIDs() != r.roomIDFromCreate {
			t.Errorf("v%s: roomIDFromCreate %v, GMSL %v", v, r.roomIDFromCreate, g.DomainlessRoomIDs())
		}
	}
}

func TestParseRoundTrip(t *testing.T) {
	for _, v := range Versions() {
		r := newTestRoom(t, v)
		r.mustAccept(member(alice, alice, "join"))
		r.mustAccept(Proto{Sender: alice, Type: "m.room.topic", StateKey: ptr(""), Content: json.RawMessage(`{"topic":"<b>&amp;</b> 日本語 \u2028"}`)})
		red := r.mustAccept(Proto{Sender: alice, Type: "m.room.redaction", Redacts: r.last.ID(), Content: json.RawMessage(`{"reason":"x"}`)})
		for _, e := range r.events {
			got, err := Parse(v, e.JSON())
			if err != nil {
				t.Fatalf("v%s: Parse(%s): %v", v, e.JSON(), err)
			}
			if string(got.JSON()) != string(e.JSON()) {
				t.Errorf("v%s: JSON changed:\n%s\n%s", v, got.JSON(), e.JSON())
			}
			same := got.ID() == e.ID() && got.RoomID() == e.RoomID() && got.Type() == e.Type() &&
				got.Sender() == e.Sender() && string(got.Content()) == string(e.Content()) &&
				got.Depth() == e.Depth() && got.OriginServerTS() == e.OriginServerTS() &&
				slices.Equal(got.PrevEventIDs(), e.PrevEventIDs()) && slices.Equal(got.AuthEventIDs(), e.AuthEventIDs()) &&
				got.Redacts() == e.Redacts() && got.Membership() == e.Membership() && got.Version() == e.Version() &&
				got.IsState() == e.IsState()
			if !same {
				t.Errorf("v%s: Parse changed the fields of %s", v, e.JSON())
			}
		}
		if red.Redacts() == "" {
			t.Errorf("v%s: redaction lost its target", v)
		}
	}
}

func TestEventAccessorsDoNotExposeState(t *testing.T) {
	r := newTestRoom(t, "11")
	join := r.mustAccept(member(alice, alice, "join"))
	*join.StateKey() = "@mallory:example.org"
	join.AuthEventIDs()[0] = "$changed"
	join.PrevEventIDs()[0] = "$changed"
	if *join.StateKey() != alice || join.AuthEventIDs()[0] == "$changed" || join.PrevEventIDs()[0] == "$changed" {
		t.Error("modifying returned values changed the event")
	}
}

func TestParseUntrusted(t *testing.T) {
	r := newTestRoom(t, "10")
	r.mustAccept(member(alice, alice, "join"))
	msg := r.mustAccept(message(alice, "hello"))

	edit := func(e *Event, f func(map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(e.JSON(), &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		return mustJSON(t, m)
	}
	legacy := newTestRoom(t, "5")
	legacy.mustAccept(member(alice, alice, "join"))
	floaty := legacy.mustAccept(Proto{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"x","ratio":0.5}`)})

	tests := []struct {
		name, version string
		data          []byte
		wantErr       string // "" means accepted
	}{
		{"as built", "10", msg.JSON(), ""},
		{"with unsigned", "10", edit(msg, func(m map[string]any) { m["unsigned"] = map[string]any{"age": 5} }), ""},
		{"with correct event_id", "10", edit(msg, func(m map[string]any) { m["event_id"] = msg.ID() }), ""},
		{"with wrong event_id", "10", edit(msg, func(m map[string]any) { m["event_id"] = "$wrong" }), "does not match"},
		{"content changed", "10", edit(msg, func(m map[string]any) { m["content"].(map[string]any)["body"] = "evil" }), "content hash mismatch"},
		{"no hashes", "10", edit(msg, func(m map[string]any) { delete(m, "hashes") }), "no hashes"},
		{"too big", "10", edit(msg, func(m map[string]any) {
			m["content"].(map[string]any)["body"] = strings.Repeat("x", MaxPDUSize)
		}), "more than the 65536 allowed"},
		{"float in v10", "10", edit(msg, func(m map[string]any) { m["depth"] = 2.5 }), "float 2.5"},
		{"float in v5 room", "5", floaty.JSON(), ""},
		{"v5 float event as v10", "10", floaty.JSON(), "float 0.5"},
		{"bad sender", "10", rehash(t, edit(msg, func(m map[string]any) { m["sender"] = "alice" })), "invalid"},
		{"not JSON", "10", []byte("garbage"), "invalid JSON"},
		{"not an object", "10", []byte(`[1]`), "not an object"},
		{"unknown version", "99", msg.JSON(), "unsupported room version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseUntrusted(tt.version, tt.data)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseUntrusted: %v", err)
			case tt.wantErr == "":
				if e.ID() == "" || CheckContentHash(e) != nil {
					t.Errorf("accepted event: ID %q, content hash %v", e.ID(), CheckContentHash(e))
				}
			case err == nil || !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("ParseUntrusted error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// rehash fixes up the content hash of an edited event, so that a test can
// reach the checks behind the hash check.
func rehash(t *testing.T, data []byte) []byte {
	t.Helper()
	o, err := parseObject(data, numbersLegacy)
	if err != nil {
		t.Fatal(err)
	}
	o["hashes"] = mustJSON(t, map[string]string{"sha256": b64(contentHash(o))})
	return o.encode()
}

func TestParseUntrustedV1NeedsEventID(t *testing.T) {
	r := newTestRoom(t, "1")
	var m map[string]any
	if err := json.Unmarshal(r.events[0].JSON(), &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "event_id")
	if _, err := ParseUntrusted("1", mustJSON(t, m)); err == nil || !strings.Contains(err.Error(), "event_id") {
		t.Errorf("ParseUntrusted of a v1 event without event_id: %v", err)
	}
}

// GMSL panics on some malformed events; those must come back as errors.
func TestPanicsBecomeErrors(t *testing.T) {
	// v12 room IDs are unchecked when parsing, but GMSL panics when asked
	// for one that is not 43 characters of base64.
	bad := `{"type":"m.room.message","room_id":"!short","sender":"@a:x","content":{},"depth":2,
		"prev_events":[],"auth_events":[],"origin_server_ts":1,"hashes":{"sha256":"x"},"signatures":{}}`
	_, err := Parse("12", []byte(bad))
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("Parse of a v12 event with a bad room ID: %v, want a recovered panic", err)
	}
	for _, garbage := range []string{"", "null", "{", `{"type":1}`, `{"room_id":"!x:y","prev_events":{"a":1}}`} {
		for _, v := range []string{"1", "3", "10", "12"} {
			if _, err := Parse(v, []byte(garbage)); err == nil {
				t.Errorf("Parse(v%s, %q) succeeded", v, garbage)
			}
			if _, err := ParseUntrusted(v, []byte(garbage)); err == nil {
				t.Errorf("ParseUntrusted(v%s, %q) succeeded", v, garbage)
			}
		}
	}

	_, err = safely("testing", func() (int, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("safely did not turn a panic into an error: %v", err)
	}
}

func TestVerifySignature(t *testing.T) {
	r := newTestRoom(t, "11")
	create := r.events[0]
	pub := r.key.Private.Public().(ed25519.PublicKey)
	other := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	tests := []struct {
		name, server, keyID string
		pub                 ed25519.PublicKey
		ok                  bool
	}{
		{"right key", "example.org", r.key.KeyID, pub, true},
		{"wrong key", "example.org", r.key.KeyID, other, false},
		{"wrong key ID", "example.org", "ed25519:other", pub, false},
		{"wrong server", "other.org", r.key.KeyID, pub, false},
		{"short key", "example.org", r.key.KeyID, pub[:5], false},
	}
	for _, tt := range tests {
		err := VerifySignature(create, tt.server, tt.keyID, tt.pub)
		if (err == nil) != tt.ok {
			t.Errorf("%s: VerifySignature = %v", tt.name, err)
		}
	}
	// Changing a field covered by the signature breaks it; the content hash
	// is fixed up so that only the signature check can catch it.
	o, err := parseObject(create.JSON(), numbersStrict)
	if err != nil {
		t.Fatal(err)
	}
	o["origin_server_ts"] = json.RawMessage("1")
	forged, err := Parse("11", rehash(t, o.encode()))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(forged, "example.org", r.key.KeyID, pub); err == nil {
		t.Error("VerifySignature accepted a changed timestamp")
	}
	if err := VerifySignature(nil, "example.org", r.key.KeyID, pub); err == nil {
		t.Error("VerifySignature(nil) succeeded")
	}
}
