package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// signedObject is the common shape of device keys and cross-signing keys.
type signedObject struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Usage      []string                     `json:"usage"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// decodeObject reads a key object, refusing anything but a JSON object of
// the expected field types and a bounded size.
func decodeObject(raw json.RawMessage, what string) (signedObject, error) {
	var o signedObject
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return o, mxhttp.BadJSON("%s must be a JSON object", what)
	}
	if len(raw) > maxKeyObject {
		return o, mxhttp.TooLarge("%s is too large", what)
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return o, mxhttp.BadJSON("%s is malformed: %v", what, err)
	}
	return o, nil
}

// canonicalWithout returns the canonical JSON of the object without the
// named members: what signatures cover (without signatures and unsigned), or
// what must not change between uploads.
func canonicalWithout(raw json.RawMessage, drop ...string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, mxhttp.BadJSON("Key object is malformed")
	}
	for _, k := range drop {
		delete(m, k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, mxhttp.BadJSON("Key object is malformed")
	}
	c, err := pdu.CanonicalJSON(b)
	if err != nil {
		return nil, mxhttp.BadJSON("Key object is not canonical JSON: %v", err)
	}
	return c, nil
}

// storable is the object as kept: canonical, without unsigned data.
func storable(raw json.RawMessage) (json.RawMessage, error) {
	b, err := canonicalWithout(raw, "unsigned")
	return json.RawMessage(b), err
}

// decodeEd25519 reads an unpadded (or padded) base64 ed25519 public key.
func decodeEd25519(s string) (ed25519.PublicKey, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// verify checks that raw carries a good signature by signer with keyID
// ("ed25519:<id>") whose public half is pub.
func verify(raw json.RawMessage, signer, keyID string, pub ed25519.PublicKey) error {
	if err := pdu.VerifyJSON(raw, signer, keyID, pub); err != nil {
		return mxhttp.InvalidSignature("Invalid signature %s of %s", keyID, signer)
	}
	return nil
}

// crossSigningPublicKey checks the shape of an uploaded cross-signing key of
// type typ for user and returns its public key: one ed25519 key whose ID is
// its own value.
func crossSigningPublicKey(o signedObject, user, typ string) (string, error) {
	if o.UserID != user {
		return "", mxhttp.InvalidParam("The %s key must have user_id %s", typ, user)
	}
	if len(o.Usage) == 0 || !containsString(o.Usage, typ) {
		return "", mxhttp.InvalidParam("The %s key must have %q in its usage", typ, typ)
	}
	if len(o.Keys) != 1 {
		return "", mxhttp.InvalidParam("The %s key must hold exactly one key", typ)
	}
	for id, v := range o.Keys {
		pub, ok := strings.CutPrefix(id, "ed25519:")
		if !ok || pub != v {
			return "", mxhttp.InvalidParam("The %s key must be an ed25519 key named by its public key", typ)
		}
		if _, ok := decodeEd25519(v); !ok {
			return "", mxhttp.InvalidParam("The %s key is not a valid ed25519 public key", typ)
		}
		return v, nil
	}
	return "", nil // unreachable: one entry
}

func containsString(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// splitKeyName splits "<algorithm>:<key_id>".
func splitKeyName(name string) (alg, id string, ok bool) {
	alg, id, ok = strings.Cut(name, ":")
	return alg, id, ok && alg != "" && id != "" && len(name) <= 255
}
