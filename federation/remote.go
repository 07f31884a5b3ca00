package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

var _ rooms.Remote = (*Service)(nil)

// QueryAlias asks the alias's server which room it names.
func (s *Service) QueryAlias(ctx context.Context, alias string) (rooms.AliasTarget, error) {
	var out struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err := s.client.Do(ctx, "GET", serverOf(alias), "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil, &out)
	if err != nil {
		return rooms.AliasTarget{}, remoteError(err, fmt.Sprintf("Room alias %s not found", alias))
	}
	if out.RoomID == "" {
		return rooms.AliasTarget{}, mxhttp.NotFound("Room alias %s not found", alias)
	}
	return rooms.AliasTarget{RoomID: out.RoomID, Servers: out.Servers}, nil
}

// QueryProfile asks the user's server for their profile, or for one field
// of it (field != ""). A field the server leaves out is not found.
func (s *Service) QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	server := serverOf(userID)
	if !transport.ValidServerName(server) {
		return nil, mxhttp.InvalidParam("Invalid user ID %q", userID)
	}
	q := url.Values{"user_id": {userID}}
	if field != "" {
		q.Set("field", field)
	}
	var out map[string]json.RawMessage
	if err := s.client.Do(ctx, "GET", server, "/_matrix/federation/v1/query/profile?"+q.Encode(), nil, &out); err != nil {
		return nil, remoteError(err, "Profile not found")
	}
	if field != "" {
		v, ok := out[field]
		if !ok {
			return nil, mxhttp.NotFound("Profile field %s not set", field)
		}
		return map[string]json.RawMessage{field: v}, nil
	}
	if out == nil {
		out = map[string]json.RawMessage{}
	}
	return out, nil
}

// remoteError turns another server's answer into the error for the local
// client: its own 4xx Matrix errors pass through (a 404 with notFound's
// words), anything else is a 502 M_UNKNOWN... as Synapse answers.
func remoteError(err error, notFound string) error {
	var he *transport.HTTPError
	if errors.As(err, &he) {
		switch {
		case he.Status == 404:
			return mxhttp.NotFound("%s", notFound)
		case he.Status == 403:
			msg := he.Message
			if msg == "" {
				msg = "The remote server refused the request"
			}
			return mxhttp.Forbidden("%s", msg)
		case he.Status >= 400 && he.Status < 500 && he.Code != "":
			return &mxhttp.Error{Status: he.Status, Code: he.Code, Message: he.Message}
		}
	}
	return &mxhttp.Error{Status: 502, Code: "M_UNKNOWN", Message: "Failed to reach the remote server: " + err.Error()}
}

// Join joins user to a room through the first of servers that takes the
// join: make_join, sign, send_join, check what came back, store it.
func (s *Service) Join(ctx context.Context, user, roomID string, servers []string, content map[string]any) error {
	return s.throughServers(servers, roomID, "join", func(server string) error {
		return s.joinVia(ctx, server, user, roomID, content)
	})
}

// Knock knocks user on a room through the first of servers that takes the
// knock: make_knock, sign, send_knock, then the knock is stored with the
// room's state as the server returned it.
func (s *Service) Knock(ctx context.Context, user, roomID string, servers []string, content map[string]any) error {
	return s.throughServers(servers, roomID, "knock", func(server string) error {
		return s.knockVia(ctx, server, user, roomID, content)
	})
}

// throughServers tries a join or knock (what) through each server in turn
// until one takes it. A refusal (403) ends the tries: the room's rules are
// the same on every server.
func (s *Service) throughServers(servers []string, roomID, what string, try func(server string) error) error {
	var errs []error
	for _, server := range servers {
		err := try(server)
		if err == nil {
			return nil
		}
		s.log.Info("going through a server failed", "op", what, "room_id", roomID, "server", server, "err", err)
		errs = append(errs, err)
		var mx *mxhttp.Error
		if errors.As(err, &mx) && mx.Status == 403 {
			return err // the room refuses; other servers would say the same
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return &mxhttp.Error{Status: 502, Code: "M_UNKNOWN", Message: fmt.Sprintf("No server could be %sed through: %v", what, errors.Join(errs...))}
}

func versionQuery() string {
	q := url.Values{}
	for _, v := range pdu.Versions() {
		q.Add("ver", v)
	}
	return q.Encode()
}

type makeResponse struct {
	RoomVersion string          `json:"room_version"`
	Event       json.RawMessage `json:"event"`
}

// signTemplate checks and signs a make_join or make_leave template.
func (s *Service) signTemplate(mk makeResponse, user, roomID, membership string, content map[string]any) (*pdu.Event, error) {
	version := mk.RoomVersion
	if version == "" {
		version = "1"
	}
	if !pdu.SupportedVersion(version) {
		return nil, &mxhttp.Error{Status: 400, Code: "M_UNSUPPORTED_ROOM_VERSION", Message: "The room's version " + version + " is not supported"}
	}
	var t map[string]json.RawMessage
	if err := json.Unmarshal(mk.Event, &t); err != nil {
		return nil, fmt.Errorf("template is not an object: %w", err)
	}
	var head struct {
		Type     string         `json:"type"`
		RoomID   string         `json:"room_id"`
		Sender   string         `json:"sender"`
		StateKey string         `json:"state_key"`
		Content  map[string]any `json:"content"`
	}
	if err := json.Unmarshal(mk.Event, &head); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if head.Type != "m.room.member" || head.RoomID != roomID || head.Sender != user || head.StateKey != user || head.Content["membership"] != membership {
		return nil, fmt.Errorf("the template is not a %s of %s in %s", membership, user, roomID)
	}
	c := map[string]any{}
	for k, v := range content {
		c[k] = v
	}
	if via, ok := head.Content["join_authorised_via_users_server"]; ok {
		c["join_authorised_via_users_server"] = via
	}
	c["membership"] = membership
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	t["content"] = data
	tmpl, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	return pdu.SignTemplate(version, tmpl, s.cfg.Key, s.now().UnixMilli())
}

func (s *Service) joinVia(ctx context.Context, server, user, roomID string, content map[string]any) error {
	var mk makeResponse
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(user) + "?" + versionQuery()
	if err := s.client.Do(ctx, "GET", server, path, nil, &mk); err != nil {
		return remoteError(err, "The room is not known to "+server)
	}
	join, err := s.signTemplate(mk, user, roomID, "join", content)
	if err != nil {
		return err
	}
	var resp sendJoinResponse
	path = "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.ID())
	if err := s.client.Do(ctx, "PUT", server, path, json.RawMessage(join.JSON()), &resp); err != nil {
		return remoteError(err, "The room is not known to "+server)
	}
	if len(resp.Event) > 0 {
		// A restricted join comes back signed by the authorising server.
		signed, err := s.parsePDU(ctx, join.Version(), resp.Event)
		if err != nil || signed.ID() != join.ID() {
			return fmt.Errorf("the join %s came back altered (%v)", join.ID(), err)
		}
		join = signed
	}
	state, chain, err := s.checkJoinResponse(ctx, join.Version(), roomID, resp)
	if err != nil {
		return fmt.Errorf("checking the room's state from %s: %w", server, err)
	}
	return s.rooms.ImportJoin(ctx, join, state, chain)
}

func (s *Service) knockVia(ctx context.Context, server, user, roomID string, content map[string]any) error {
	var mk makeResponse
	path := "/_matrix/federation/v1/make_knock/" + url.PathEscape(roomID) + "/" + url.PathEscape(user) + "?" + versionQuery()
	if err := s.client.Do(ctx, "GET", server, path, nil, &mk); err != nil {
		return remoteError(err, "The room is not known to "+server)
	}
	knock, err := s.signTemplate(mk, user, roomID, "knock", content)
	if err != nil {
		return err
	}
	var resp struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	path = "/_matrix/federation/v1/send_knock/" + url.PathEscape(roomID) + "/" + url.PathEscape(knock.ID())
	if err := s.client.Do(ctx, "PUT", server, path, json.RawMessage(knock.JSON()), &resp); err != nil {
		return remoteError(err, "The room is not known to "+server)
	}
	return s.rooms.StoreOwnKnock(ctx, knock, s.strippedState(ctx, knock.Version(), roomID, resp.KnockRoomState))
}

// maxStrippedState bounds the stripped state kept from another server.
const maxStrippedState = 50

// strippedState turns the room state another server sent with a knock
// into the stripped state events clients are shown. The spec asks for
// PDUs of the room's version, and for those improperly signed or formed
// to be left out; servers from before v1.16 send stripped events, which
// are kept in room versions up to 11 while servers migrate.
func (s *Service) strippedState(ctx context.Context, version, roomID string, state []json.RawMessage) []json.RawMessage {
	legacy := false
	if n, err := strconv.Atoi(version); err == nil && n <= 11 {
		legacy = true
	}
	out := []json.RawMessage{}
	for _, raw := range state {
		if len(out) == maxStrippedState {
			break
		}
		var e struct {
			Type       *string         `json:"type"`
			StateKey   *string         `json:"state_key"`
			Sender     string          `json:"sender"`
			Content    json.RawMessage `json:"content"`
			Signatures json.RawMessage `json:"signatures"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Type == nil || e.StateKey == nil || len(e.Content) == 0 || e.Content[0] != '{' {
			s.log.Info("leaving out a malformed stripped state event", "room_id", roomID)
			continue
		}
		if len(e.Signatures) > 0 {
			ev, err := s.parsePDU(ctx, version, raw)
			if err != nil || ev.RoomID() != roomID || ev.StateKey() == nil {
				s.log.Info("leaving out a bad stripped state event", "room_id", roomID, "type", *e.Type, "err", err)
				continue
			}
			if !legacy && ev.Type() == "m.room.create" {
				// The room ID no longer names the creator's server:
				// clients get the full create event to check and show.
				out = append(out, raw)
				continue
			}
			*e.Type, *e.StateKey, e.Sender, e.Content = ev.Type(), *ev.StateKey(), ev.Sender(), ev.Content()
		} else if !legacy {
			s.log.Info("leaving out a stripped state event that is not a PDU", "room_id", roomID, "type", *e.Type)
			continue
		}
		data, err := json.Marshal(map[string]any{"type": *e.Type, "state_key": *e.StateKey, "sender": e.Sender, "content": e.Content})
		if err != nil {
			continue
		}
		out = append(out, data)
	}
	return out
}

// checkJoinResponse verifies the state and auth chain a resident server
// returned: each event of the room, of its version, signed by the servers
// that must sign it, and allowed by its own auth events. An auth chain
// event that fails is left out; a state event that fails fails the join.
func (s *Service) checkJoinResponse(ctx context.Context, version, roomID string, resp sendJoinResponse) (state, chain []*pdu.Event, err error) {
	if len(resp.State) > 100000 || len(resp.AuthChain) > 100000 {
		return nil, nil, errors.New("the room's state is too large")
	}
	byID := map[string]*pdu.Event{}
	parse := func(raw json.RawMessage) (*pdu.Event, error) {
		ev, err := s.parsePDU(ctx, version, raw)
		if err != nil {
			return nil, err
		}
		if ev.RoomID() != roomID {
			return nil, fmt.Errorf("event %s is of another room", ev.ID())
		}
		byID[ev.ID()] = ev
		return ev, nil
	}
	for _, raw := range resp.AuthChain {
		ev, err := parse(raw)
		if err != nil {
			s.log.Info("leaving an event out of a joined room's auth chain", "room_id", roomID, "err", err)
			continue
		}
		chain = append(chain, ev)
	}
	for _, raw := range resp.State {
		ev, err := parse(raw)
		if err != nil {
			return nil, nil, err
		}
		if ev.StateKey() == nil {
			return nil, nil, fmt.Errorf("state event %s has no state key", ev.ID())
		}
		state = append(state, ev)
	}
	var create *pdu.Event
	for _, ev := range state {
		if ev.Type() == "m.room.create" && *ev.StateKey() == "" {
			create = ev
		}
	}
	if create == nil {
		return nil, nil, errors.New("the state has no m.room.create event")
	}
	for _, ev := range state {
		if err := allowedByAuthEvents(ev, byID, create); err != nil {
			return nil, nil, fmt.Errorf("state event %s: %w", ev.ID(), err)
		}
	}
	// Oldest first, so that imported history reads in order.
	slices.SortStableFunc(chain, func(a, b *pdu.Event) int { return int(a.Depth() - b.Depth()) })
	return state, chain, nil
}

// eventState is the state an event's auth_events name.
type eventState map[pdu.StateKey]*pdu.Event

func (m eventState) Get(eventType, stateKey string) *pdu.Event {
	return m[pdu.StateKey{Type: eventType, StateKey: stateKey}]
}

func allowedByAuthEvents(ev *pdu.Event, byID map[string]*pdu.Event, create *pdu.Event) error {
	st := eventState{{Type: "m.room.create"}: create}
	for _, id := range ev.AuthEventIDs() {
		a, ok := byID[id]
		if !ok {
			return fmt.Errorf("auth event %s is missing", id)
		}
		if a.StateKey() == nil {
			return fmt.Errorf("auth event %s is not a state event", id)
		}
		st[pdu.StateKey{Type: a.Type(), StateKey: *a.StateKey()}] = a
	}
	return pdu.Allowed(ev, st)
}

// Invite sends an invite to the invitee's server and returns the event as
// both servers signed it.
func (s *Service) Invite(ctx context.Context, ev *pdu.Event, stripped []json.RawMessage) (*pdu.Event, error) {
	target := *ev.StateKey()
	server := serverOf(target)
	body := inviteRequest{Event: ev.JSON(), RoomVersion: ev.Version(), InviteRoomState: stripped}
	var out struct {
		Event json.RawMessage `json:"event"`
	}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(ev.RoomID()) + "/" + url.PathEscape(ev.ID())
	if err := s.client.Do(ctx, "PUT", server, path, body, &out); err != nil {
		return nil, remoteError(err, "Unknown user "+target)
	}
	signed, err := s.parsePDU(ctx, ev.Version(), out.Event)
	if err != nil {
		return nil, &mxhttp.Error{Status: 502, Code: "M_UNKNOWN", Message: "The invitee's server answered with a bad event: " + err.Error()}
	}
	if signed.ID() != ev.ID() {
		return nil, &mxhttp.Error{Status: 502, Code: "M_UNKNOWN", Message: "The invitee's server altered the invite"}
	}
	if err := s.checkSignedBy(ctx, signed, server); err != nil {
		return nil, &mxhttp.Error{Status: 502, Code: "M_UNKNOWN", Message: "The invitee's server did not sign the invite: " + err.Error()}
	}
	return signed, nil
}

// checkSignedBy checks server's signature on ev.
func (s *Service) checkSignedBy(ctx context.Context, ev *pdu.Event, server string) error {
	for _, id := range pdu.SignatureKeyIDs(ev, server) {
		key, err := s.keys.VerifyKey(ctx, server, id, ev.OriginServerTS())
		if err != nil {
			continue
		}
		if pdu.VerifySignature(ev, server, id, key) == nil {
			return nil
		}
	}
	return fmt.Errorf("no valid signature of %s", server)
}

// Leave rejects an invite through a server in the room.
func (s *Service) Leave(ctx context.Context, user, roomID string, servers []string) error {
	var last error
	for _, server := range servers {
		if server == s.cfg.ServerName {
			continue
		}
		var mk makeResponse
		path := "/_matrix/federation/v1/make_leave/" + url.PathEscape(roomID) + "/" + url.PathEscape(user)
		if err := s.client.Do(ctx, "GET", server, path, nil, &mk); err != nil {
			last = remoteError(err, "The room is not known to "+server)
			continue
		}
		leave, err := s.signTemplate(mk, user, roomID, "leave", nil)
		if err != nil {
			last = err
			continue
		}
		path = "/_matrix/federation/v2/send_leave/" + url.PathEscape(roomID) + "/" + url.PathEscape(leave.ID())
		if err := s.client.Do(ctx, "PUT", server, path, json.RawMessage(leave.JSON()), nil); err != nil {
			last = remoteError(err, "The room is not known to "+server)
			continue
		}
		return s.rooms.StoreOwnLeave(ctx, leave)
	}
	if last == nil {
		last = mxhttp.NotFound("No server to leave the room through")
	}
	return last
}
