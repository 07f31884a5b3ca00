package pdu

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	gmsl "github.com/matrix-org/gomatrixserverlib"
)

// Event is an immutable room event of a known room version. It is safe for
// concurrent use.
//
// All fields are read from the underlying GMSL event once, when the Event is
// made, because several GMSL accessors panic on malformed events and
// accessors here cannot return errors.
type Event struct {
	pdu        gmsl.PDU
	version    string
	json       []byte
	id         string
	roomID     string
	typ        string
	stateKey   *string
	sender     string
	content    []byte
	depth      int64
	ts         int64
	prev       []string
	auth       []string
	redacts    string
	membership string
}

// newEvent wraps p; it must be called inside safely because the GMSL
// accessors it uses may panic.
func newEvent(r *versionRules, p gmsl.PDU) *Event {
	e := &Event{
		pdu:     p,
		version: r.id,
		json:    p.JSON(),
		id:      p.EventID(),
		roomID:  p.RoomID().String(),
		typ:     p.Type(),
		sender:  string(p.SenderID()),
		content: p.Content(),
		depth:   p.Depth(),
		ts:      int64(p.OriginServerTS()),
		prev:    slices.Clone(p.PrevEventIDs()),
		auth:    slices.Clone(p.AuthEventIDs()),
	}
	if sk := p.StateKey(); sk != nil {
		s := *sk
		e.stateKey = &s
	}
	var c struct {
		Membership string `json:"membership"`
		Redacts    string `json:"redacts"`
	}
	// Content was validated when the event was built or received; if it is
	// not an object the fields simply stay empty.
	_ = json.Unmarshal(e.content, &c)
	if e.typ == "m.room.member" && e.stateKey != nil {
		e.membership = c.Membership
	}
	if e.typ == "m.room.redaction" {
		if r.redactsInContent {
			e.redacts = c.Redacts
		} else {
			e.redacts = p.Redacts()
		}
	}
	return e
}

// ID returns the event ID.
func (e *Event) ID() string { return e.id }

// RoomID returns the room ID. For a room version 12 create event, which has
// no room_id field, it is the ID derived from the event's own ID.
func (e *Event) RoomID() string { return e.roomID }

// Type returns the event type.
func (e *Event) Type() string { return e.typ }

// StateKey returns the state key, or nil for a message event.
func (e *Event) StateKey() *string {
	if e.stateKey == nil {
		return nil
	}
	s := *e.stateKey
	return &s
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.stateKey != nil }

// Sender returns the sender's user ID. Room versions 1-12 have no pseudonymous
// sender IDs, so this is always a user ID.
func (e *Event) Sender() string { return e.sender }

// Content returns the content JSON. The slice must not be modified.
func (e *Event) Content() []byte { return e.content }

// Depth returns the event's depth in the room DAG.
func (e *Event) Depth() int64 { return e.depth }

// OriginServerTS returns the sending server's timestamp in milliseconds.
func (e *Event) OriginServerTS() int64 { return e.ts }

// PrevEventIDs returns the IDs of the events this one follows.
func (e *Event) PrevEventIDs() []string { return slices.Clone(e.prev) }

// AuthEventIDs returns the IDs of the events that authorise this one. In
// room version 12 this includes the create event, which is implied by the
// room ID rather than listed in the JSON, so that auth chains can be walked
// the same way in every version.
func (e *Event) AuthEventIDs() []string { return slices.Clone(e.auth) }

// Redacts returns the ID of the event an m.room.redaction redacts: the
// top-level redacts field before room version 11, content.redacts from 11 on.
// It is "" for other events.
func (e *Event) Redacts() string { return e.redacts }

// Membership returns content.membership of an m.room.member event, and ""
// for other events.
func (e *Event) Membership() string { return e.membership }

// Version returns the room version the event was parsed or built for.
func (e *Event) Version() string { return e.version }

// JSON returns the event as signed, in the form federation sends it: v1 and
// v2 events include event_id, later versions do not. The slice must not be
// modified.
func (e *Event) JSON() []byte { return e.json }

// Parse reads a stored event of the given room version. The JSON is trusted:
// hashes, signatures and size limits are not checked. The event ID is
// recomputed from the JSON for room versions 3 and later, and the event
// keeps the canonical form of data as its JSON.
func Parse(version string, data []byte) (*Event, error) {
	return safely("parsing event", func() (*Event, error) {
		r, err := lookupVersion(version)
		if err != nil {
			return nil, err
		}
		o, err := parseObject(data, numbersLegacy)
		if err != nil {
			return nil, err
		}
		id, err := eventIDOf(r, o)
		if err != nil {
			return nil, err
		}
		p, err := r.gmsl.NewEventFromTrustedJSONWithEventID(id, o.encode(), false)
		if err != nil {
			return nil, fmt.Errorf("pdu: parsing event: %w", err)
		}
		return newEvent(r, p), nil
	})
}

// ParseUntrusted reads an event received from another server. On top of
// Parse it checks that the JSON is acceptable for the room version (from v6:
// no floats, no integers outside the safe range), that the event is at most
// MaxPDUSize bytes of canonical JSON, that the room version's ID rules hold
// (an event_id field in v3+ events, if present, must match the computed ID)
// and that the content hash matches. Unlike the spec's handling for
// federation, a content hash mismatch is an error here, not a reason to
// redact: the caller decides what to do with such an event. Signatures are
// checked separately with VerifySignature.
func ParseUntrusted(version string, data []byte) (*Event, error) {
	return parseUntrusted(version, data, false)
}

// ParseReceived is ParseUntrusted with the spec's answer to a content hash
// mismatch: the event is returned redacted (and redacted is set) instead of
// refused. Its signatures, which cover the redacted form, still decide.
func ParseReceived(version string, data []byte) (ev *Event, redacted bool, err error) {
	ev, err = parseUntrusted(version, data, false)
	if err == nil || !errors.Is(err, errHashMismatch) {
		return ev, false, err
	}
	red, rerr := Redact(version, data)
	if rerr != nil {
		return nil, false, err
	}
	ev, err = parseUntrusted(version, red, true)
	return ev, err == nil, err
}

func parseUntrusted(version string, data []byte, skipHash bool) (*Event, error) {
	return safely("parsing received event", func() (*Event, error) {
		r, err := lookupVersion(version)
		if err != nil {
			return nil, err
		}
		o, err := parseObject(data, r.inputMode())
		if err != nil {
			return nil, err
		}
		// Servers strip these before hashing and signing, and other servers
		// may add them in transit; they are never part of the event.
		o = o.without("unsigned", "outlier", "destinations", "age_ts")
		// From v3 the ID is not part of the event. Some servers include it
		// anyway; accept that only if it is the right one.
		var claimed json.RawMessage
		if r.eventID != eventIDRandom {
			claimed = o["event_id"]
			o = o.without("event_id")
		}
		id, err := eventIDOf(r, o)
		if err != nil {
			return nil, err
		}
		if claimed != nil && string(claimed) != string(appendString(nil, id)) {
			return nil, fmt.Errorf("pdu: event_id %s does not match the event's reference hash %s", claimed, id)
		}
		canon := o.encode()
		if len(canon) > MaxPDUSize {
			return nil, fmt.Errorf("pdu: event is %d bytes, more than the %d allowed", len(canon), MaxPDUSize)
		}
		if !skipHash {
			if err := checkContentHash(o); err != nil {
				return nil, err
			}
		}
		// GMSL's untrusted parser checks the fields (sender, room ID and
		// type/state key lengths). It would redact on a hash mismatch and
		// compute its own event ID, but the hash was checked above and the
		// ID is ours, so the trusted parse below gives the final event.
		if _, err := r.gmsl.NewEventFromUntrustedJSON(canon); err != nil {
			return nil, fmt.Errorf("pdu: invalid event: %w", err)
		}
		p, err := r.gmsl.NewEventFromTrustedJSONWithEventID(id, canon, false)
		if err != nil {
			return nil, fmt.Errorf("pdu: invalid event: %w", err)
		}
		return newEvent(r, p), nil
	})
}

// errNilEvent guards the exported functions against nil events, which would
// otherwise surface as a recovered panic with a less useful message.
var errNilEvent = errors.New("pdu: nil event")
