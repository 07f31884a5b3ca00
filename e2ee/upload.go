package e2ee

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"homeserver/mxhttp"
)

// UploadRequest is the body of /keys/upload.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// UploadKeys publishes a device's identity keys and its one-time and
// fallback keys, and returns its one-time key counts. Identity keys must
// belong to the device and be signed by it, and may not change once
// published; signed one-time and fallback keys must be signed by the
// device's ed25519 key.
func (s *Service) UploadKeys(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	if deviceID == "" {
		return nil, mxhttp.MissingParam("Uploading keys needs a device: log in, or pass device_id as an application service")
	}
	if len(req.OneTimeKeys)+len(req.FallbackKeys) > MaxKeysPerUpload {
		return nil, mxhttp.TooLarge("At most %d keys may be uploaded at once", MaxKeysPerUpload)
	}
	up := Upload{UserID: userID, DeviceID: deviceID, Now: time.Now().UnixMilli()}
	var signing ed25519.PublicKey
	if len(req.DeviceKeys) > 0 && !bytes.Equal(bytes.TrimSpace(req.DeviceKeys), []byte("null")) {
		stored, pub, changed, err := s.checkDeviceKeys(ctx, userID, deviceID, req.DeviceKeys)
		if err != nil {
			return nil, err
		}
		up.DeviceKeys, up.DeviceKeysChanged, signing = stored, changed, pub
	}
	if len(req.OneTimeKeys) > 0 || len(req.FallbackKeys) > 0 {
		if signing == nil {
			existing, err := s.store.DeviceKeys(ctx, userID, []string{deviceID})
			if err != nil {
				return nil, err
			}
			if len(existing) == 1 {
				o, err := decodeObject(existing[0].JSON, "device_keys")
				if err != nil {
					return nil, err
				}
				signing, _ = decodeEd25519(o.Keys["ed25519:"+deviceID])
			}
		}
		var err error
		if up.OneTimeKeys, err = s.checkKeys(userID, deviceID, signing, req.OneTimeKeys, "one_time_keys"); err != nil {
			return nil, err
		}
		if up.FallbackKeys, err = s.checkKeys(userID, deviceID, signing, req.FallbackKeys, "fallback_keys"); err != nil {
			return nil, err
		}
		if err := s.checkReused(ctx, userID, deviceID, up.OneTimeKeys); err != nil {
			return nil, err
		}
		if err := oneFallbackPerAlgorithm(up.FallbackKeys); err != nil {
			return nil, err
		}
	}
	counts, err := s.store.UploadKeys(ctx, up)
	if err != nil {
		return nil, err
	}
	if up.DeviceKeysChanged {
		s.DeviceListChanged(userID)
	}
	if len(up.OneTimeKeys) > 0 || len(up.FallbackKeys) > 0 {
		s.keysChanged(DeviceRef{UserID: userID, DeviceID: deviceID})
	}
	if counts == nil {
		counts = map[string]int{}
	}
	return counts, nil
}

// checkDeviceKeys validates a device's identity keys and returns them as
// stored, the device's ed25519 key, and whether they are news to others.
func (s *Service) checkDeviceKeys(ctx context.Context, userID, deviceID string, raw json.RawMessage) (json.RawMessage, ed25519.PublicKey, bool, error) {
	o, err := decodeObject(raw, "device_keys")
	if err != nil {
		return nil, nil, false, err
	}
	if o.UserID != userID {
		return nil, nil, false, mxhttp.InvalidParam("device_keys.user_id must be %s", userID)
	}
	if o.DeviceID != deviceID {
		return nil, nil, false, mxhttp.InvalidParam("device_keys.device_id must be %s, the device making the request", deviceID)
	}
	if o.Algorithms == nil {
		return nil, nil, false, mxhttp.MissingParam("device_keys.algorithms is required")
	}
	for name, v := range o.Keys {
		_, id, ok := splitKeyName(name)
		if !ok || id != deviceID || v == "" {
			return nil, nil, false, mxhttp.InvalidParam("device_keys.keys must be named <algorithm>:%s", deviceID)
		}
	}
	pub, ok := decodeEd25519(o.Keys["ed25519:"+deviceID])
	if !ok {
		return nil, nil, false, mxhttp.InvalidParam("device_keys.keys needs a valid ed25519:%s key", deviceID)
	}
	if err := verify(raw, userID, "ed25519:"+deviceID, pub); err != nil {
		return nil, nil, false, err
	}
	stored, err := storable(raw)
	if err != nil {
		return nil, nil, false, err
	}
	existing, err := s.store.DeviceKeys(ctx, userID, []string{deviceID})
	if err != nil {
		return nil, nil, false, err
	}
	if len(existing) == 0 {
		return stored, pub, true, nil
	}
	// A device's identity is fixed: a new key would be a new device, and
	// would break every session others have with this one.
	oldCore, err := canonicalWithout(existing[0].JSON, "signatures", "unsigned")
	if err != nil {
		return nil, nil, false, err
	}
	newCore, err := canonicalWithout(raw, "signatures", "unsigned")
	if err != nil {
		return nil, nil, false, err
	}
	if !bytes.Equal(oldCore, newCore) {
		return nil, nil, false, mxhttp.InvalidParam("Device keys for %s are already published and may not change; log in as a new device", deviceID)
	}
	return stored, pub, !bytes.Equal(existing[0].JSON, stored), nil
}

// checkKeys validates one-time or fallback keys: well-formed names, string
// values or key objects, and for signed algorithms a good signature by the
// device.
func (s *Service) checkKeys(userID, deviceID string, signing ed25519.PublicKey, keys map[string]json.RawMessage, field string) ([]Key, error) {
	out := make([]Key, 0, len(keys))
	names := make([]string, 0, len(keys))
	for name := range keys {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		raw := bytes.TrimSpace(keys[name])
		alg, id, ok := splitKeyName(name)
		if !ok {
			return nil, mxhttp.InvalidParam("%s: key names must be <algorithm>:<key_id>, not %q", field, name)
		}
		if len(raw) > maxKeyObject {
			return nil, mxhttp.TooLarge("%s: key %s is too large", field, name)
		}
		switch {
		case len(raw) > 0 && raw[0] == '"':
			var v string
			if err := json.Unmarshal(raw, &v); err != nil || v == "" {
				return nil, mxhttp.BadJSON("%s: key %s must be a non-empty string or a key object", field, name)
			}
			if strings.HasPrefix(alg, "signed_") {
				return nil, mxhttp.BadJSON("%s: key %s of a signed algorithm must be a signed key object", field, name)
			}
		case len(raw) > 0 && raw[0] == '{':
			var obj struct {
				Key        *string                      `json:"key"`
				Fallback   *bool                        `json:"fallback"`
				Signatures map[string]map[string]string `json:"signatures"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil {
				return nil, mxhttp.BadJSON("%s: key %s is malformed: %v", field, name, err)
			}
			if obj.Key == nil || *obj.Key == "" {
				return nil, mxhttp.BadJSON("%s: key %s needs a key", field, name)
			}
			if strings.HasPrefix(alg, "signed_") || obj.Signatures != nil {
				if signing == nil {
					return nil, mxhttp.InvalidParam("%s: upload the device keys before signed keys", field)
				}
				if err := verify(raw, userID, "ed25519:"+deviceID, signing); err != nil {
					return nil, err
				}
			}
		default:
			return nil, mxhttp.BadJSON("%s: key %s must be a string or a key object", field, name)
		}
		stored, err := storableValue(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, Key{Algorithm: alg, KeyID: id, JSON: stored})
	}
	return out, nil
}

// storableValue canonicalises a key value (a string or an object).
func storableValue(raw json.RawMessage) (json.RawMessage, error) {
	if raw[0] == '"' {
		return raw, nil
	}
	return storable(raw)
}

// checkReused refuses a one-time key ID that the device already holds with
// another value: handing out either would break the session built on the
// other. The same key uploaded again (a retried request) is fine.
func (s *Service) checkReused(ctx context.Context, userID, deviceID string, keys []Key) error {
	if len(keys) == 0 {
		return nil
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Algorithm + ":" + k.KeyID
	}
	existing, err := s.store.OneTimeKeysByID(ctx, userID, deviceID, names)
	if err != nil {
		return err
	}
	for i, k := range keys {
		if old, ok := existing[names[i]]; ok && !bytes.Equal(old, k.JSON) {
			return mxhttp.InvalidParam("One-time key %s already exists with another value", names[i])
		}
	}
	return nil
}

func oneFallbackPerAlgorithm(keys []Key) error {
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.Algorithm] {
			return mxhttp.InvalidParam("At most one fallback key per algorithm may be uploaded")
		}
		seen[k.Algorithm] = true
	}
	return nil
}
