package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// SendRequest is a message or state event from a local user.
type SendRequest struct {
	Sender   string
	RoomID   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Txn      *TxnRef
	// OriginTS overrides the timestamp (application services' ?ts=).
	OriginTS int64
}

// Send builds, authorises and persists an event, returning its ID. A
// retried transaction returns the original event's ID.
func (s *Service) Send(ctx context.Context, req SendRequest) (string, error) {
	if err := s.checkRoomID(req.RoomID); err != nil {
		return "", err
	}
	p := pdu.Proto{Sender: req.Sender, RoomID: req.RoomID, Type: req.Type, StateKey: req.StateKey, Content: req.Content, OriginTS: req.OriginTS}
	ne := NewEvent{Txn: req.Txn, Relation: relationOf(req.Content)}
	if req.StateKey != nil {
		if err := s.checkStateContent(ctx, req); err != nil {
			return "", err
		}
		// Setting the state it already is changes nothing: as in Synapse,
		// the answer is the current event.
		if id, err := s.sameState(ctx, req); err != nil || id != "" {
			return id, err
		}
		if req.Type == "m.room.member" {
			if id, invite, err := s.inviteFromState(ctx, req); invite {
				return id, err
			}
		}
	}
	if req.Type == "m.room.redaction" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(req.Content, &c)
		if c.Redacts != "" {
			return s.Redact(ctx, req.Sender, req.RoomID, c.Redacts, req.Content, req.Txn)
		}
	}
	ev, err := s.submit(ctx, p, ne)
	if err != nil {
		return "", err
	}
	return ev.ID(), nil
}

// checkStateContent enforces server-side rules on state that the auth rules
// do not cover.
func (s *Service) checkStateContent(ctx context.Context, req SendRequest) error {
	switch req.Type {
	case "m.room.canonical_alias":
		var c struct {
			Alias      *string  `json:"alias"`
			AltAliases []string `json:"alt_aliases"`
		}
		if json.Unmarshal(req.Content, &c) != nil {
			return mxhttp.BadJSON("Invalid m.room.canonical_alias content")
		}
		aliases := c.AltAliases
		if c.Alias != nil && *c.Alias != "" {
			aliases = append(aliases, *c.Alias)
		}
		for _, a := range aliases {
			if err := s.checkAliasPointsTo(ctx, a, req.RoomID); err != nil {
				return err
			}
		}
	case "m.room.create":
		// A room's one create event is made with the room; another is a
		// malformed request (in room version 12 it would even name a room
		// of its own), refused before it could pass as unchanged state.
		return mxhttp.BadJSON("m.room.create cannot be sent into an existing room")
	}
	return nil
}

// sameState returns the ID of the room's current state event at req's
// type and state key when req's sender sent it with the same content, ""
// otherwise.
func (s *Service) sameState(ctx context.Context, req SendRequest) (string, error) {
	cur, err := s.store.CurrentState(ctx, req.RoomID, []pdu.StateKey{{Type: req.Type, StateKey: *req.StateKey}})
	if err != nil || len(cur) == 0 || cur[0].Sender != req.Sender {
		return "", err
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(cur[0].JSON, &ev) != nil {
		return "", nil
	}
	var have, want any
	if json.Unmarshal(ev.Content, &have) != nil || json.Unmarshal(req.Content, &want) != nil || !reflect.DeepEqual(have, want) {
		return "", nil
	}
	return cur[0].EventID, nil
}

// inviteFromState sends an invite set through the state endpoint the way
// /invite does (invitee checks, and the other server's signature for a
// remote invitee); invite is false for other memberships, which are plain
// state events that the auth rules judge.
func (s *Service) inviteFromState(ctx context.Context, req SendRequest) (id string, invite bool, err error) {
	var c struct {
		Membership string `json:"membership"`
		Reason     string `json:"reason"`
		IsDirect   bool   `json:"is_direct"`
	}
	if json.Unmarshal(req.Content, &c) != nil || c.Membership != "invite" {
		return "", false, nil
	}
	id, err = s.Invite(ctx, req.Sender, req.RoomID, *req.StateKey, c.Reason, c.IsDirect)
	return id, true, err
}

func (s *Service) checkAliasPointsTo(ctx context.Context, alias, roomID string) error {
	if !validAlias(alias) {
		return mxhttp.InvalidParam("Invalid alias %q", alias)
	}
	target, err := s.lookupAlias(ctx, alias)
	if errors.Is(err, ErrNotFound) || (err == nil && target != roomID) {
		return &mxhttp.Error{Status: 400, Code: "M_BAD_ALIAS", Message: "Alias " + alias + " does not point to this room"}
	}
	return err
}

// Redact redacts target. The auth rules allow the redaction event when the
// sender has the redact power level; redacting one's own events is allowed
// regardless, as the spec says for clients.
func (s *Service) Redact(ctx context.Context, sender, roomID, target string, content json.RawMessage, txn *TxnRef) (string, error) {
	if err := s.checkRoomID(roomID); err != nil {
		return "", err
	}
	if txn != nil {
		if id, err := s.store.TxnEvent(ctx, *txn); err == nil {
			return id, nil
		}
	}
	room, err := s.store.GetRoom(ctx, roomID)
	if errors.Is(err, ErrNotFound) {
		return "", mxhttp.Forbidden("Unknown room")
	}
	if err != nil {
		return "", err
	}
	orig, err := s.store.GetEvent(ctx, target)
	if errors.Is(err, ErrNotFound) || (err == nil && orig.RoomID != roomID) {
		return "", mxhttp.NotFound("Event not found")
	}
	if err != nil {
		return "", err
	}
	if orig.Sender != sender {
		level, err := s.powerLevel(ctx, roomID, sender, "redact")
		if err != nil {
			return "", err
		}
		if !level.ok {
			return "", mxhttp.Forbidden("You don't have permission to redact other users' events")
		}
	}
	c := map[string]any{}
	if len(content) > 0 {
		if err := json.Unmarshal(content, &c); err != nil {
			return "", mxhttp.BadJSON("Content must be a JSON object")
		}
	}
	// From v11 the target is in content; earlier versions read the
	// top-level redacts key, which the builder fills from Redacts.
	if room.Version == "11" || room.Version == "12" {
		c["redacts"] = target
	}
	body, _ := json.Marshal(c)
	p := pdu.Proto{Sender: sender, RoomID: roomID, Type: "m.room.redaction", Content: body, Redacts: target}
	ev, err := s.submit(ctx, p, NewEvent{Txn: txn, RedactTarget: target})
	if err != nil {
		return "", err
	}
	return ev.ID(), nil
}

// relationOf extracts m.relates_to for the relations index.
func relationOf(content json.RawMessage) *Relation {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType == "" || c.RelatesTo.EventID == "" {
		return nil
	}
	return &Relation{RelatesTo: c.RelatesTo.EventID, RelType: c.RelatesTo.RelType}
}
