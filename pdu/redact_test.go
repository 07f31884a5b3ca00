package pdu

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"

	gmsl "github.com/matrix-org/gomatrixserverlib"
)

func TestRedactContentPerVersion(t *testing.T) {
	const (
		keep = true
		drop = false
	)
	// Each case is an event type and content, and whether a given content
	// key survives redaction in room versions 1, 6, 8, 9 and 11.
	tests := []struct {
		name, typ, content, key string
		keptIn                  map[string]bool
	}{
		{"message body", "m.room.message", `{"body":"secret","msgtype":"m.text"}`, "body",
			map[string]bool{"1": drop, "6": drop, "9": drop, "11": drop, "12": drop}},
		{"create creator", "m.room.create", `{"creator":"@a:x","room_version":"1"}`, "creator",
			map[string]bool{"1": keep, "10": keep, "11": keep}},
		{"create room_version", "m.room.create", `{"creator":"@a:x","room_version":"1","m.federate":false}`, "room_version",
			map[string]bool{"1": drop, "10": drop, "11": keep, "12": keep}},
		{"create other keys", "m.room.create", `{"m.federate":false}`, "m.federate",
			map[string]bool{"10": drop, "11": keep}},
		{"aliases", "m.room.aliases", `{"aliases":["#a:x"]}`, "aliases",
			map[string]bool{"1": keep, "5": keep, "6": drop}},
		{"join rule allow", "m.room.join_rules", `{"join_rule":"restricted","allow":[]}`, "allow",
			map[string]bool{"7": drop, "8": keep, "11": keep}},
		{"authorised via", "m.room.member", `{"membership":"join","join_authorised_via_users_server":"@a:x"}`, "join_authorised_via_users_server",
			map[string]bool{"8": drop, "9": keep}},
		{"membership", "m.room.member", `{"membership":"join","displayname":"A"}`, "membership",
			map[string]bool{"1": keep, "11": keep}},
		{"displayname", "m.room.member", `{"membership":"join","displayname":"A"}`, "displayname",
			map[string]bool{"1": drop, "11": drop}},
		{"power levels invite", "m.room.power_levels", `{"invite":50,"ban":50}`, "invite",
			map[string]bool{"10": drop, "11": keep}},
		{"power levels notifications", "m.room.power_levels", `{"notifications":{"room":50}}`, "notifications",
			map[string]bool{"11": drop}},
		{"redaction target", "m.room.redaction", `{"redacts":"$x","reason":"spam"}`, "redacts",
			map[string]bool{"10": drop, "11": keep}},
		{"redaction reason", "m.room.redaction", `{"redacts":"$x","reason":"spam"}`, "reason",
			map[string]bool{"11": drop}},
	}
	for _, tt := range tests {
		for version, want := range tt.keptIn {
			ev := `{"type":"` + tt.typ + `","room_id":"!r:x","sender":"@a:x","content":` + tt.content + `}`
			red, err := Redact(version, []byte(ev))
			if err != nil {
				t.Fatalf("%s v%s: %v", tt.name, version, err)
			}
			var got struct{ Content map[string]json.RawMessage }
			if err := json.Unmarshal(red, &got); err != nil {
				t.Fatal(err)
			}
			if _, kept := got.Content[tt.key]; kept != want {
				t.Errorf("%s: v%s kept content.%s = %v, want %v (%s)", tt.name, version, tt.key, kept, want, red)
			}
		}
	}
}

func TestRedactTopLevelKeys(t *testing.T) {
	ev := `{"type":"m.room.member","state_key":"@a:x","room_id":"!r:x","sender":"@a:x","content":{"membership":"join"},
		"origin":"x","membership":"join","prev_state":[],"unsigned":{"age":1},"extra":1,"depth":3,"hashes":{"sha256":"h"},
		"signatures":{},"prev_events":[],"auth_events":[],"origin_server_ts":1,"event_id":"$e"}`
	tests := []struct {
		version string
		want    string
	}{
		{"1", `{"auth_events":[],"content":{"membership":"join"},"depth":3,"event_id":"$e","hashes":{"sha256":"h"},"membership":"join","origin":"x","origin_server_ts":1,"prev_events":[],"prev_state":[],"room_id":"!r:x","sender":"@a:x","signatures":{},"state_key":"@a:x","type":"m.room.member"}`},
		// v11 no longer protects origin, membership and prev_state.
		{"11", `{"auth_events":[],"content":{"membership":"join"},"depth":3,"event_id":"$e","hashes":{"sha256":"h"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:x","sender":"@a:x","signatures":{},"state_key":"@a:x","type":"m.room.member"}`},
	}
	for _, tt := range tests {
		got, err := Redact(tt.version, []byte(ev))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("Redact v%s =\n%s\nwant\n%s", tt.version, got, tt.want)
		}
	}
}

// The spec keeps third_party_invite.signed of member events from v11 (GMSL
// does not, which is why this package redacts by itself).
func TestRedactThirdPartyInviteSigned(t *testing.T) {
	ev := `{"type":"m.room.member","state_key":"@b:x","content":{"membership":"invite",
		"third_party_invite":{"display_name":"b","signed":{"mxid":"@b:x","token":"t","signatures":{}}}}}`
	want := map[string]string{
		"10": `{"content":{"membership":"invite"},"state_key":"@b:x","type":"m.room.member"}`,
		"11": `{"content":{"membership":"invite","third_party_invite":{"signed":{"mxid":"@b:x","signatures":{},"token":"t"}}},"state_key":"@b:x","type":"m.room.member"}`,
	}
	for v, w := range want {
		got, err := Redact(v, []byte(ev))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != w {
			t.Errorf("Redact v%s =\n%s\nwant\n%s", v, got, w)
		}
	}
}

// Apart from the third-party invite case, our redaction must agree with
// GMSL's, since GMSL's computes the IDs of events other GMSL-based servers
// see.
func TestRedactAgreesWithGMSL(t *testing.T) {
	events := []string{
		`{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","content":{"body":"<b>&</b>","n":[1,2]},"unsigned":{"a":1},"origin":"x","membership":"x","prev_state":[]}`,
		`{"type":"m.room.create","state_key":"","content":{"creator":"@a:x","room_version":"11","m.federate":true,"predecessor":{"room_id":"!o:x","event_id":"$e"}}}`,
		`{"type":"m.room.power_levels","state_key":"","content":{"users":{"@a:x":100},"ban":50,"invite":0,"notifications":{"room":50},"events":{"m.room.name":50}}}`,
		`{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!o:x"}]}}`,
		`{"type":"m.room.member","state_key":"@a:x","content":{"membership":"join","join_authorised_via_users_server":"@b:x","displayname":"A"}}`,
		`{"type":"m.room.history_visibility","state_key":"","content":{"history_visibility":"shared","x":1}}`,
		`{"type":"m.room.aliases","state_key":"x","content":{"aliases":["#a:x"]}}`,
		`{"type":"m.room.redaction","redacts":"$x","content":{"redacts":"$x","reason":"r"}}`,
	}
	for _, v := range Versions() {
		impl := gmsl.MustGetRoomVersion(gmsl.RoomVersion(v))
		for _, ev := range events {
			ours, err := Redact(v, []byte(ev))
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := impl.RedactEventJSON([]byte(ev))
			if err != nil {
				t.Fatal(err)
			}
			if theirs, err = CanonicalJSON(theirs); err != nil {
				t.Fatal(err)
			}
			if string(ours) != string(theirs) {
				t.Errorf("v%s: Redact(%s) =\n%s\nGMSL:\n%s", v, ev, ours, theirs)
			}
		}
	}
}

// A redacted event keeps its ID and its signature.
func TestRedactKeepsIDAndSignature(t *testing.T) {
	for _, version := range []string{"1", "3", "10", "11", "12"} {
		r := newTestRoom(t, version)
		r.mustAccept(member(alice, alice, "join"))
		msg := r.mustAccept(message(alice, "to be redacted"))
		red, err := Redact(version, msg.JSON())
		if err != nil {
			t.Fatal(err)
		}
		e, err := Parse(version, red)
		if err != nil {
			t.Fatalf("v%s: Parse(redacted): %v", version, err)
		}
		if e.ID() != msg.ID() {
			t.Errorf("v%s: redacted event ID %s, want %s", version, e.ID(), msg.ID())
		}
		if string(e.Content()) != "{}" {
			t.Errorf("v%s: redacted content %s", version, e.Content())
		}
		if err := VerifySignature(e, r.key.ServerName, r.key.KeyID, r.key.Private.Public().(ed25519.PublicKey)); err != nil {
			t.Errorf("v%s: signature of redacted event: %v", version, err)
		}
		if err := CheckContentHash(e); err == nil {
			t.Errorf("v%s: content hash still matches after redaction", version)
		}
	}
}
