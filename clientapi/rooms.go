package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/filter"
	"homeserver/mxhttp"
	"homeserver/rooms"
)

func (a *API) roomRoutes(r chi.Router) {
	r.Post("/createRoom", a.createRoom)
	r.Get("/joined_rooms", a.joinedRooms)
	r.Post("/join/{roomIDOrAlias}", a.joinByIDOrAlias)
	r.Post("/knock/{roomIDOrAlias}", a.knock)
	r.Post("/rooms/{roomID}/join", a.joinRoom)
	r.Post("/rooms/{roomID}/leave", a.leaveRoom)
	r.Post("/rooms/{roomID}/forget", a.forgetRoom)
	r.Post("/rooms/{roomID}/invite", a.membershipOp("invite"))
	r.Post("/rooms/{roomID}/kick", a.membershipOp("kick"))
	r.Post("/rooms/{roomID}/ban", a.membershipOp("ban"))
	r.Post("/rooms/{roomID}/unban", a.membershipOp("unban"))
	r.Get("/rooms/{roomID}/members", a.members)
	r.Get("/rooms/{roomID}/joined_members", a.joinedMembers)
	r.Put("/rooms/{roomID}/send/{eventType}/{txnID}", a.sendEvent)
	r.Put("/rooms/{roomID}/state/{eventType}", a.sendState)
	r.Put("/rooms/{roomID}/state/{eventType}/*", a.sendState)
	r.Get("/rooms/{roomID}/state", a.roomState)
	r.Get("/rooms/{roomID}/state/{eventType}", a.stateEvent)
	r.Get("/rooms/{roomID}/state/{eventType}/*", a.stateEvent)
	r.Put("/rooms/{roomID}/redact/{eventID}/{txnID}", a.redact)
	r.Get("/rooms/{roomID}/event/{eventID}", a.getEvent)
	r.Get("/rooms/{roomID}/messages", a.messages)
	a.contextRoutes(r)
	a.directoryRoutes(r)
}

// decodeEventBody reads event content: a JSON object within the PDU size
// limit, with nothing a Matrix event cannot hold.
func decodeEventBody(r *http.Request) (json.RawMessage, error) {
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := mxhttp.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	return body, nil
}

func (a *API) createRoom(w http.ResponseWriter, r *http.Request) {
	var req rooms.CreateRoomRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	req.AppServiceID = requester(r).AppServiceID
	roomID, err := a.rooms.CreateRoom(r.Context(), requester(r).UserID, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"room_id": roomID})
}

func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request) {
	ids, err := a.rooms.JoinedRooms(r.Context(), requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if ids == nil {
		ids = []string{}
	}
	ok(w, map[string][]string{"joined_rooms": ids})
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func (a *API) joinByIDOrAlias(w http.ResponseWriter, r *http.Request) {
	a.join(w, r, pathParam(r, "roomIDOrAlias"))
}

func (a *API) joinRoom(w http.ResponseWriter, r *http.Request) {
	a.join(w, r, pathParam(r, "roomID"))
}

// join serves both join endpoints. Keys of the body besides reason (and
// third_party_signed, an identity server's invite, which is not content) go
// into the member event's content, as the spec says and Synapse does.
func (a *API) join(w http.ResponseWriter, r *http.Request, target string) {
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req reasonBody
	content := map[string]any{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := mxhttp.Unmarshal(body, &req); err != nil {
			a.fail(w, r, err)
			return
		}
		if err := mxhttp.Unmarshal(body, &content); err != nil {
			a.fail(w, r, err)
			return
		}
		delete(content, "reason")
		delete(content, "third_party_signed")
	}
	me := requester(r)
	if ok, retry := a.allow(r, a.rcJoins, me.UserID); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	roomID, err := a.rooms.JoinWith(r.Context(), me.UserID, target, rooms.JoinOptions{
		Reason: req.Reason, Via: viaServers(r), Guest: me.IsGuest, Content: content,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"room_id": roomID})
}

// viaServers are the servers to join or knock through when this server is
// not in the room: via, or its older name server_name when via is absent.
func viaServers(r *http.Request) []string {
	if via := r.URL.Query()["via"]; len(via) > 0 {
		return via
	}
	return r.URL.Query()["server_name"]
}

func (a *API) knock(w http.ResponseWriter, r *http.Request) {
	var req reasonBody
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, err := a.rooms.KnockVia(r.Context(), requester(r).UserID, pathParam(r, "roomIDOrAlias"), req.Reason, viaServers(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"room_id": roomID})
}

func (a *API) leaveRoom(w http.ResponseWriter, r *http.Request) {
	var req reasonBody
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.rooms.Leave(r.Context(), requester(r).UserID, pathParam(r, "roomID"), req.Reason); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) forgetRoom(w http.ResponseWriter, r *http.Request) {
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &struct{}{}); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.rooms.Forget(r.Context(), requester(r).UserID, pathParam(r, "roomID")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

type targetBody struct {
	UserID *string `json:"user_id"`
	Reason string  `json:"reason"`
}

// membershipOp serves invite, kick, ban and unban, which share a body.
func (a *API) membershipOp(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req targetBody
		if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
			a.fail(w, r, err)
			return
		}
		if req.UserID == nil {
			a.fail(w, r, mxhttp.MissingParam("Missing user_id"))
			return
		}
		me, roomID, target := requester(r).UserID, pathParam(r, "roomID"), *req.UserID
		var err error
		if op == "invite" {
			if ok, retry := a.allow(r, a.rcInvitesUser, target); !ok {
				a.fail(w, r, mxhttp.LimitExceeded(retry))
				return
			}
			if ok, retry := a.allow(r, a.rcInvitesRoom, roomID); !ok {
				a.fail(w, r, mxhttp.LimitExceeded(retry))
				return
			}
		}
		switch op {
		case "invite":
			_, err = a.rooms.Invite(r.Context(), me, roomID, target, req.Reason, false)
		case "kick":
			err = a.rooms.Kick(r.Context(), me, roomID, target, req.Reason)
		case "ban":
			err = a.rooms.Ban(r.Context(), me, roomID, target, req.Reason)
		case "unban":
			err = a.rooms.Unban(r.Context(), me, roomID, target, req.Reason)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, empty)
	}
}

func (a *API) members(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	chunk, err := a.rooms.Members(r.Context(), requester(r).UserID, pathParam(r, "roomID"), rooms.MembersQuery{
		At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership"),
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if chunk == nil {
		chunk = []json.RawMessage{}
	}
	ok(w, map[string]any{"chunk": chunk})
}

func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request) {
	joined, err := a.rooms.JoinedMembers(r.Context(), requester(r).UserID, pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"joined": joined})
}

// txnRef scopes a transaction ID to the device that sent it, or to the
// application service and the user it acts as.
func txnRef(r *http.Request, txnID string) *rooms.TxnRef {
	me := requester(r)
	scope := me.DeviceID
	switch {
	case scope != "":
	case me.AppServiceID != "":
		scope = "as:" + me.AppServiceID + ":" + me.UserID
	default:
		scope = "token:" + me.TokenHash
	}
	return &rooms.TxnRef{UserID: me.UserID, Scope: scope, TxnID: txnID}
}

func (a *API) sendEvent(w http.ResponseWriter, r *http.Request) {
	content, err := decodeEventBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	me := requester(r)
	ts, err := originTS(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if ok, retry := a.allow(r, a.rcMessage, me.UserID); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	roomID, eventType := pathParam(r, "roomID"), pathParam(r, "eventType")
	// POST is the 2015 form without a transaction ID: each request sends
	// a new event.
	var txn *rooms.TxnRef
	if r.Method == http.MethodPut {
		txn = txnRef(r, pathParam(r, "txnID"))
		txn.Path = roomID + "/send/" + eventType
	}
	id, err := a.rooms.Send(r.Context(), rooms.SendRequest{
		Sender: me.UserID, RoomID: roomID, Type: eventType, Content: content, Txn: txn, OriginTS: ts,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"event_id": id})
}

func (a *API) sendState(w http.ResponseWriter, r *http.Request) {
	content, err := decodeEventBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ts, err := originTS(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	stateKey := pathParam(r, "*")
	id, err := a.rooms.Send(r.Context(), rooms.SendRequest{
		Sender: requester(r).UserID, RoomID: pathParam(r, "roomID"), Type: pathParam(r, "eventType"),
		StateKey: &stateKey, Content: content, OriginTS: ts,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"event_id": id})
}

func (a *API) roomState(w http.ResponseWriter, r *http.Request) {
	st, err := a.rooms.State(r.Context(), requester(r).UserID, pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if st == nil {
		st = []json.RawMessage{}
	}
	ok(w, st)
}

func (a *API) stateEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := a.rooms.StateEvent(r.Context(), requester(r).UserID, pathParam(r, "roomID"), pathParam(r, "eventType"), pathParam(r, "*"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if r.URL.Query().Get("format") == "event" {
		ok(w, ev)
		return
	}
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(ev, &e)
	ok(w, e.Content)
}

func (a *API) redact(w http.ResponseWriter, r *http.Request) {
	content, err := decodeEventBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		Reason *string `json:"reason"`
	}
	if json.Unmarshal(content, &body) != nil {
		a.fail(w, r, mxhttp.BadJSON("reason must be a string"))
		return
	}
	me := requester(r)
	roomID, eventID := pathParam(r, "roomID"), pathParam(r, "eventID")
	// As for sendEvent, POST has no transaction ID.
	var txn *rooms.TxnRef
	if r.Method == http.MethodPut {
		txn = txnRef(r, pathParam(r, "txnID"))
		txn.Path = roomID + "/redact/" + eventID
	}
	id, err := a.rooms.Redact(r.Context(), me.UserID, roomID, eventID, content, txn)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"event_id": id})
}

func (a *API) getEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := a.rooms.GetEventWith(r.Context(), requester(r).UserID, pathParam(r, "roomID"), pathParam(r, "eventID"),
		rooms.FormatOptions{Txn: txnRef(r, "")})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, ev)
}

// roomEventFilter reads the filter query parameter (inline JSON).
func roomEventFilter(r *http.Request) (*filter.RoomEventFilter, error) {
	f, err := filter.Parse(r.URL.Query().Get("filter"))
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid filter: %v", err)
	}
	return f, nil
}

func queryLimit(r *http.Request, def int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("Invalid limit %q", s)
	}
	return n, nil
}

func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	if err := a.rooms.CheckHistoryReader(r.Context(), requester(r).UserID, pathParam(r, "roomID")); err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		a.fail(w, r, mxhttp.InvalidParam("dir must be b or f"))
		return
	}
	limit, err := queryLimit(r, 10)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	f, err := roomEventFilter(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if f.Limit != nil && q.Get("limit") == "" {
		limit = *f.Limit
	}
	res, err := a.rooms.Messages(r.Context(), requester(r).UserID, pathParam(r, "roomID"), rooms.MessagesQuery{
		From: q.Get("from"), To: q.Get("to"), Backward: dir == "b", Limit: limit, Filter: f,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}
