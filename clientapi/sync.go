package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/syncapi"
)

func (a *API) syncRoutes(r chi.Router) {
	r.Get("/sync", a.syncHandler)
	r.Post("/user/{userID}/filter", a.createFilter)
	r.Get("/user/{userID}/filter/{filterID}", a.getFilter)
}

func (a *API) syncHandler(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	me := requester(r)
	var timeout time.Duration
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			a.fail(w, r, mxhttp.InvalidParam("Invalid timeout %q", t))
			return
		}
		timeout = time.Duration(min(ms, int64(syncapi.MaxTimeout/time.Millisecond))) * time.Millisecond
	}
	fullState := false
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		fullState = true
	default:
		a.fail(w, r, mxhttp.InvalidParam("full_state must be true or false"))
		return
	}
	setPresence := q.Get("set_presence")
	switch setPresence {
	case "", "online", "offline", "unavailable":
	default:
		a.fail(w, r, mxhttp.InvalidParam("Invalid set_presence %q", setPresence))
		return
	}
	f, err := a.sync.ResolveFilter(r.Context(), me.UserID, q.Get("filter"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	resp, err := a.sync.Sync(r.Context(), syncapi.Request{
		UserID: me.UserID, DeviceID: me.DeviceID, Scope: txnRef(r, "").Scope,
		Since: q.Get("since"), Timeout: timeout, FullState: fullState, SetPresence: setPresence, Filter: f,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, resp)
}

func (a *API) createFilter(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userID")
	if userID != requester(r).UserID {
		a.fail(w, r, mxhttp.Forbidden("Cannot create filters for other users"))
		return
	}
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var obj map[string]json.RawMessage
	if err := mxhttp.Unmarshal(body, &obj); err != nil {
		a.fail(w, r, err)
		return
	}
	id, err := a.sync.CreateFilter(r.Context(), userID, body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"filter_id": id})
}

func (a *API) getFilter(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userID")
	if userID != requester(r).UserID {
		a.fail(w, r, mxhttp.Forbidden("Cannot read other users' filters"))
		return
	}
	data, err := a.sync.GetFilter(r.Context(), userID, pathParam(r, "filterID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, json.RawMessage(data))
}
