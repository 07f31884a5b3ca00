// Package adminapi serves the part of Synapse's admin API
// (/_synapse/admin) that admins' tools use: users, rooms, media,
// registration tokens, server notices, event reports and federation
// destinations, with Synapse's paths, shapes, pagination and errors.
// Handlers are thin: they call the packages that own the logic, and the
// queries only an admin makes go through Store.
package adminapi

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/reports"
	"homeserver/rooms"
)

// Version is what server_version reports.
const Version = "homeserver 0.1"

// Store holds the queries only the admin API makes (package storage).
type Store interface {
	userStore
	roomStore
	mediaStore
}

// Deps are the services the admin API calls.
type Deps struct {
	Accounts *accounts.Service
	Rooms    *rooms.Service
	Reports  *reports.Service
	Store    Store
	// Media is the media repository (media.go says what of it is used).
	Media MediaAdmin
	// Destinations are federation's outbound queues (destinations.go);
	// nil when the server does not federate.
	Destinations DestinationAdmin
	// Notices sends server notices; nil when server_notices is not
	// configured.
	Notices NoticeSender
	// UserDir is told of profile changes (users.go); nil for none.
	UserDir ProfileIndexer
	// Requester returns the authenticated admin of a request (the client
	// API authenticates it and checks the admin flag before any handler
	// here runs).
	Requester func(*http.Request) *accounts.Requester
	Logger    *slog.Logger
}

// API is the admin API.
type API struct {
	d   Deps
	log *slog.Logger
	// tasks are the room deletions running in the background (rooms.go).
	tasks roomTasks
}

// New returns the admin API.
func New(d Deps) *API { return &API{d: d, log: d.Logger} }

// Stop stops the admin API's background work (room deletions, which
// record that they were interrupted) and waits for it; call it before
// closing the database.
func (a *API) Stop() { a.tasks.stop() }

// Routes registers the admin routes on r, which is mounted at
// /_synapse/admin behind authentication of a server admin.
func (a *API) Routes(r chi.Router) {
	r.Get("/v1/server_version", a.serverVersion)
	a.userRoutes(r)
	a.roomRoutes(r)
	a.mediaRoutes(r)
	a.tokenRoutes(r)
	a.noticeRoutes(r)
	a.reportRoutes(r)
	a.destinationRoutes(r)
}

func (a *API) serverVersion(w http.ResponseWriter, _ *http.Request) {
	ok(w, map[string]string{"server_version": Version})
}

func (a *API) requester(r *http.Request) *accounts.Requester { return a.d.Requester(r) }

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) { mxhttp.Fail(w, r, a.log, err) }

func ok(w http.ResponseWriter, v any) { mxhttp.WriteJSON(w, http.StatusOK, v) }

var pathParam = mxhttp.PathParam
