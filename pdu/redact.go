package pdu

import (
	"encoding/json"
)

// We redact ourselves rather than through GMSL because redaction decides
// which bytes are signed and hashed into event IDs, and GMSL's differs from
// the spec: for room versions 11 and later it drops
// content.third_party_invite.signed of m.room.member events, which the spec
// keeps, and it round-trips content through float64, which changes large
// integers in legacy rooms.

// Redact returns the event JSON data stripped by the redaction algorithm of
// the given room version, in canonical form.
func Redact(version string, data []byte) ([]byte, error) {
	r, err := lookupVersion(version)
	if err != nil {
		return nil, err
	}
	o, err := parseObject(data, numbersLegacy)
	if err != nil {
		return nil, err
	}
	return redactObject(r, o).encode(), nil
}

// redactObject applies the version's redaction algorithm to ev.
func redactObject(r *versionRules, ev object) object {
	rules := r.redact
	out := make(object, len(rules.topLevel))
	for k, v := range ev {
		if rules.topLevel[k] {
			out[k] = v
		}
	}

	var eventType string
	// A non-string type keeps nothing of the content; the event is invalid
	// anyway, but redaction must still produce something to hash.
	_ = json.Unmarshal(ev["type"], &eventType)

	// Content that is missing or not an object redacts to {}: the result
	// must always have an object there.
	content, _ := splitCanonicalObject(ev["content"])
	kept := object{}
	keys, listed := rules.content[eventType]
	switch {
	case listed && keys == nil:
		kept = content
	case listed:
		for _, k := range keys {
			if v, ok := content[k]; ok {
				kept[k] = v
			}
		}
	}
	if rules.keepThirdPartySigned && eventType == "m.room.member" {
		if invite, err := splitCanonicalObject(content["third_party_invite"]); err == nil {
			if signed, ok := invite["signed"]; ok {
				kept["third_party_invite"] = object{"signed": signed}.encode()
			}
		}
	}
	if kept == nil {
		kept = object{}
	}
	out["content"] = kept.encode()
	return out
}
