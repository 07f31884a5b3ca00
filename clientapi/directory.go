package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/rooms"
)

// publicDirectoryRoutes are the directory endpoints the spec serves without
// an access token.
func (a *API) publicDirectoryRoutes(r chi.Router) {
	r.Get("/directory/room/{roomAlias}", a.getRoomAlias)
	r.Get("/directory/list/room/{roomID}", a.getDirectoryVisibility)
	r.Get("/publicRooms", a.getPublicRooms)
}

// directoryRoutes are the authenticated directory and upgrade endpoints.
func (a *API) directoryRoutes(r chi.Router) {
	r.Put("/directory/room/{roomAlias}", a.setRoomAlias)
	r.Delete("/directory/room/{roomAlias}", a.deleteRoomAlias)
	r.Get("/rooms/{roomID}/aliases", a.roomAliases)
	r.Put("/directory/list/room/{roomID}", a.setDirectoryVisibility)
	r.Put("/directory/list/appservice/{networkID}/{roomID}", a.setNetworkVisibility)
	r.Post("/publicRooms", a.queryPublicRooms)
	r.Post("/rooms/{roomID}/upgrade", a.upgradeRoom)
}

func (a *API) getRoomAlias(w http.ResponseWriter, r *http.Request) {
	target, err := a.rooms.ResolveAlias(r.Context(), pathParam(r, "roomAlias"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, target)
}

func (a *API) setRoomAlias(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RoomID *string `json:"room_id"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.RoomID == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing room_id"))
		return
	}
	me := requester(r)
	if err := a.rooms.CreateAliasAs(r.Context(), me.UserID, me.IsAdmin, me.AppServiceID, pathParam(r, "roomAlias"), *req.RoomID); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) deleteRoomAlias(w http.ResponseWriter, r *http.Request) {
	me := requester(r)
	if err := a.rooms.DeleteAliasAs(r.Context(), me.UserID, me.IsAdmin, me.AppServiceID, pathParam(r, "roomAlias")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) roomAliases(w http.ResponseWriter, r *http.Request) {
	me := requester(r)
	aliases, err := a.rooms.RoomAliases(r.Context(), me.UserID, me.IsAdmin, pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string][]string{"aliases": aliases})
}

func (a *API) getDirectoryVisibility(w http.ResponseWriter, r *http.Request) {
	v, err := a.rooms.DirectoryVisibility(r.Context(), pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"visibility": v})
}

func (a *API) setDirectoryVisibility(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	visibility := rooms.VisibilityPublic // the spec's default
	if req.Visibility != nil {
		visibility = *req.Visibility
	}
	me := requester(r)
	if err := a.rooms.SetDirectoryVisibility(r.Context(), me.UserID, me.IsAdmin, pathParam(r, "roomID"), visibility); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) getPublicRooms(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r, 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	a.publicRooms(w, r, rooms.PublicRoomsQuery{Limit: limit, Since: q.Get("since"), Server: q.Get("server")})
}

func (a *API) queryPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req rooms.PublicRoomsBody
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	q, err := req.Query()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q.Server = r.URL.Query().Get("server")
	a.publicRooms(w, r, q)
}

func (a *API) publicRooms(w http.ResponseWriter, r *http.Request, q rooms.PublicRoomsQuery) {
	page, err := a.rooms.PublicRooms(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, page)
}

func (a *API) upgradeRoom(w http.ResponseWriter, r *http.Request) {
	var req rooms.UpgradeRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	newRoomID, err := a.rooms.Upgrade(r.Context(), requester(r).UserID, pathParam(r, "roomID"), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"replacement_room": newRoomID})
}
