package clientapi

import (
	"net/http"
	"strconv"
	"strings"

	"homeserver/mxhttp"
	"homeserver/spaces"
)

// hierarchy serves GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
func (a *API) hierarchy(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sq := spaces.Query{User: requester(r).UserID, RoomID: pathParam(r, "roomID"), From: q.Get("from")}
	switch v := q.Get("suggested_only"); v {
	case "", "false":
	case "true":
		sq.SuggestedOnly = true
	default:
		a.fail(w, r, mxhttp.InvalidParam("suggested_only must be true or false, not %q", v))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			a.fail(w, r, mxhttp.InvalidParam("limit must be a positive integer, not %q", v))
			return
		}
		sq.Limit = n
	}
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			a.fail(w, r, mxhttp.InvalidParam("max_depth must be a non-negative integer, not %q", v))
			return
		}
		sq.MaxDepth = &n
	}
	page, err := a.spaces.Hierarchy(r.Context(), sq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, page)
}

// roomSummary serves GET /_matrix/client/v1/room_summary/{roomIdOrAlias}.
func (a *API) roomSummary(w http.ResponseWriter, r *http.Request) {
	target := pathParam(r, "roomIDOrAlias")
	via := viaServers(r)
	roomID := target
	if strings.HasPrefix(target, "#") {
		t, err := a.rooms.ResolveAlias(r.Context(), target)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		roomID, via = t.RoomID, append(via, t.Servers...)
	} else if !strings.HasPrefix(target, "!") {
		a.fail(w, r, mxhttp.InvalidParam("%q is neither a room ID nor a room alias", target))
		return
	}
	s, err := a.spaces.RoomSummary(r.Context(), requester(r).UserID, roomID, via)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, s)
}
