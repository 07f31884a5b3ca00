package clientapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// moderationRoutes are the account moderation endpoints of Matrix 1.18,
// served under /_matrix/client/v1.
func (a *API) moderationRoutes(r chi.Router) {
	r.Get("/admin/suspend/{userID}", a.getSuspended)
	r.Put("/admin/suspend/{userID}", a.setSuspended)
	r.Get("/admin/lock/{userID}", a.getLocked)
	r.Put("/admin/lock/{userID}", a.setLocked)
}

// whois describes a local user's devices and where they were last seen,
// for server admins and the user themselves. As in Synapse, an unknown
// local user has no devices.
func (a *API) whois(w http.ResponseWriter, r *http.Request) {
	me := requester(r)
	userID := pathParam(r, "userID")
	if userID != me.UserID && !me.IsAdmin {
		a.fail(w, r, mxhttp.Forbidden("You are not a server admin"))
		return
	}
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return
	}
	if !a.accounts.IsLocal(userID) {
		a.fail(w, r, mxhttp.InvalidParam("Can only whois a local user"))
		return
	}
	who, err := a.accounts.Whois(r.Context(), userID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, who)
}

func (a *API) getSuspended(w http.ResponseWriter, r *http.Request) {
	suspended, err := a.accounts.Suspended(r.Context(), requester(r), pathParam(r, "userID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"suspended": suspended})
}

func (a *API) setSuspended(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Suspended *bool `json:"suspended"`
	}
	if err := a.decodeModeration(r, &req, func() bool { return req.Suspended != nil }, "suspended"); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accounts.SetSuspended(r.Context(), requester(r), pathParam(r, "userID"), *req.Suspended); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"suspended": *req.Suspended})
}

func (a *API) getLocked(w http.ResponseWriter, r *http.Request) {
	locked, err := a.accounts.Locked(r.Context(), requester(r), pathParam(r, "userID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"locked": locked})
}

func (a *API) setLocked(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Locked *bool `json:"locked"`
	}
	if err := a.decodeModeration(r, &req, func() bool { return req.Locked != nil }, "locked"); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accounts.SetLocked(r.Context(), requester(r), pathParam(r, "userID"), *req.Locked); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"locked": *req.Locked})
}

// decodeModeration reads the body of a moderation PUT into v and checks
// that its one field was given. Only admins get this far with a bad body:
// anyone else learns nothing, not even that the body is wrong.
func (a *API) decodeModeration(r *http.Request, v any, given func() bool, field string) error {
	if !requester(r).IsAdmin {
		return mxhttp.Forbidden("Requesting user is not a server administrator")
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, v); err != nil {
		return err
	}
	if !given() {
		return mxhttp.MissingParam("Missing %s", field)
	}
	return nil
}

// logoutRoutes are all a locked account may use.
var logoutRoutes = clientRouteMux(func(allow func(method, pattern string)) {
	allow(http.MethodPost, "/logout")
	allow(http.MethodPost, "/logout/all")
})

// suspendedRoutes are what a suspended account may not do, the spec's
// recommended list: join, knock, invite, send events, change its profile.
// Leaving, redacting its own events and everything that only reads stay
// open; state events and redactions are decided by checkSuspended.
var suspendedRoutes = clientRouteMux(func(forbid func(method, pattern string)) {
	forbid(http.MethodPost, "/createRoom")
	forbid(http.MethodPost, "/join/{roomIDOrAlias}")
	forbid(http.MethodPost, "/knock/{roomIDOrAlias}")
	forbid(http.MethodPost, "/rooms/{roomID}/join")
	forbid(http.MethodPost, "/rooms/{roomID}/invite")
	forbid(http.MethodPost, "/rooms/{roomID}/kick")
	forbid(http.MethodPost, "/rooms/{roomID}/ban")
	forbid(http.MethodPost, "/rooms/{roomID}/unban")
	forbid(http.MethodPost, "/rooms/{roomID}/upgrade")
	forbid(http.MethodPut, "/rooms/{roomID}/send/{eventType}/{txnID}")
	forbid(http.MethodPut, "/profile/{userID}/{key}")
	forbid(http.MethodDelete, "/profile/{userID}/{key}")
})

var (
	stateRoutes = clientRouteMux(func(add func(method, pattern string)) {
		add(http.MethodPut, "/rooms/{roomID}/state/{eventType}")
		add(http.MethodPut, "/rooms/{roomID}/state/{eventType}/*")
	})
	redactRoutes = clientRouteMux(func(add func(method, pattern string)) {
		add(http.MethodPut, "/rooms/{roomID}/redact/{eventID}/{txnID}")
	})
)

// clientRouteMux builds a router that only matches (its handlers never
// run) the given client API routes, under every prefix they are served
// at. Matching the path rather than the route the request took works
// wherever the access-token middleware runs, before routing or after.
func clientRouteMux(routes func(add func(method, pattern string))) *chi.Mux {
	m := chi.NewMux()
	for _, p := range []string{"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/api/v1"} {
		routes(func(method, pattern string) { m.MethodFunc(method, p+pattern, http.NotFound) })
	}
	return m
}

// matchRoute matches the request's path against m, returning the route's
// parameters (percent-decoded) when it matches.
func matchRoute(m *chi.Mux, r *http.Request) (func(string) string, bool) {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	rctx := chi.NewRouteContext()
	if !m.Match(rctx, r.Method, path) {
		return nil, false
	}
	return func(key string) string {
		v, err := url.PathUnescape(rctx.URLParam(key))
		if err != nil {
			return rctx.URLParam(key)
		}
		return v
	}, true
}

// checkModeration refuses what a locked or suspended account may not do.
func (a *API) checkModeration(r *http.Request, req *accounts.Requester) error {
	if req.Locked {
		if _, ok := matchRoute(logoutRoutes, r); !ok {
			return accounts.UserLocked()
		}
	}
	if req.Suspended {
		return a.checkSuspended(r, req)
	}
	return nil
}

func (a *API) checkSuspended(r *http.Request, req *accounts.Requester) error {
	if _, ok := matchRoute(suspendedRoutes, r); ok {
		return accounts.UserSuspended()
	}
	if param, ok := matchRoute(stateRoutes, r); ok {
		// The only state a suspended user may send is their own leave
		// (the spec lets them leave rooms and reject invites).
		if param("eventType") != "m.room.member" || param("*") != req.UserID || !leavingBody(r) {
			return accounts.UserSuspended()
		}
		return nil
	}
	if param, ok := matchRoute(redactRoutes, r); ok {
		// Their own events they may redact, others' not. An event they
		// cannot see is left to the handler to refuse.
		ev, err := a.rooms.GetEvent(r.Context(), req.UserID, param("roomID"), param("eventID"))
		if err != nil {
			return nil
		}
		var e struct {
			Sender string `json:"sender"`
		}
		if json.Unmarshal(ev, &e) == nil && e.Sender != req.UserID {
			return accounts.UserSuspended()
		}
	}
	return nil
}

// leavingBody reports whether the request's body is a membership of
// "leave", leaving the body for the handler to read again.
func leavingBody(r *http.Request) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, mxhttp.DefaultBodyLimit))
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
	if err != nil {
		return false
	}
	var c struct {
		Membership string `json:"membership"`
	}
	return json.Unmarshal(body, &c) == nil && c.Membership == "leave"
}
