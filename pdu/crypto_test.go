package pdu

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
)

// specKey is the key of the spec's cryptographic test vectors (appendix,
// "Cryptographic Test Vectors").
func specKey(t *testing.T) Key {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	if err != nil {
		t.Fatal(err)
	}
	return Key{ServerName: "domain", KeyID: "ed25519:1", Private: ed25519.NewKeyFromSeed(seed)}
}

func mustCanonical(t *testing.T, s string) string {
	t.Helper()
	c, err := CanonicalJSON([]byte(s))
	if err != nil {
		t.Fatalf("CanonicalJSON(%s): %v", s, err)
	}
	return string(c)
}

func TestSignJSONSpecVectors(t *testing.T) {
	key := specKey(t)
	tests := []struct{ in, want string }{
		{`{}`, `{
    "signatures": {
        "domain": {
            "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        }
    }
}`},
		{`{
    "one": 1,
    "two": "Two"
}`, `{
    "one": 1,
    "signatures": {
        "domain": {
            "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        }
    },
    "two": "Two"
}`},
	}
	for _, tt := range tests {
		got, err := SignJSON(key, []byte(tt.in))
		if err != nil {
			t.Fatalf("SignJSON(%s): %v", tt.in, err)
		}
		if want := mustCanonical(t, tt.want); string(got) != want {
			t.Errorf("SignJSON(%s) =\n%s\nwant\n%s", tt.in, got, want)
		}
		if err := VerifyJSON(got, "domain", "ed25519:1", key.Private.Public().(ed25519.PublicKey)); err != nil {
			t.Errorf("VerifyJSON of signed %s: %v", tt.in, err)
		}
	}
}

func TestSignJSONKeepsUnsignedAndOtherSignatures(t *testing.T) {
	key := specKey(t)
	// Junk under other servers must neither be lost nor spoil verification.
	in := `{"a":1,"unsigned":{"age_ts":5},"signatures":{"other":{"ed25519:x":"abc"},"junk":5}}`
	got, err := SignJSON(key, []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"unsigned":{"age_ts":5}`, `"other":{"ed25519:x":"abc"}`, `"junk":5`, `"domain":{"ed25519:1":`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("signed JSON %s lacks %s", got, want)
		}
	}
	// unsigned is not covered by the signature, so changing it keeps it valid.
	changed := strings.Replace(string(got), `"age_ts":5`, `"age_ts":6`, 1)
	pub := key.Private.Public().(ed25519.PublicKey)
	if err := VerifyJSON([]byte(changed), "domain", "ed25519:1", pub); err != nil {
		t.Errorf("VerifyJSON after changing unsigned: %v", err)
	}
	tampered := strings.Replace(string(got), `"a":1`, `"a":2`, 1)
	if err := VerifyJSON([]byte(tampered), "domain", "ed25519:1", pub); err == nil {
		t.Error("VerifyJSON accepted tampered JSON")
	}
	if err := VerifyJSON(got, "domain", "ed25519:2", pub); err == nil {
		t.Error("VerifyJSON accepted an absent key ID")
	}
}

// The spec's "Event Signing" vectors: the content hash is added and the
// signature covers the redacted event. Both use the v1 event layout.
func TestEventSigningSpecVectors(t *testing.T) {
	key := specKey(t)
	tests := []struct{ name, in, want string }{
		{"minimal", `{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}`, `{
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {
        "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {
        "age_ts": 1000000
    }
}`},
		{"redactable content", `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}`, `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "hashes": {
        "sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {
        "age_ts": 1000000
    }
}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := versions["1"]
			o, err := parseObject([]byte(tt.in), r.inputMode())
			if err != nil {
				t.Fatal(err)
			}
			signed, err := hashAndSignEvent(r, o, key)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(signed.encode()), mustCanonical(t, tt.want); got != want {
				t.Errorf("signed event =\n%s\nwant\n%s", got, want)
			}
			if err := checkContentHash(signed); err != nil {
				t.Errorf("checkContentHash: %v", err)
			}
		})
	}
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }
