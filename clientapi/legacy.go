package clientapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/syncapi"
)

// legacyRoutes serves the 2015 API that r0 deprecated: the initial syncs,
// the event stream and single events by ID.
func (a *API) legacyRoutes(r chi.Router) {
	r.Get("/initialSync", a.initialSync)
	r.Get("/events", a.eventStream)
	r.Get("/events/{eventID}", a.legacyEvent)
	r.Get("/rooms/{roomID}/initialSync", a.roomInitialSync)
	// Sending and redacting without a transaction ID, which Synapse still
	// serves under every client prefix: each request makes a new event.
	r.Post("/rooms/{roomID}/send/{eventType}", a.sendEvent)
	r.Post("/rooms/{roomID}/redact/{eventID}", a.redact)
	// Presence lists (legacy_presence.go).
	r.Get("/presence/list/{userID}", a.getPresenceList)
	r.Post("/presence/list/{userID}", a.editPresenceList)
}

func (a *API) initialSync(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r, syncapi.DefaultInitialSyncLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	archived := false
	switch v := r.URL.Query().Get("archived"); v {
	case "", "false":
	case "true":
		archived = true
	default:
		a.fail(w, r, mxhttp.InvalidParam("archived must be true or false"))
		return
	}
	resp, err := a.sync.InitialSync(r.Context(), syncapi.InitialSyncRequest{
		UserID: requester(r).UserID, Scope: txnRef(r, "").Scope, Limit: limit, Archived: archived,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, resp)
}

func (a *API) eventStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	timeout := syncapi.DefaultEventsTimeout
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			a.fail(w, r, mxhttp.InvalidParam("Invalid timeout %q", t))
			return
		}
		timeout = time.Duration(min(ms, int64(syncapi.MaxTimeout/time.Millisecond))) * time.Millisecond
	}
	limit, err := queryLimit(r, 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	resp, err := a.sync.Events(r.Context(), syncapi.EventsRequest{
		UserID: requester(r).UserID, Scope: txnRef(r, "").Scope,
		From: q.Get("from"), RoomID: q.Get("room_id"), Timeout: timeout, Limit: limit,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, resp)
}

func (a *API) legacyEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := a.sync.LegacyEvent(r.Context(), requester(r).UserID, pathParam(r, "eventID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, ev)
}

func (a *API) roomInitialSync(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r, syncapi.DefaultInitialSyncLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	room, err := a.sync.RoomInitialSync(r.Context(), requester(r).UserID, txnRef(r, "").Scope, pathParam(r, "roomID"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, room)
}
