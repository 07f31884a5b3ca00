package pdu

import (
	"fmt"

	gmsl "github.com/matrix-org/gomatrixserverlib"
)

// MaxPDUSize is the largest an event may be, in bytes of canonical JSON
// including signatures.
const MaxPDUSize = 65536

// eventIDScheme says how an event's ID is obtained.
type eventIDScheme int

const (
	// eventIDRandom: v1 and v2 carry a sender-chosen "$random:server" ID
	// in the event JSON.
	eventIDRandom eventIDScheme = iota
	// eventIDHashStd: v3 derives the ID from the reference hash, in
	// standard unpadded base64.
	eventIDHashStd
	// eventIDHashURL: v4 and later use URL-safe unpadded base64 instead.
	eventIDHashURL
)

// redactionRules is the redaction algorithm of a room version: which
// top-level keys survive, and which content keys survive per event type.
type redactionRules struct {
	topLevel map[string]bool
	// content maps event type to the content keys kept; a nil slice for a
	// listed type means "keep all keys" (m.room.create from v11).
	content map[string][]string
	// keepThirdPartySigned keeps content.third_party_invite.signed of
	// m.room.member events (v11 and later).
	keepThirdPartySigned bool
}

// versionRules is the table row for one room version: the things that differ
// between versions and that this package decides itself, plus the GMSL
// implementation used for the auth rules and state resolution.
type versionRules struct {
	id      string
	gmsl    gmsl.IRoomVersion
	eventID eventIDScheme
	redact  *redactionRules
	// strictJSON: from v6, events whose JSON holds floats or integers
	// outside [-(2^53)+1, 2^53-1] are rejected. Earlier versions must still
	// accept such events for compatibility.
	strictJSON bool
	// redactsInContent: from v11, m.room.redaction carries the target in
	// content.redacts instead of a top-level redacts key.
	redactsInContent bool
	// roomIDFromCreate: from v12, the room ID is "!" plus the create event's
	// ID without its "$", and the create event has no room_id of its own.
	roomIDFromCreate bool
}

// Top-level keys kept by redaction. v11 stopped protecting origin,
// membership and prev_state.
var (
	topLevelV1 = setOf("event_id", "type", "room_id", "sender", "state_key", "content",
		"hashes", "signatures", "depth", "prev_events", "prev_state", "auth_events",
		"origin", "origin_server_ts", "membership")
	topLevelV11 = setOf("event_id", "type", "room_id", "sender", "state_key", "content",
		"hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts")
)

var powerLevelKeysV1 = []string{"ban", "events", "events_default", "kick", "redact",
	"state_default", "users", "users_default"}

var (
	redactV1 = &redactionRules{topLevel: topLevelV1, content: map[string][]string{
		"m.room.member":             {"membership"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule"},
		"m.room.power_levels":       powerLevelKeysV1,
		"m.room.aliases":            {"aliases"},
		"m.room.history_visibility": {"history_visibility"},
	}}
	// v6 stops protecting m.room.aliases.
	redactV6 = &redactionRules{topLevel: topLevelV1, content: map[string][]string{
		"m.room.member":             {"membership"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule"},
		"m.room.power_levels":       powerLevelKeysV1,
		"m.room.history_visibility": {"history_visibility"},
	}}
	// v8 protects the restricted-join allow list.
	redactV8 = &redactionRules{topLevel: topLevelV1, content: map[string][]string{
		"m.room.member":             {"membership"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule", "allow"},
		"m.room.power_levels":       powerLevelKeysV1,
		"m.room.history_visibility": {"history_visibility"},
	}}
	// v9 protects the authorising user of a restricted join.
	redactV9 = &redactionRules{topLevel: topLevelV1, content: map[string][]string{
		"m.room.member":             {"membership", "join_authorised_via_users_server"},
		"m.room.create":             {"creator"},
		"m.room.join_rules":         {"join_rule", "allow"},
		"m.room.power_levels":       powerLevelKeysV1,
		"m.room.history_visibility": {"history_visibility"},
	}}
	redactV11 = &redactionRules{topLevel: topLevelV11, keepThirdPartySigned: true, content: map[string][]string{
		"m.room.member":             {"membership", "join_authorised_via_users_server"},
		"m.room.create":             nil,
		"m.room.join_rules":         {"join_rule", "allow"},
		"m.room.power_levels":       append(append([]string(nil), powerLevelKeysV1...), "invite"),
		"m.room.history_visibility": {"history_visibility"},
		"m.room.redaction":          {"redacts"},
	}}
)

// versions is indexed by room version string. It is built once and never
// modified, so it is safe to read concurrently.
var versions = buildVersions()

// versionOrder lists the supported versions in ascending order.
var versionOrder = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// inputMode is the number handling for event JSON arriving from outside:
// strict from v6. JSON of events already accepted is re-read with
// numbersLegacy, so that nothing once stored becomes unreadable.
func (r *versionRules) inputMode() numberMode {
	if r.strictJSON {
		return numbersStrict
	}
	return numbersLegacy
}

func buildVersions() map[string]*versionRules {
	m := make(map[string]*versionRules, len(versionOrder))
	for i, id := range versionOrder {
		n := i + 1
		r := &versionRules{id: id}
		// Failing here means the pinned GMSL lacks a version we claim to
		// support: a programming error caught by any test run.
		r.gmsl = gmsl.MustGetRoomVersion(gmsl.RoomVersion(id))
		switch {
		case n <= 2:
			r.eventID = eventIDRandom
		case n == 3:
			r.eventID = eventIDHashStd
		default:
			r.eventID = eventIDHashURL
		}
		switch {
		case n <= 5:
			r.redact = redactV1
		case n <= 7:
			r.redact = redactV6
		case n == 8:
			r.redact = redactV8
		case n <= 10:
			r.redact = redactV9
		default:
			r.redact = redactV11
		}
		r.strictJSON = n >= 6
		r.redactsInContent = n >= 11
		r.roomIDFromCreate = n >= 12
		m[id] = r
	}
	return m
}

func setOf(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// SupportedVersion reports whether v is a room version this server can
// participate in.
func SupportedVersion(v string) bool {
	_, ok := versions[v]
	return ok
}

// Versions returns the supported room versions in ascending order.
func Versions() []string {
	return append([]string(nil), versionOrder...)
}

func lookupVersion(v string) (*versionRules, error) {
	r, ok := versions[v]
	if !ok {
		return nil, fmt.Errorf("pdu: unsupported room version %q", v)
	}
	return r, nil
}

// safely runs f and turns a panic into an error. GMSL panics on some
// malformed input, and a single bad event must not take the server down.
func safely[T any](op string, f func() (T, error)) (res T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			res, err = zero, fmt.Errorf("pdu: %s: rejected malformed input (event library panicked: %v)", op, r)
		}
	}()
	return f()
}

// safelyErr is safely for functions that only return an error.
func safelyErr(op string, f func() error) error {
	_, err := safely(op, func() (struct{}, error) { return struct{}{}, f() })
	return err
}
