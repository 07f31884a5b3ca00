package pdu

import (
	"testing"
	"time"

	gmsl "github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Events of room versions 3 and later are laid out here rather than by
// GMSL's builder (which signs too, and this package signs again): the
// unsigned event must be the one GMSL lays out, member for member.
func TestProtoObjectMatchesGMSL(t *testing.T) {
	key := testKey(t)
	sk := func(s string) *string { return &s }
	ts := int64(1_700_000_000_123)
	for _, v := range versionOrder[2:] {
		r, err := lookupVersion(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			p    gmsl.ProtoEvent
		}{
			{"message", gmsl.ProtoEvent{SenderID: "@a:example.org", RoomID: "!r:example.org", Type: "m.room.message",
				Content: spec.RawJSON(`{"body":"hi <&>","msgtype":"m.text"}`), PrevEvents: []string{"$p1", "$p2"}, Depth: 7}},
			{"state", gmsl.ProtoEvent{SenderID: "@a:example.org", RoomID: "!r:example.org", Type: "m.room.topic", StateKey: sk(""),
				Content: spec.RawJSON(`{"topic":"t"}`), PrevEvents: []string{"$p1"}, Depth: 3}},
			{"redaction", gmsl.ProtoEvent{SenderID: "@a:example.org", RoomID: "!r:example.org", Type: "m.room.redaction",
				Content: spec.RawJSON(`{}`), Redacts: "$gone", PrevEvents: []string{"$p1"}, Depth: 4}},
			{"create", gmsl.ProtoEvent{SenderID: "@a:example.org", Type: "m.room.create", StateKey: sk(""),
				Content: spec.RawJSON(`{"room_version":"` + v + `"}`), PrevEvents: []string{}, Depth: 1}},
		} {
			p := tc.p
			if p.Type == "m.room.create" && !r.gmsl.DomainlessRoomIDs() {
				p.RoomID = "!r:example.org"
			}
			eb := r.gmsl.NewEventBuilderFromProtoEvent(&p)
			auth := []string{"$a1", "$a2"}
			eb.AuthEvents = auth
			built, err := eb.Build(time.UnixMilli(ts), spec.ServerName(key.ServerName), gmsl.KeyID(key.KeyID), key.Private)
			if err != nil {
				t.Fatalf("v%s %s: %v", v, tc.name, err)
			}
			want, err := parseObject(built.JSON(), r.inputMode())
			if err != nil {
				t.Fatal(err)
			}
			got := protoObject(eb, auth, ts, key.ServerName)
			if g, w := string(got.encode()), string(want.without("signatures", "hashes").encode()); g != w {
				t.Errorf("v%s %s:\n got %s\nwant %s", v, tc.name, g, w)
			}
		}
	}
}
