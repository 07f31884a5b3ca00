package pdu

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SignTemplate turns an event template another server prepared (the event
// of a make_join, make_leave or make_knock answer) into an event signed by
// key: it sets origin_server_ts (and origin, for the versions that still
// carry it), drops any hashes, signatures and, from v3, event ID, then hashes
// and signs it. The template's auth_events, prev_events and depth are the
// resident server's choice and are kept; the caller must check that the
// template says what was asked for (room, sender, type, membership).
func SignTemplate(version string, template []byte, key Key, ts int64) (*Event, error) {
	return safely("signing event template", func() (*Event, error) {
		r, err := lookupVersion(version)
		if err != nil {
			return nil, err
		}
		if err := key.validate(); err != nil {
			return nil, err
		}
		o, err := parseObject(template, r.inputMode())
		if err != nil {
			return nil, fmt.Errorf("pdu: template: %w", err)
		}
		o = o.without("signatures", "hashes", "unsigned", "outlier", "destinations", "age_ts")
		if r.eventID != eventIDRandom {
			o = o.without("event_id")
		} else if _, ok := o["event_id"]; !ok {
			return nil, errors.New("pdu: room version 1 and 2 templates must carry an event_id")
		}
		if _, ok := o["origin"]; ok || r.id == "1" || r.id == "2" {
			o["origin"] = appendString(nil, key.ServerName)
		}
		o["origin_server_ts"] = []byte(fmt.Sprint(ts))
		var sender string
		if err := json.Unmarshal(o["sender"], &sender); err != nil {
			return nil, errors.New("pdu: template has no sender")
		}
		if _, domain, _ := strings.Cut(sender, ":"); domain != key.ServerName {
			return nil, fmt.Errorf("pdu: template sender %s is not on %s", sender, key.ServerName)
		}
		if o, err = hashAndSignEvent(r, o, key); err != nil {
			return nil, err
		}
		return parseSigned(r, o)
	})
}

// CoSign adds key's signature to an event signed by another server, as an
// invited user's server does before answering an invite.
func CoSign(e *Event, key Key) (*Event, error) {
	if e == nil {
		return nil, errNilEvent
	}
	return safely("co-signing event", func() (*Event, error) {
		r, err := lookupVersion(e.version)
		if err != nil {
			return nil, err
		}
		o, err := parseObject(e.json, numbersLegacy)
		if err != nil {
			return nil, err
		}
		if o, err = addSignature(o, redactObject(r, o), key); err != nil {
			return nil, err
		}
		return parseSigned(r, o)
	})
}

func parseSigned(r *versionRules, o object) (*Event, error) {
	canon := o.encode()
	if len(canon) > MaxPDUSize {
		return nil, fmt.Errorf("pdu: event is %d bytes, more than the %d allowed", len(canon), MaxPDUSize)
	}
	id, err := eventIDOf(r, o)
	if err != nil {
		return nil, err
	}
	p, err := r.gmsl.NewEventFromTrustedJSONWithEventID(id, canon, false)
	if err != nil {
		return nil, fmt.Errorf("pdu: invalid event: %w", err)
	}
	return newEvent(r, p), nil
}

// SigningServers lists the servers whose signatures a received event must
// carry (the spec's "Checks performed on receipt of a PDU"): the sender's;
// in room versions 1 and 2 the server of the event ID too; and for a
// restricted join, the server of the user in join_authorised_via_users_server.
func SigningServers(e *Event) []string {
	if e == nil {
		return nil
	}
	servers := []string{domainOf(e.sender)}
	add := func(s string) {
		for _, have := range servers {
			if have == s {
				return
			}
		}
		servers = append(servers, s)
	}
	if e.version == "1" || e.version == "2" {
		add(domainOf(e.id))
	}
	if e.typ == "m.room.member" && e.membership == "join" {
		var c struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		if json.Unmarshal(e.content, &c) == nil && c.Via != "" {
			add(domainOf(c.Via))
		}
	}
	return servers
}

// SignatureKeyIDs returns the key IDs under which server signed e.
func SignatureKeyIDs(e *Event, server string) []string {
	if e == nil {
		return nil
	}
	var o struct {
		Signatures map[string]map[string]json.RawMessage `json:"signatures"`
	}
	if json.Unmarshal(e.json, &o) != nil {
		return nil
	}
	var ids []string
	for id := range o.Signatures[server] {
		if strings.HasPrefix(id, "ed25519:") {
			ids = append(ids, id)
		}
	}
	return ids
}

// Redacted returns e as received but redacted, which is how the spec has
// servers keep an event whose content hash does not match.
func Redacted(version string, data []byte) (*Event, error) {
	red, err := Redact(version, data)
	if err != nil {
		return nil, err
	}
	return Parse(version, red)
}

// NeededForEvent is NeededForAuth for an event already built.
func NeededForEvent(e *Event) ([]StateKey, error) {
	if e == nil {
		return nil, errNilEvent
	}
	return NeededForAuth(Proto{Sender: e.sender, RoomID: e.roomID, Type: e.typ, StateKey: e.stateKey, Content: e.content}, e.version)
}

func domainOf(id string) string {
	_, d, _ := strings.Cut(id, ":")
	return d
}
