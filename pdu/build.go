package pdu

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	gmsl "github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Proto is a new event as a local user asks for it.
type Proto struct {
	Sender, RoomID, Type string
	// StateKey is nil for message events.
	StateKey *string
	// Content must be a JSON object; empty means {}.
	Content json.RawMessage
	// Redacts is the target of an m.room.redaction. Build puts it where
	// the room version wants it: top-level before v11, content from v11.
	Redacts string
	// OriginTS is the timestamp in milliseconds; 0 means now.
	OriginTS int64
}

func (p Proto) isCreate() bool {
	return p.Type == spec.MRoomCreate && p.StateKey != nil && *p.StateKey == ""
}

// NeededForAuth returns the state the auth rules need to authorise p, for
// loading it before Build and Allowed: the create event, power levels, join
// rules, the sender's and target's memberships, third-party invites, and so
// on. In room version 12 the create event is not listed in auth_events (the
// room ID implies it) but is still returned here, because the auth rules
// read it.
func NeededForAuth(p Proto, version string) ([]StateKey, error) {
	return safely("listing auth state", func() ([]StateKey, error) {
		if _, err := lookupVersion(version); err != nil {
			return nil, err
		}
		content := spec.RawJSON(p.Content)
		if len(content) == 0 {
			content = spec.RawJSON("{}")
		}
		needed, err := gmsl.StateNeededForProtoEvent(&gmsl.ProtoEvent{
			SenderID: p.Sender,
			Type:     p.Type,
			StateKey: p.StateKey,
			Content:  content,
		})
		if err != nil {
			return nil, fmt.Errorf("pdu: listing auth state for %s event: %w", p.Type, err)
		}
		return toStateKeys(needed.Tuples()), nil
	})
}

// Build makes a signed event from p: it fills auth_events (chosen from state
// per the spec's auth events selection), prev_events, depth, origin, the
// content hash and key's signature. It does not check the auth rules; call
// Allowed for that.
//
// For m.room.create in room version 12, p.RoomID must be empty: the room ID
// is derived from the create event's ID ("!" + the ID without its "$") and
// can be read from the result's RoomID. For other events, and all events of
// earlier versions, the caller supplies the room ID.
func Build(p Proto, version string, prevEvents []string, depth int64, state AuthState, key Key) (*Event, error) {
	return build(p, version, prevEvents, depth, state, key, false)
}

// BuildForOther lays out an event for a user of another server, as a
// resident server does for make_join, make_leave and make_knock. The
// result is signed with key only so that it is a well-formed event; the
// other server signs Template's output itself (SignTemplate).
func BuildForOther(p Proto, version string, prevEvents []string, depth int64, state AuthState, key Key) (*Event, error) {
	return build(p, version, prevEvents, depth, state, key, true)
}

// Template is the event without hashes and signatures, as make_join and
// its siblings answer it.
func (e *Event) Template() json.RawMessage {
	o, err := parseObject(e.json, numbersLegacy)
	if err != nil {
		return nil
	}
	return o.without("hashes", "signatures", "unsigned").encode()
}

func build(p Proto, version string, prevEvents []string, depth int64, state AuthState, key Key, foreign bool) (*Event, error) {
	return safely("building event", func() (*Event, error) {
		r, err := lookupVersion(version)
		if err != nil {
			return nil, err
		}
		if err := key.validate(); err != nil {
			return nil, err
		}
		if err := checkProto(r, p, key, foreign); err != nil {
			return nil, err
		}
		if depth < 1 {
			return nil, fmt.Errorf("pdu: depth %d: events start at depth 1", depth)
		}
		content, err := buildContent(r, p)
		if err != nil {
			return nil, err
		}
		var stateKey *string
		if p.StateKey != nil {
			sk := *p.StateKey
			stateKey = &sk
		}
		proto := &gmsl.ProtoEvent{
			SenderID: p.Sender,
			RoomID:   p.RoomID,
			Type:     p.Type,
			StateKey: stateKey,
			// GMSL writes a nil slice as null, which no server accepts.
			PrevEvents: append([]string{}, prevEvents...),
			Depth:      depth,
			Content:    content,
		}
		if !r.redactsInContent {
			proto.Redacts = p.Redacts
		}
		eb := r.gmsl.NewEventBuilderFromProtoEvent(proto)

		needed, err := gmsl.StateNeededForProtoEvent(proto)
		if err != nil {
			return nil, fmt.Errorf("pdu: building %s event: %w", p.Type, err)
		}
		provider, err := authEventsFrom(r, needed.Tuples(), state)
		if err != nil {
			return nil, err
		}
		// AddAuthEvents also leaves the create event out of auth_events in
		// v12, where the room ID stands for it.
		if err := eb.AddAuthEvents(provider); err != nil {
			return nil, fmt.Errorf("pdu: choosing auth events: %w", err)
		}

		ts := p.OriginTS
		if ts == 0 {
			ts = time.Now().UnixMilli()
		}
		var o object
		if r.eventID == eventIDRandom {
			// v1 and v2: GMSL lays out the references as [ID, hashes]
			// pairs and picks the random event ID.
			built, err := eb.Build(time.UnixMilli(ts), spec.ServerName(key.ServerName), gmsl.KeyID(key.KeyID), key.Private)
			if err != nil {
				return nil, fmt.Errorf("pdu: building %s event: %w", p.Type, err)
			}
			if o, err = parseObject(built.JSON(), r.inputMode()); err != nil {
				return nil, err
			}
			o = o.without("signatures", "hashes")
		} else {
			authIDs, ok := eb.AuthEvents.([]string)
			if !ok && eb.AuthEvents != nil {
				return nil, fmt.Errorf("pdu: building %s event: auth events of type %T", p.Type, eb.AuthEvents)
			}
			o = protoObject(eb, authIDs, ts, key.ServerName)
		}
		// The hash, signature and ID come from the spec-exact canonical
		// JSON and redaction in this package.
		o, err = hashAndSignEvent(r, o, key)
		if err != nil {
			return nil, err
		}
		return parseSigned(r, o)
	})
}

// protoObject lays out an unsigned event of room version 3 or later as
// GMSL's builder does (the same members, "origin" and, for state events,
// the empty "prev_state" Synapse still expects), from the builder's fields
// once it has chosen the auth events.
func protoObject(eb *gmsl.EventBuilder, authIDs []string, ts int64, origin string) object {
	o := object{
		"sender":           appendString(nil, eb.SenderID),
		"type":             appendString(nil, eb.Type),
		"prev_events":      stringArray(eb.PrevEvents),
		"auth_events":      stringArray(authIDs),
		"depth":            strconv.AppendInt(nil, eb.Depth, 10),
		"content":          json.RawMessage(eb.Content),
		"origin_server_ts": strconv.AppendInt(nil, ts, 10),
		"origin":           appendString(nil, origin),
	}
	if eb.RoomID != "" {
		o["room_id"] = appendString(nil, eb.RoomID)
	}
	if eb.StateKey != nil {
		o["state_key"] = appendString(nil, *eb.StateKey)
		o["prev_state"] = json.RawMessage("[]")
	}
	if eb.Redacts != "" {
		o["redacts"] = appendString(nil, eb.Redacts)
	}
	return o
}

// stringArray is a JSON array of strings, canonical ([] for none).
func stringArray(v any) json.RawMessage {
	ss, _ := v.([]string)
	out := []byte{'['}
	for i, s := range ss {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendString(out, s)
	}
	return append(out, ']')
}

// checkProto catches mistakes that would otherwise produce an event no
// server accepts.
func checkProto(r *versionRules, p Proto, key Key, foreign bool) error {
	if p.Type == "" {
		return errors.New("pdu: event has no type")
	}
	_, domain, ok := strings.Cut(p.Sender, ":")
	if !strings.HasPrefix(p.Sender, "@") || !ok {
		return fmt.Errorf("pdu: sender %q is not a user ID", p.Sender)
	}
	// Events must be signed by the sender's server; an event signed by
	// anyone else would be rejected everywhere.
	if domain != key.ServerName && !foreign {
		return fmt.Errorf("pdu: sender %s is not on %s, whose key signs the event", p.Sender, key.ServerName)
	}
	switch {
	case r.roomIDFromCreate && p.isCreate():
		if p.RoomID != "" {
			return fmt.Errorf("pdu: room version %s create events have no room ID (it is derived from the event ID), got %q", r.id, p.RoomID)
		}
	case p.RoomID == "":
		return errors.New("pdu: event has no room ID")
	}
	if p.Redacts != "" && p.Type != spec.MRoomRedaction {
		return fmt.Errorf("pdu: redacts is only for %s events, not %s", spec.MRoomRedaction, p.Type)
	}
	return nil
}

// buildContent returns p's content in canonical form, with the redaction
// target added where room versions from 11 keep it.
func buildContent(r *versionRules, p Proto) ([]byte, error) {
	raw := p.Content
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	content, err := parseObject(raw, r.inputMode())
	if err != nil {
		return nil, fmt.Errorf("pdu: content: %w", err)
	}
	if p.Type != spec.MRoomRedaction {
		return content.encode(), nil
	}
	if !r.redactsInContent {
		if p.Redacts == "" {
			return nil, errors.New("pdu: redaction has no target (Redacts)")
		}
		return content.encode(), nil
	}
	target := appendString(nil, p.Redacts)
	if existing, ok := content["redacts"]; ok {
		if p.Redacts != "" && string(existing) != string(target) {
			return nil, fmt.Errorf("pdu: Redacts %q disagrees with content.redacts %s", p.Redacts, existing)
		}
		return content.encode(), nil
	}
	if p.Redacts == "" {
		return nil, errors.New("pdu: redaction has no target (Redacts)")
	}
	content["redacts"] = target
	return content.encode(), nil
}
