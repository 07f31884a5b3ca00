package clientapi

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/rooms"
)

// contextRoutes are the event context routes served under every client
// prefix.
func (a *API) contextRoutes(r chi.Router) {
	r.Get("/rooms/{roomID}/context/{eventID}", a.eventContext)
}

// v1RoomRoutes are the room endpoints that exist only under
// /_matrix/client/v1.
func (a *API) v1RoomRoutes(r chi.Router) {
	r.Get("/rooms/{roomID}/relations/{eventID}", a.relations)
	r.Get("/rooms/{roomID}/relations/{eventID}/{relType}", a.relations)
	r.Get("/rooms/{roomID}/relations/{eventID}/{relType}/{eventType}", a.relations)
	r.Get("/rooms/{roomID}/threads", a.threads)
	r.Get("/rooms/{roomID}/timestamp_to_event", a.timestampToEvent)
	r.Get("/rooms/{roomID}/hierarchy", a.hierarchy)
	r.Get("/room_summary/{roomIDOrAlias}", a.roomSummary)
}

func (a *API) eventContext(w http.ResponseWriter, r *http.Request) {
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
	res, err := a.rooms.EventContext(r.Context(), requester(r).UserID, pathParam(r, "roomID"), pathParam(r, "eventID"),
		rooms.ContextQuery{Limit: limit, Filter: f})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}

// direction reads the dir parameter; def applies when it is absent.
func direction(r *http.Request, def string) (forward bool, err error) {
	dir := r.URL.Query().Get("dir")
	if dir == "" && def == "" {
		return false, mxhttp.MissingParam("Missing dir")
	}
	if dir == "" {
		dir = def
	}
	if dir != "b" && dir != "f" {
		return false, mxhttp.InvalidParam("dir must be b or f")
	}
	return dir == "f", nil
}

func (a *API) relations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	forward, err := direction(r, "b")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := queryLimit(r, 10)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rq := rooms.RelationsQuery{
		RelType: pathParam(r, "relType"), EventType: pathParam(r, "eventType"),
		From: q.Get("from"), To: q.Get("to"), Forward: forward, Limit: limit,
	}
	if q.Has("recurse") {
		recurse := q.Get("recurse")
		if recurse != "true" && recurse != "false" {
			a.fail(w, r, mxhttp.InvalidParam("recurse must be true or false"))
			return
		}
		rq.Recurse = new(recurse == "true")
	}
	res, err := a.rooms.Relations(r.Context(), requester(r).UserID, pathParam(r, "roomID"), pathParam(r, "eventID"), rq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}

func (a *API) threads(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	include := q.Get("include")
	if include != "" && include != "all" && include != "participated" {
		a.fail(w, r, mxhttp.InvalidParam("include must be all or participated"))
		return
	}
	limit, err := queryLimit(r, 10)
	if err == nil && limit < 1 {
		err = mxhttp.InvalidParam("limit must be greater than zero")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.rooms.Threads(r.Context(), requester(r).UserID, pathParam(r, "roomID"), rooms.ThreadsQuery{
		Participated: include == "participated", From: q.Get("from"), Limit: limit,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}

func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("ts") {
		a.fail(w, r, mxhttp.MissingParam("Missing ts"))
		return
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		a.fail(w, r, mxhttp.InvalidParam("ts must be an integer"))
		return
	}
	forward, err := direction(r, "")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id, originTS, err := a.rooms.TimestampToEvent(r.Context(), requester(r).UserID, pathParam(r, "roomID"), ts, forward)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"event_id": id, "origin_server_ts": originTS})
}
