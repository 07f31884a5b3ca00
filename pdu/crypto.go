package pdu

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Key is a server signing key, as loaded by package serverkey.
type Key struct {
	// ServerName is the name the signature is filed under.
	ServerName string
	// KeyID is the Matrix key ID, "ed25519:<version>".
	KeyID   string
	Private ed25519.PrivateKey
}

func (k Key) validate() error {
	if k.ServerName == "" {
		return errors.New("pdu: signing key has no server name")
	}
	if !strings.HasPrefix(k.KeyID, "ed25519:") || len(k.KeyID) == len("ed25519:") {
		return fmt.Errorf("pdu: signing key ID %q: want \"ed25519:<version>\"", k.KeyID)
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("pdu: signing key %s is %d bytes, want %d", k.KeyID, len(k.Private), ed25519.PrivateKeySize)
	}
	return nil
}

// contentHash is the SHA-256 of the event without its signatures, unsigned
// data and hashes: what the event's hashes.sha256 must hold.
func contentHash(ev object) []byte {
	sum := sha256.Sum256(ev.without("signatures", "unsigned", "hashes").encode())
	return sum[:]
}

// referenceHash is the SHA-256 of the redacted event without signatures and
// unsigned data; from room version 3 it is the event ID.
func referenceHash(r *versionRules, ev object) []byte {
	sum := sha256.Sum256(redactObject(r, ev).without("signatures", "unsigned").encode())
	return sum[:]
}

// eventIDOf returns the ID of the event: computed from the reference hash
// from room version 3, read from the event for v1 and v2. A computed ID is
// not part of what it is computed from, so an event_id field a careless
// sender included is ignored.
func eventIDOf(r *versionRules, ev object) (string, error) {
	switch r.eventID {
	case eventIDRandom:
		var id string
		if err := json.Unmarshal(ev["event_id"], &id); err != nil || !strings.HasPrefix(id, "$") || !strings.Contains(id, ":") {
			return "", fmt.Errorf("pdu: room version %s event needs an event_id of the form $id:server", r.id)
		}
		return id, nil
	case eventIDHashStd:
		return "$" + base64.RawStdEncoding.EncodeToString(referenceHash(r, ev.without("event_id"))), nil
	default:
		return "$" + base64.RawURLEncoding.EncodeToString(referenceHash(r, ev.without("event_id"))), nil
	}
}

// hashAndSignEvent sets hashes.sha256 to the content hash and adds key's
// signature over the redacted event, as the spec's event signing algorithm
// does. Other signatures already present are kept.
func hashAndSignEvent(r *versionRules, ev object, key Key) (object, error) {
	hashes, err := json.Marshal(map[string]string{
		"sha256": base64.RawStdEncoding.EncodeToString(contentHash(ev)),
	})
	if err != nil {
		return nil, err
	}
	ev = ev.without()
	ev["hashes"] = hashes
	// Signing the redacted form keeps the signature valid after the event
	// is redacted.
	return addSignature(ev, redactObject(r, ev), key)
}

// addSignature signs the canonical form of signed (without signatures and
// unsigned) and files the signature in target's signatures under key.
func addSignature(target, signed object, key Key) (object, error) {
	if err := key.validate(); err != nil {
		return nil, err
	}
	sig := ed25519.Sign(key.Private, signed.without("signatures", "unsigned").encode())

	all := object{}
	if raw, ok := target["signatures"]; ok {
		var err error
		if all, err = splitCanonicalObject(raw); err != nil {
			return nil, fmt.Errorf("pdu: signatures: %w", err)
		}
	}
	mine := object{}
	if raw, ok := all[key.ServerName]; ok {
		var err error
		if mine, err = splitCanonicalObject(raw); err != nil {
			return nil, fmt.Errorf("pdu: signatures of %s: %w", key.ServerName, err)
		}
	}
	mine[key.KeyID] = appendString(nil, base64.RawStdEncoding.EncodeToString(sig))
	all[key.ServerName] = mine.encode()
	out := target.without()
	out["signatures"] = all.encode()
	return out, nil
}

// verifyObject checks serverName's signature with keyID over o.
func verifyObject(o object, serverName, keyID string, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("pdu: public key for %s is %d bytes, want %d", keyID, len(pub), ed25519.PublicKeySize)
	}
	// Decode only the signature we need, so that junk filed under other
	// servers or keys cannot make a good signature unreadable.
	var sigs map[string]json.RawMessage
	var mine map[string]json.RawMessage
	var b64 string
	if err := json.Unmarshal(o["signatures"], &sigs); err != nil {
		return errors.New("pdu: no signatures object")
	}
	if err := json.Unmarshal(sigs[serverName], &mine); err != nil || mine[keyID] == nil {
		return fmt.Errorf("pdu: no signature from %s with key %s", serverName, keyID)
	}
	if err := json.Unmarshal(mine[keyID], &b64); err != nil {
		return fmt.Errorf("pdu: malformed signature from %s with key %s", serverName, keyID)
	}
	// Unpadded is what the spec mandates, but padded signatures exist in the
	// wild and decode to the same bytes.
	sig, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("pdu: malformed signature from %s with key %s", serverName, keyID)
	}
	if !ed25519.Verify(pub, o.without("signatures", "unsigned").encode(), sig) {
		return fmt.Errorf("pdu: bad signature from %s with key %s", serverName, keyID)
	}
	return nil
}

// SignJSON signs a JSON object (a server key response, a federation request)
// with key as the spec's "Signing JSON" describes: the signature covers the
// canonical form without "signatures" and "unsigned", and is added to any
// signatures already present. The result is canonical JSON.
func SignJSON(key Key, data []byte) ([]byte, error) {
	o, err := parseObject(data, numbersCanonical)
	if err != nil {
		return nil, err
	}
	signed, err := addSignature(o, o, key)
	if err != nil {
		return nil, err
	}
	return signed.encode(), nil
}

// VerifyJSON checks that the JSON object data carries a valid signature by
// serverName with the key keyID whose public half is pub.
func VerifyJSON(data []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	o, err := parseObject(data, numbersCanonical)
	if err != nil {
		return err
	}
	return verifyObject(o, serverName, keyID, pub)
}

// VerifySignature checks e's signature by serverName with the key keyID
// whose public half is pub. The signature covers the redacted event, so it
// stays checkable after redaction. Which servers must have signed (the
// sender's, and for invites the invitee's) is the caller's decision.
func VerifySignature(e *Event, serverName, keyID string, pub ed25519.PublicKey) error {
	if e == nil {
		return errNilEvent
	}
	r, err := lookupVersion(e.version)
	if err != nil {
		return err
	}
	o, err := parseObject(e.json, numbersLegacy)
	if err != nil {
		return err
	}
	if err := verifyObject(redactObject(r, o), serverName, keyID, pub); err != nil {
		return fmt.Errorf("%w (event %s)", err, e.id)
	}
	return nil
}

// CheckContentHash recomputes e's content hash and compares it with the one
// the event carries. A mismatch means the content was altered after
// signing; the spec's answer for received events is to treat them as
// redacted, which is the caller's choice to make.
func CheckContentHash(e *Event) error {
	if e == nil {
		return errNilEvent
	}
	o, err := parseObject(e.json, numbersLegacy)
	if err != nil {
		return err
	}
	return checkContentHash(o)
}

// errHashMismatch: the content was altered after the event was hashed.
var errHashMismatch = errors.New("pdu: content hash mismatch")

func checkContentHash(o object) error {
	var hashes struct {
		SHA256 *string `json:"sha256"`
	}
	if raw, ok := o["hashes"]; !ok {
		return errors.New("pdu: event has no hashes")
	} else if err := json.Unmarshal(raw, &hashes); err != nil || hashes.SHA256 == nil {
		return errors.New("pdu: event has no hashes.sha256 string")
	}
	want, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(*hashes.SHA256, "="))
	if err != nil {
		return errors.New("pdu: hashes.sha256 is not base64")
	}
	if !bytes.Equal(want, contentHash(o)) {
		return errHashMismatch
	}
	return nil
}
