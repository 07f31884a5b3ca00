package pdu

import (
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"
)

func otherKey() Key {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	return Key{ServerName: "remote.test", KeyID: "ed25519:r", Private: ed25519.NewKeyFromSeed(seed)}
}

// A make_join template from the resident server becomes an event signed by
// the joining server, with the resident's prev/auth events kept.
func TestSignTemplate(t *testing.T) {
	joiner := otherKey()
	for _, tc := range []struct{ version, template string }{
		{"10", `{"type":"m.room.member","room_id":"!r:example.org","sender":"@bob:remote.test","state_key":"@bob:remote.test","content":{"membership":"join"},"depth":5,"prev_events":["$p"],"auth_events":["$a","$b"],"origin":"example.org","origin_server_ts":1}`},
		{"12", `{"type":"m.room.member","room_id":"!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","sender":"@bob:remote.test","state_key":"@bob:remote.test","content":{"membership":"join"},"depth":5,"prev_events":["$p"],"auth_events":["$a"],"origin_server_ts":1,"signatures":{"x":{}},"hashes":{"sha256":"junk"}}`},
		{"1", `{"type":"m.room.member","event_id":"$abc:example.org","room_id":"!r:example.org","sender":"@bob:remote.test","state_key":"@bob:remote.test","content":{"membership":"join"},"depth":5,"prev_events":[["$p:example.org",{"sha256":"AAAA"}]],"auth_events":[],"origin_server_ts":1}`},
	} {
		t.Run("v"+tc.version, func(t *testing.T) {
			ev, err := SignTemplate(tc.version, []byte(tc.template), joiner, 1234)
			if err != nil {
				t.Fatal(err)
			}
			if ev.OriginServerTS() != 1234 || ev.Depth() != 5 || ev.Membership() != "join" || len(ev.PrevEventIDs()) != 1 {
				t.Errorf("event %s", ev.JSON())
			}
			if err := VerifySignature(ev, "remote.test", "ed25519:r", joiner.Private.Public().(ed25519.PublicKey)); err != nil {
				t.Error(err)
			}
			if err := CheckContentHash(ev); err != nil {
				t.Error(err)
			}
			if strings.Contains(string(ev.JSON()), `"x":{}`) || strings.Contains(string(ev.JSON()), "junk") {
				t.Errorf("old signatures or hashes kept: %s", ev.JSON())
			}
			again, err := ParseUntrusted(tc.version, ev.JSON())
			if err != nil || again.ID() != ev.ID() {
				t.Errorf("reparse: %v, %s vs %s", err, again.ID(), ev.ID())
			}
			if tc.version == "1" && (ev.ID() != "$abc:example.org" || !strings.Contains(string(ev.JSON()), `"origin":"remote.test"`)) {
				t.Errorf("v1: id %s json %s", ev.ID(), ev.JSON())
			}
		})
	}
	// Another server's user cannot be signed for.
	if _, err := SignTemplate("10", []byte(`{"type":"m.room.member","room_id":"!r:x","sender":"@eve:elsewhere","state_key":"@eve:elsewhere","content":{"membership":"join"},"depth":1,"prev_events":[],"auth_events":[]}`), joiner, 1); err == nil {
		t.Error("signed a template for another server's user")
	}
	for _, bad := range []string{`not json`, `{"sender":1}`, `[]`} {
		if _, err := SignTemplate("10", []byte(bad), joiner, 1); err == nil {
			t.Errorf("signed %s", bad)
		}
	}
}

// An invite signed by the inviting server gets the invitee's server's
// signature too; both verify, and the ID does not change.
func TestCoSign(t *testing.T) {
	inviter := testKey(t)
	sk := "@bob:remote.test"
	ev, err := SignTemplate("10", []byte(`{"type":"m.room.member","room_id":"!r:example.org","sender":"@alice:example.org","state_key":"`+sk+`","content":{"membership":"invite"},"depth":3,"prev_events":["$p"],"auth_events":["$a"]}`), inviter, 5)
	if err != nil {
		t.Fatal(err)
	}
	co, err := CoSign(ev, otherKey())
	if err != nil {
		t.Fatal(err)
	}
	if co.ID() != ev.ID() {
		t.Errorf("ID changed: %s -> %s", ev.ID(), co.ID())
	}
	if err := VerifySignature(co, "example.org", inviter.KeyID, inviter.Private.Public().(ed25519.PublicKey)); err != nil {
		t.Error(err)
	}
	if err := VerifySignature(co, "remote.test", "ed25519:r", otherKey().Private.Public().(ed25519.PublicKey)); err != nil {
		t.Error(err)
	}
	if got := SignatureKeyIDs(co, "remote.test"); !slices.Equal(got, []string{"ed25519:r"}) {
		t.Errorf("key IDs %v", got)
	}
}

func TestSigningServers(t *testing.T) {
	k := otherKey()
	join, err := SignTemplate("10", []byte(`{"type":"m.room.member","room_id":"!r:example.org","sender":"@bob:remote.test","state_key":"@bob:remote.test","content":{"membership":"join","join_authorised_via_users_server":"@alice:example.org"},"depth":3,"prev_events":[],"auth_events":[]}`), k, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := SigningServers(join); !slices.Equal(got, []string{"remote.test", "example.org"}) {
		t.Errorf("restricted join: %v", got)
	}
	v1, err := SignTemplate("1", []byte(`{"type":"m.room.message","event_id":"$e:third.test","room_id":"!r:example.org","sender":"@bob:remote.test","content":{},"depth":3,"prev_events":[],"auth_events":[]}`), k, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := SigningServers(v1); !slices.Equal(got, []string{"remote.test", "third.test"}) {
		t.Errorf("v1: %v", got)
	}
}

// A received event whose content was changed after hashing is kept
// redacted; its signature still verifies.
func TestParseReceivedHashMismatch(t *testing.T) {
	k := otherKey()
	ev, err := SignTemplate("10", []byte(`{"type":"m.room.message","room_id":"!r:example.org","sender":"@bob:remote.test","content":{"body":"hi"},"depth":3,"prev_events":[],"auth_events":[]}`), k, 5)
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(strings.Replace(string(ev.JSON()), `"body":"hi"`, `"body":"bye"`, 1))
	if _, err := ParseUntrusted("10", tampered); err == nil {
		t.Fatal("ParseUntrusted accepted a tampered event")
	}
	got, redacted, err := ParseReceived("10", tampered)
	if err != nil || !redacted {
		t.Fatalf("ParseReceived: %v, redacted %v", err, redacted)
	}
	if got.ID() != ev.ID() || string(got.Content()) != "{}" {
		t.Errorf("id %s (want %s), content %s", got.ID(), ev.ID(), got.Content())
	}
	if err := VerifySignature(got, "remote.test", "ed25519:r", k.Private.Public().(ed25519.PublicKey)); err != nil {
		t.Error(err)
	}
	if _, red, err := ParseReceived("10", ev.JSON()); err != nil || red {
		t.Errorf("untampered: %v %v", err, red)
	}
}
