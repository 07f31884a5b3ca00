package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

// Limits of one inbound transaction, from the spec.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// maxRequestBody bounds every federation request body: a send_join of
	// one event, a transaction of 50 PDUs and 100 EDUs of 64 KiB each.
	maxRequestBody = 16 << 20
)

// Mount adds the federation API to r. Every endpoint but /version and
// OpenID's userinfo needs an X-Matrix signed request; auth verifies it.
func (s *Service) Mount(r chi.Router) {
	r.Get("/_matrix/federation/v1/version", s.version)
	s.MountOpenID(r)
	r.Group(func(r chi.Router) {
		r.Use(transport.Middleware(s.cfg.ServerName, s.lookupKey, maxRequestBody))
		r.Use(s.noteInbound, s.limiter.middleware)
		r.Put("/_matrix/federation/v1/send/{txnId}", s.send)
		r.Get("/_matrix/federation/v1/make_join/{roomId}/{userId}", s.makeJoin)
		r.Put("/_matrix/federation/v1/send_join/{roomId}/{eventId}", s.sendJoinV1)
		r.Put("/_matrix/federation/v2/send_join/{roomId}/{eventId}", s.sendJoinV2)
		r.Get("/_matrix/federation/v1/make_leave/{roomId}/{userId}", s.makeLeave)
		r.Put("/_matrix/federation/v1/send_leave/{roomId}/{eventId}", s.sendLeaveV1)
		r.Put("/_matrix/federation/v2/send_leave/{roomId}/{eventId}", s.sendLeaveV2)
		r.Put("/_matrix/federation/v2/invite/{roomId}/{eventId}", s.invite)
		r.Get("/_matrix/federation/v1/make_knock/{roomId}/{userId}", s.makeKnock)
		r.Put("/_matrix/federation/v1/send_knock/{roomId}/{eventId}", s.sendKnock)
		r.Get("/_matrix/federation/v1/publicRooms", s.publicRoomsGet)
		r.Post("/_matrix/federation/v1/publicRooms", s.publicRoomsPost)
		r.Get("/_matrix/federation/v1/query/directory", s.queryDirectory)
		r.Get("/_matrix/federation/v1/query/profile", s.queryProfile)
		r.Get("/_matrix/federation/v1/event/{eventId}", s.event)
		r.Post("/_matrix/federation/v1/get_missing_events/{roomId}", s.getMissingEvents)
		r.Get("/_matrix/federation/v1/state_ids/{roomId}", s.stateIDs)
		r.Get("/_matrix/federation/v1/state/{roomId}", s.state)
		r.Get("/_matrix/federation/v1/event_auth/{roomId}/{eventId}", s.eventAuth)
		r.Get("/_matrix/federation/v1/backfill/{roomId}", s.backfill)
		r.Post("/_matrix/federation/v1/query_auth/{roomId}/{eventId}", s.queryAuth)
		r.Get("/_matrix/federation/v1/timestamp_to_event/{roomId}", s.timestampToEvent)
		r.Get("/_matrix/federation/v1/hierarchy/{roomId}", s.hierarchy)
		r.Get("/_matrix/federation/v1/user/devices/{userId}", s.userDevices)
		r.Post("/_matrix/federation/v1/user/keys/query", s.userKeysQuery)
		r.Post("/_matrix/federation/v1/user/keys/claim", s.userKeysClaim)
	})
}

func (s *Service) lookupKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	return s.keys.VerifyKey(ctx, serverName, keyID, s.now().UnixMilli())
}

// noteInbound treats a request from a server as a sign that it is up
// again: its queue retries now instead of at the end of its backoff.
func (s *Service) noteInbound(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.sender.kick(transport.Origin(r.Context()))
		next.ServeHTTP(w, r)
	})
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	mxhttp.Fail(w, r, s.log, err)
}

func (s *Service) version(w http.ResponseWriter, _ *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "homeserver", "version": s.cfg.ServerVersion}})
}

// body decodes the verified request body into v.
func body(r *http.Request, v any) error {
	data := transport.Body(r.Context())
	if len(data) == 0 {
		return mxhttp.NotJSON("Missing request body")
	}
	return mxhttp.Unmarshal(data, v)
}

type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

// send receives a transaction: each PDU is checked and stored on its own,
// so that a bad one never fails the others; EDUs are applied; a repeated
// transaction gets the first answer again.
func (s *Service) send(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := transport.Origin(ctx)
	txnID := mxhttp.PathParam(r, "txnId")
	if prev, ok, err := s.store.InboundTxn(ctx, origin, txnID); err != nil {
		s.fail(w, r, err)
		return
	} else if ok {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(prev)
		return
	}
	var txn transaction
	if err := body(r, &txn); err != nil {
		s.fail(w, r, err)
		return
	}
	if txn.Origin != "" && txn.Origin != origin {
		s.fail(w, r, mxhttp.Forbidden("Transaction origin %q does not match the request's signer %q", txn.Origin, origin))
		return
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		s.fail(w, r, mxhttp.BadJSON("A transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
		return
	}
	results := map[string]pduResult{}
	for _, raw := range txn.PDUs {
		id, err := s.receivePDU(ctx, raw)
		if id == "" {
			s.log.Info("dropping unidentifiable PDU", "origin", origin, "err", err)
			continue
		}
		res := pduResult{}
		if err != nil && !errors.Is(err, rooms.ErrSoftFailed) {
			if ctx.Err() != nil {
				s.fail(w, r, ctx.Err())
				return
			}
			res.Error = err.Error()
			s.log.Info("rejected PDU", "origin", origin, "event_id", id, "err", err)
		}
		results[id] = res
	}
	for _, raw := range txn.EDUs {
		if err := s.receiveEDU(ctx, origin, raw); err != nil {
			s.log.Info("ignoring EDU", "origin", origin, "err", err)
		}
	}
	resp, _ := json.Marshal(map[string]any{"pdus": results})
	if err := s.store.SaveInboundTxn(ctx, origin, txnID, resp); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp)
}

// receivePDU checks and stores one PDU of a transaction. It returns the
// event ID ("" when the PDU cannot even be identified).
func (s *Service) receivePDU(ctx context.Context, raw json.RawMessage) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", errors.New("PDU is not an object with a room_id")
	}
	version, err := s.rooms.RoomVersion(ctx, head.RoomID)
	if err != nil {
		if errors.Is(err, rooms.ErrNotFound) {
			return "", fmt.Errorf("unknown room %s", head.RoomID)
		}
		return "", err
	}
	ev, err := s.parsePDU(ctx, version, raw)
	if err != nil {
		return pduIDForError(version, raw), err
	}
	if ok, err := s.rooms.ServerAllowed(ctx, ev.RoomID(), transport.Origin(ctx)); err != nil {
		return ev.ID(), err
	} else if !ok {
		return ev.ID(), errors.New("the sending server is denied by the room's server ACL")
	}
	if in, err := s.rooms.InRoom(ctx, ev.RoomID()); err != nil {
		return ev.ID(), err
	} else if !in {
		return ev.ID(), errors.New("this server is not in the room")
	}
	s.fillGap(ctx, transport.Origin(ctx), ev)
	return ev.ID(), s.receiveFrom(ctx, transport.Origin(ctx), ev)
}

// pduIDForError names a PDU that failed the checks, for the per-PDU
// result: its event ID as computed, if it can be.
func pduIDForError(version string, raw json.RawMessage) string {
	if ev, err := pdu.Parse(version, raw); err == nil {
		return ev.ID()
	}
	var head struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(raw, &head)
	return head.EventID
}

type edu struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// receiveEDU applies one EDU from origin. Only what origin may speak for
// is applied: its own users.
func (s *Service) receiveEDU(ctx context.Context, origin string, raw json.RawMessage) error {
	var e edu
	if err := json.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("EDU is not an object: %w", err)
	}
	switch e.Type {
	case "m.device_list_update", "m.signing_key_update":
		return s.receiveDeviceListEDU(ctx, origin, e.Type, e.Content)
	case "m.direct_to_device":
		return s.receiveToDevice(ctx, origin, e.Content)
	case "m.typing":
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if serverOf(c.UserID) != origin || s.edus.Typing == nil {
			return nil
		}
		if ok, err := s.memberFromServer(ctx, c.RoomID, c.UserID); err != nil || !ok {
			return err
		}
		if ok, err := s.rooms.ServerAllowed(ctx, c.RoomID, origin); err != nil || !ok {
			return err
		}
		s.edus.Typing(c.RoomID, c.UserID, c.Typing, 30*time.Second)
	case "m.receipt":
		var c map[string]map[string]map[string]struct {
			EventIDs []string `json:"event_ids"`
			Data     struct {
				TS       int64  `json:"ts"`
				ThreadID string `json:"thread_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if s.edus.Receipt == nil {
			return nil
		}
		for roomID, types := range c {
			if ok, err := s.rooms.ServerAllowed(ctx, roomID, origin); err != nil || !ok {
				continue
			}
			for rtype, users := range types {
				if rtype != "m.read" {
					continue // private receipts never leave their server
				}
				for userID, rc := range users {
					if serverOf(userID) != origin || len(rc.EventIDs) == 0 {
						continue
					}
					if ok, err := s.memberFromServer(ctx, roomID, userID); err != nil || !ok {
						continue
					}
					if err := s.edus.Receipt(ctx, roomID, userID, rtype, rc.EventIDs[0], rc.Data.ThreadID, rc.Data.TS); err != nil {
						s.log.Info("ignoring receipt", "origin", origin, "err", err)
					}
				}
			}
		}
	case "m.presence":
		var c struct {
			Push []struct {
				UserID          string `json:"user_id"`
				Presence        string `json:"presence"`
				StatusMsg       string `json:"status_msg"`
				LastActiveAgo   int64  `json:"last_active_ago"`
				CurrentlyActive bool   `json:"currently_active"`
			} `json:"push"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if s.edus.Presence == nil {
			return nil
		}
		for _, p := range c.Push {
			if serverOf(p.UserID) != origin || !slices.Contains([]string{"online", "offline", "unavailable"}, p.Presence) {
				continue
			}
			if err := s.edus.Presence(ctx, p.UserID, p.Presence, p.StatusMsg, p.LastActiveAgo, p.CurrentlyActive); err != nil {
				s.log.Info("ignoring presence", "origin", origin, "err", err)
			}
		}
	}
	return nil
}

// memberFromServer reports whether userID is joined to the room.
func (s *Service) memberFromServer(ctx context.Context, roomID, userID string) (bool, error) {
	m, err := s.rooms.Membership(ctx, roomID, userID)
	return m == "join", err
}

// roomAndUser reads and checks the {roomId}/{userId} of a make_* request:
// the user must be on the requesting server.
func (s *Service) roomAndUser(r *http.Request) (string, string, error) {
	roomID, userID := mxhttp.PathParam(r, "roomId"), mxhttp.PathParam(r, "userId")
	if !strings.HasPrefix(roomID, "!") {
		return "", "", mxhttp.InvalidParam("Invalid room ID %q", roomID)
	}
	if !rooms.ValidUserID(userID) {
		return "", "", mxhttp.InvalidParam("Invalid user ID %q", userID)
	}
	if serverOf(userID) != transport.Origin(r.Context()) {
		return "", "", mxhttp.Forbidden("The user is not on the requesting server")
	}
	if err := s.checkACL(r.Context(), roomID); err != nil {
		return "", "", err
	}
	return roomID, userID, nil
}

// checkACL refuses a requesting server the room's server ACL denies.
func (s *Service) checkACL(ctx context.Context, roomID string) error {
	ok, err := s.rooms.ServerAllowed(ctx, roomID, transport.Origin(ctx))
	if err != nil {
		return err
	}
	if !ok {
		return mxhttp.Forbidden("Your server is denied by the room's server ACL")
	}
	return nil
}

func (s *Service) makeJoin(w http.ResponseWriter, r *http.Request) {
	s.makeMembership(w, r, "join")
}

func (s *Service) makeLeave(w http.ResponseWriter, r *http.Request) {
	s.makeMembership(w, r, "leave")
}

func (s *Service) makeKnock(w http.ResponseWriter, r *http.Request) {
	s.makeMembership(w, r, "knock")
}

// makeMembership serves make_join, make_leave and make_knock: a template
// of the membership event for the requesting server to sign. Joins and
// knocks name the room versions the requesting server supports (ver),
// which knocks must give.
func (s *Service) makeMembership(w http.ResponseWriter, r *http.Request, membership string) {
	roomID, userID, err := s.roomAndUser(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var supported []string
	switch membership {
	case "join":
		supported = r.URL.Query()["ver"]
		if len(supported) == 0 {
			supported = []string{"1"} // the spec's default
		}
	case "knock":
		supported = r.URL.Query()["ver"]
		if len(supported) == 0 {
			s.fail(w, r, mxhttp.MissingParam("ver is required"))
			return
		}
	}
	version, template, err := s.rooms.MakeMembership(r.Context(), roomID, userID, membership, supported)
	if err != nil {
		var mx *mxhttp.Error
		if errors.As(err, &mx) && mx.Code == "M_INCOMPATIBLE_ROOM_VERSION" {
			if v, verr := s.rooms.RoomVersion(r.Context(), roomID); verr == nil {
				err = mx.With("room_version", v)
			}
		}
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"room_version": version, "event": template})
}

// receiveMembership checks a signed membership event sent to send_join,
// send_leave or send_knock and stores it. A bad knock is M_INVALID_PARAM,
// as the spec asks of send_knock; a bad join or leave M_BAD_JSON.
func (s *Service) receiveMembership(r *http.Request, membership string) (*pdu.Event, error) {
	ctx := r.Context()
	roomID, eventID := mxhttp.PathParam(r, "roomId"), mxhttp.PathParam(r, "eventId")
	version, err := s.rooms.RoomVersion(ctx, roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room")
	}
	if err != nil {
		return nil, err
	}
	if err := s.checkACL(ctx, roomID); err != nil {
		return nil, err
	}
	raw := transport.Body(ctx)
	if len(raw) == 0 {
		return nil, mxhttp.NotJSON("Missing event")
	}
	if !json.Valid(raw) {
		return nil, mxhttp.NotJSON("The event is not JSON")
	}
	if len(raw) > pdu.MaxPDUSize {
		return nil, mxhttp.TooLarge("The event is larger than %d bytes", pdu.MaxPDUSize)
	}
	invalid, foreign := mxhttp.BadJSON, mxhttp.Forbidden
	if membership == "knock" {
		invalid, foreign = mxhttp.InvalidParam, mxhttp.InvalidParam
	}
	ev, err := s.parsePDUSigned(ctx, version, raw, s.cfg.ServerName)
	if err != nil {
		return nil, invalid("Invalid event: %v", err)
	}
	sk := ev.StateKey()
	switch {
	case ev.ID() != eventID:
		return nil, invalid("The event's ID is %s, not %s", ev.ID(), eventID)
	case ev.RoomID() != roomID:
		return nil, invalid("The event is for another room")
	case ev.Type() != "m.room.member" || sk == nil || *sk != ev.Sender() || ev.Membership() != membership:
		return nil, invalid("Not a %s event of its sender", membership)
	case serverOf(ev.Sender()) != transport.Origin(ctx):
		return nil, foreign("The event's sender is not on the requesting server")
	}
	if membership == "join" {
		var c struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil && c.Via != "" && s.isLocal(c.Via) {
			// This server vouches for the join: the joiner must really be
			// allowed in, whatever make_join said.
			if err := s.rooms.CheckRestrictedJoin(ctx, roomID, ev.Sender()); err != nil {
				return nil, err
			}
			if ev, err = pdu.CoSign(ev, s.cfg.Key); err != nil {
				return nil, err
			}
		}
	}
	if err := s.rooms.ReceiveEvent(ctx, ev); err != nil {
		var rej *rooms.RejectedError
		if errors.As(err, &rej) || errors.Is(err, rooms.ErrSoftFailed) {
			return nil, mxhttp.Forbidden("The %s is not allowed: %v", membership, err)
		}
		return nil, err
	}
	s.forward(ctx, ev.RoomID(), ev.ID(), transport.Origin(ctx))
	return ev, nil
}

type sendJoinResponse struct {
	Origin         string            `json:"origin"`
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event,omitempty"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room,omitempty"`
}

func (s *Service) sendJoin(r *http.Request) (*sendJoinResponse, error) {
	ctx := r.Context()
	roomID := mxhttp.PathParam(r, "roomId")
	// The state the joining server gets is the state before its join.
	state, ids, err := s.rooms.StatePDUs(ctx, roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room")
	}
	if err != nil {
		return nil, err
	}
	ev, err := s.receiveMembership(r, "join")
	if err != nil {
		return nil, err
	}
	chain, err := s.rooms.AuthChainPDUs(ctx, roomID, append(ids, ev.ID()))
	if err != nil {
		return nil, err
	}
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return &sendJoinResponse{Origin: s.cfg.ServerName, State: state, AuthChain: chain, Event: ev.JSON(), ServersInRoom: servers}, nil
}

func (s *Service) sendJoinV2(w http.ResponseWriter, r *http.Request) {
	resp, err := s.sendJoin(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// sendJoinV1 is the deprecated form, whose answer is [200, body].
func (s *Service) sendJoinV1(w http.ResponseWriter, r *http.Request) {
	resp, err := s.sendJoin(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, []any{200, resp})
}

func (s *Service) sendLeaveV2(w http.ResponseWriter, r *http.Request) {
	if _, err := s.receiveMembership(r, "leave"); err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}

func (s *Service) sendLeaveV1(w http.ResponseWriter, r *http.Request) {
	if _, err := s.receiveMembership(r, "leave"); err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, []any{200, map[string]any{}})
}

// sendKnock takes a knock through this server and answers with the
// state that identifies the room to the knocker.
func (s *Service) sendKnock(w http.ResponseWriter, r *http.Request) {
	ev, err := s.receiveMembership(r, "knock")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	state, err := s.rooms.StrippedStatePDUs(r.Context(), ev.RoomID())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"knock_room_state": state})
}

type inviteRequest struct {
	Event           json.RawMessage   `json:"event"`
	RoomVersion     string            `json:"room_version"`
	InviteRoomState []json.RawMessage `json:"invite_room_state"`
}

// invite takes another server's invite of a local user: checked, signed
// by this server too, stored with its stripped state for the invitee.
func (s *Service) invite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req inviteRequest
	if err := body(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.RoomVersion == "" || len(req.Event) == 0 {
		s.fail(w, r, mxhttp.BadJSON("room_version and event are required"))
		return
	}
	if err := s.checkACL(ctx, mxhttp.PathParam(r, "roomId")); err != nil {
		s.fail(w, r, err)
		return
	}
	if !pdu.SupportedVersion(req.RoomVersion) {
		s.fail(w, r, (&mxhttp.Error{Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "Unsupported room version"}).With("room_version", req.RoomVersion))
		return
	}
	if len(req.InviteRoomState) > 50 {
		req.InviteRoomState = req.InviteRoomState[:50]
	}
	ev, err := s.parsePDU(ctx, req.RoomVersion, req.Event)
	if err != nil {
		s.fail(w, r, mxhttp.BadJSON("Invalid event: %v", err))
		return
	}
	sk := ev.StateKey()
	switch {
	case ev.ID() != mxhttp.PathParam(r, "eventId") || ev.RoomID() != mxhttp.PathParam(r, "roomId"):
		s.fail(w, r, mxhttp.BadJSON("The event does not match the path"))
		return
	case ev.Type() != "m.room.member" || ev.Membership() != "invite" || sk == nil:
		s.fail(w, r, mxhttp.BadJSON("Not an invite"))
		return
	case !s.isLocal(*sk):
		s.fail(w, r, mxhttp.BadJSON("The invitee is not a user of this server"))
		return
	case serverOf(ev.Sender()) != transport.Origin(ctx):
		s.fail(w, r, mxhttp.Forbidden("The inviter is not on the requesting server"))
		return
	}
	if s.profiles != nil {
		if _, err := s.profiles.GetProfile(ctx, *sk); err != nil {
			s.fail(w, r, mxhttp.NotFound("Unknown user %s", *sk))
			return
		}
	}
	signed, err := pdu.CoSign(ev, s.cfg.Key)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.rooms.ReceiveInvite(ctx, signed, req.InviteRoomState); err != nil {
		var rej *rooms.RejectedError
		if errors.As(err, &rej) || errors.Is(err, rooms.ErrSoftFailed) {
			s.fail(w, r, mxhttp.Forbidden("%v", err))
			return
		}
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event": json.RawMessage(signed.JSON())})
}

func (s *Service) queryDirectory(w http.ResponseWriter, r *http.Request) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		s.fail(w, r, mxhttp.MissingParam("room_alias is required"))
		return
	}
	if serverOf(alias) != s.cfg.ServerName {
		s.fail(w, r, mxhttp.NotFound("Room alias %s is not on this server", alias))
		return
	}
	target, err := s.rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"room_id": target.RoomID, "servers": target.Servers})
}

func (s *Service) queryProfile(w http.ResponseWriter, r *http.Request) {
	userID, field := r.URL.Query().Get("user_id"), r.URL.Query().Get("field")
	if userID == "" {
		s.fail(w, r, mxhttp.MissingParam("user_id is required"))
		return
	}
	if !s.isLocal(userID) || s.profiles == nil {
		s.fail(w, r, mxhttp.NotFound("User %s is not on this server", userID))
		return
	}
	p, err := s.profiles.GetProfile(r.Context(), userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if field != "" {
		v, ok := p[field]
		if !ok {
			s.fail(w, r, mxhttp.NotFound("The user has no %s", field))
			return
		}
		p = map[string]json.RawMessage{field: v}
	}
	mxhttp.WriteJSON(w, http.StatusOK, p)
}

// event serves one event to a server in its room.
func (s *Service) event(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	data, roomID, err := s.rooms.EventPDU(ctx, mxhttp.PathParam(r, "eventId"))
	if errors.Is(err, rooms.ErrNotFound) {
		s.fail(w, r, mxhttp.NotFound("Unknown event"))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.requireInRoom(ctx, roomID); err != nil {
		s.fail(w, r, err)
		return
	}
	view, err := s.rooms.ViewForServer(ctx, roomID, transport.Origin(ctx))
	if err == nil {
		data, err = view.PDU(ctx, mxhttp.PathParam(r, "eventId"))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": s.now().UnixMilli(), "pdus": []json.RawMessage{data}})
}
