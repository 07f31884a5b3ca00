package e2ee

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"

	"homeserver/mxhttp"
)

// CrossSigningUpload is the body of /keys/device_signing/upload (without
// its auth).
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
}

func present(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

func (u CrossSigningUpload) byType() map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	if present(u.MasterKey) {
		m[Master] = u.MasterKey
	}
	if present(u.SelfSigningKey) {
		m[SelfSigning] = u.SelfSigningKey
	}
	if present(u.UserSigningKey) {
		m[UserSigning] = u.UserSigningKey
	}
	return m
}

// CrossSigningNeedsAuth reports whether an upload must pass user-interactive
// authentication: not when the user has no master key yet, nor when every
// key sent is exactly the one stored (a retried first upload).
func (s *Service) CrossSigningNeedsAuth(ctx context.Context, userID string, u CrossSigningUpload) (bool, error) {
	existing, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return false, err
	}
	if _, ok := existing[Master]; !ok {
		return false, nil
	}
	for typ, raw := range u.byType() {
		old, ok := existing[typ]
		if !ok {
			return true, nil
		}
		stored, err := storable(raw)
		if err != nil {
			return true, nil // the upload will fail on its own
		}
		if !bytes.Equal(stored, old.JSON) {
			return true, nil
		}
	}
	return false, nil
}

// UploadCrossSigning publishes a user's cross-signing keys. The
// self-signing and user-signing keys must be signed by the master key sent
// with them or, failing one, the stored master key; no key may take the ID
// of one of the user's devices.
func (s *Service) UploadCrossSigning(ctx context.Context, userID string, u CrossSigningUpload) error {
	keys := u.byType()
	if len(keys) == 0 {
		return mxhttp.MissingParam("No cross-signing keys given")
	}
	existing, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return err
	}
	parsed := map[string]CrossSigningKey{}
	types := make([]string, 0, len(keys))
	for typ := range keys {
		types = append(types, typ)
	}
	sort.Strings(types)
	for _, typ := range types {
		raw := keys[typ]
		o, err := decodeObject(raw, typ+"_key")
		if err != nil {
			return err
		}
		pub, err := crossSigningPublicKey(o, userID, typ)
		if err != nil {
			return err
		}
		stored, err := storable(raw)
		if err != nil {
			return err
		}
		parsed[typ] = CrossSigningKey{UserID: userID, Type: typ, PublicKey: pub, JSON: stored}
	}
	master, ok := parsed[Master]
	if !ok {
		if master, ok = existing[Master]; !ok {
			return mxhttp.MissingParam("No master signing key is available: upload one first")
		}
	}
	masterPub, _ := decodeEd25519(master.PublicKey)
	for _, typ := range []string{SelfSigning, UserSigning} {
		k, ok := parsed[typ]
		if !ok {
			continue
		}
		if err := verify(k.JSON, userID, "ed25519:"+master.PublicKey, masterPub); err != nil {
			return mxhttp.InvalidSignature("The %s key is not signed by the master key", typ)
		}
	}
	devices, err := s.store.DeviceIDs(ctx, userID)
	if err != nil {
		return err
	}
	for _, d := range devices {
		for _, k := range parsed {
			if k.PublicKey == d {
				return mxhttp.Forbidden("Key ID in use: %s is one of your devices", d)
			}
		}
	}
	list := make([]CrossSigningKey, 0, len(parsed))
	for _, typ := range types {
		list = append(list, parsed[typ])
	}
	if err := s.store.PutCrossSigningKeys(ctx, userID, list); err != nil {
		return err
	}
	s.DeviceListChanged(userID)
	return nil
}

// SignatureFailure is one entry of the failures of /keys/signatures/upload.
type SignatureFailure struct {
	Errcode string `json:"errcode"`
	Error   string `json:"error"`
}

func failure(e *mxhttp.Error) SignatureFailure {
	return SignatureFailure{Errcode: e.Code, Error: e.Message}
}

// UploadSignatures stores the signatures a user made: of their own devices
// with their self-signing key, of their own master key with one of their
// devices, and of other users' master keys with their user-signing key.
// Each signature is checked; those that fail are reported, the rest kept.
func (s *Service) UploadSignatures(ctx context.Context, userID string, body map[string]map[string]json.RawMessage) (map[string]map[string]SignatureFailure, error) {
	failures := map[string]map[string]SignatureFailure{}
	fail := func(user, key string, e *mxhttp.Error) {
		if failures[user] == nil {
			failures[user] = map[string]SignatureFailure{}
		}
		failures[user][key] = failure(e)
	}
	mine, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return nil, err
	}
	var accepted []Signature
	changed := map[string]bool{}
	users := make([]string, 0, len(body))
	for u := range body {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, target := range users {
		objs := body[target]
		keyIDs := make([]string, 0, len(objs))
		for k := range objs {
			keyIDs = append(keyIDs, k)
		}
		sort.Strings(keyIDs)
		var theirs map[string]CrossSigningKey
		if target != userID {
			if !s.IsLocal(target) {
				for _, k := range keyIDs {
					fail(target, k, mxhttp.Unknown("Signing keys of users on other servers is not available yet"))
				}
				continue
			}
			if theirs, err = s.store.CrossSigningKeys(ctx, target); err != nil {
				return nil, err
			}
		}
		for _, keyID := range keyIDs {
			raw := objs[keyID]
			if _, err := decodeObject(raw, "signed object"); err != nil {
				fail(target, keyID, mxhttp.BadJSON("The signed object must be a JSON object"))
				continue
			}
			var sigs []Signature
			var e *mxhttp.Error
			if target == userID {
				sigs, e = s.ownSignatures(ctx, userID, keyID, raw, mine)
			} else {
				sigs, e = s.userSignature(userID, target, keyID, raw, mine, theirs)
			}
			if e != nil {
				fail(target, keyID, e)
				continue
			}
			accepted = append(accepted, sigs...)
			// Own keys: everyone tracking the user re-queries. Another
			// user's key signed by the user-signing key: only the signer
			// sees that signature, so only their devices re-query.
			changed[userID] = true
		}
	}
	if len(accepted) > 0 {
		list := make([]string, 0, len(changed))
		for u := range changed {
			list = append(list, u)
		}
		sort.Strings(list)
		if err := s.store.PutSignatures(ctx, accepted, list); err != nil {
			return nil, err
		}
		for _, u := range list {
			s.DeviceListChanged(u)
		}
	}
	return failures, nil
}

// ownSignatures checks the signatures a user made of their own keys: a
// device signed with the self-signing key, or the master key signed with a
// device.
func (s *Service) ownSignatures(ctx context.Context, userID, keyID string, raw json.RawMessage, mine map[string]CrossSigningKey) ([]Signature, *mxhttp.Error) {
	o, _ := decodeObject(raw, "signed object")
	signed := o.Signatures[userID]
	if master, ok := mine[Master]; ok && keyID == master.PublicKey {
		if e := sameObject(master.JSON, raw); e != nil {
			return nil, e
		}
		var existing map[string]map[string]string
		_ = json.Unmarshal(master.JSON, &struct {
			Signatures *map[string]map[string]string `json:"signatures"`
		}{&existing})
		var out []Signature
		already := false
		for sigKeyID, sig := range signed {
			if existing[userID][sigKeyID] == sig {
				// Part of the key as uploaded (clients sign the master
				// key with their device before publishing it, and may
				// send that signature again): nothing to add.
				already = true
				continue
			}
			device, ok := cutEd25519(sigKeyID)
			if !ok {
				continue
			}
			keys, err := s.store.DeviceKeys(ctx, userID, []string{device})
			if err != nil {
				return nil, mxhttp.Internal()
			}
			if len(keys) != 1 {
				return nil, mxhttp.NotFound("Unknown device %s", device)
			}
			dk, _ := decodeObject(keys[0].JSON, "device keys")
			pub, ok := decodeEd25519(dk.Keys["ed25519:"+device])
			if !ok {
				return nil, mxhttp.InvalidSignature("Device %s has no ed25519 key", device)
			}
			if err := verify(raw, userID, sigKeyID, pub); err != nil {
				return nil, mxhttp.InvalidSignature("Invalid signature by device %s", device)
			}
			out = append(out, Signature{TargetUser: userID, TargetKey: keyID, SignerUser: userID, SignerKeyID: sigKeyID, Signature: sig})
		}
		if len(out) == 0 && !already {
			return nil, mxhttp.InvalidSignature("No signature by one of your devices")
		}
		return out, nil
	}
	ssk, ok := mine[SelfSigning]
	if !ok {
		return nil, mxhttp.MissingParam("No self-signing key is published")
	}
	keys, err := s.store.DeviceKeys(ctx, userID, []string{keyID})
	if err != nil {
		return nil, mxhttp.Internal()
	}
	if len(keys) != 1 {
		return nil, mxhttp.NotFound("Unknown device or key %s", keyID)
	}
	if e := sameObject(keys[0].JSON, raw); e != nil {
		return nil, e
	}
	sigKeyID := "ed25519:" + ssk.PublicKey
	sig, ok := signed[sigKeyID]
	if !ok {
		return nil, mxhttp.InvalidSignature("No signature by the self-signing key")
	}
	pub, _ := decodeEd25519(ssk.PublicKey)
	if err := verify(raw, userID, sigKeyID, pub); err != nil {
		return nil, mxhttp.InvalidSignature("Invalid signature by the self-signing key")
	}
	return []Signature{{TargetUser: userID, TargetKey: keyID, SignerUser: userID, SignerKeyID: sigKeyID, Signature: sig}}, nil
}

// userSignature checks a signature of another user's master key by the
// signer's user-signing key.
func (s *Service) userSignature(signer, target, keyID string, raw json.RawMessage, mine, theirs map[string]CrossSigningKey) ([]Signature, *mxhttp.Error) {
	master, ok := theirs[Master]
	if !ok || master.PublicKey != keyID {
		return nil, mxhttp.NotFound("%s has no master key %s", target, keyID)
	}
	if e := sameObject(master.JSON, raw); e != nil {
		return nil, e
	}
	usk, ok := mine[UserSigning]
	if !ok {
		return nil, mxhttp.MissingParam("No user-signing key is published")
	}
	o, _ := decodeObject(raw, "signed object")
	sigKeyID := "ed25519:" + usk.PublicKey
	sig, ok := o.Signatures[signer][sigKeyID]
	if !ok {
		return nil, mxhttp.InvalidSignature("No signature by the user-signing key")
	}
	pub, _ := decodeEd25519(usk.PublicKey)
	if err := verify(raw, signer, sigKeyID, pub); err != nil {
		return nil, mxhttp.InvalidSignature("Invalid signature by the user-signing key")
	}
	return []Signature{{TargetUser: target, TargetKey: keyID, SignerUser: signer, SignerKeyID: sigKeyID, Signature: sig}}, nil
}

// sameObject checks that a signed object is the stored one, signatures and
// unsigned data aside.
func sameObject(stored, sent json.RawMessage) *mxhttp.Error {
	a, err := canonicalWithout(stored, "signatures", "unsigned")
	if err != nil {
		return mxhttp.Internal()
	}
	b, err := canonicalWithout(sent, "signatures", "unsigned")
	if err != nil {
		return mxhttp.BadJSON("The signed object is not valid JSON")
	}
	if !bytes.Equal(a, b) {
		return mxhttp.InvalidParam("The signed object does not match the published key")
	}
	return nil
}

func cutEd25519(keyID string) (string, bool) {
	id, ok := strings.CutPrefix(keyID, "ed25519:")
	return id, ok && id != ""
}
