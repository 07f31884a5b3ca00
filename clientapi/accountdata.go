package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
)

func (a *API) accountDataRoutes(r chi.Router) {
	r.Get("/user/{userID}/account_data/{type}", a.getAccountData(false))
	r.Put("/user/{userID}/account_data/{type}", a.putAccountData(false))
	r.Get("/user/{userID}/rooms/{roomID}/account_data/{type}", a.getAccountData(true))
	r.Put("/user/{userID}/rooms/{roomID}/account_data/{type}", a.putAccountData(true))
	r.Get("/user/{userID}/rooms/{roomID}/tags", a.getTags)
	r.Put("/user/{userID}/rooms/{roomID}/tags/{tag}", a.putTag)
	r.Delete("/user/{userID}/rooms/{roomID}/tags/{tag}", a.deleteTag)
}

// ownAccountData checks that the path's user is the requester: account data
// is private to its owner. For the per-room paths it also returns the room,
// which must not be empty (that would address the global account data).
func ownAccountData(r *http.Request, perRoom bool) (string, error) {
	if pathParam(r, "userID") != requester(r).UserID {
		return "", mxhttp.Forbidden("Cannot access account data of other users")
	}
	roomID := pathParam(r, "roomID")
	if perRoom && roomID == "" {
		return "", mxhttp.InvalidParam("Missing room ID")
	}
	return roomID, nil
}

func (a *API) getAccountData(perRoom bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		roomID, err := ownAccountData(r, perRoom)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		c, err := a.accountData.Get(r.Context(), requester(r).UserID, roomID, pathParam(r, "type"))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, c)
	}
}

func (a *API) putAccountData(perRoom bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		roomID, err := ownAccountData(r, perRoom)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if err := a.accountData.Put(r.Context(), requester(r).UserID, roomID, pathParam(r, "type"), body); err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, empty)
	}
}

func (a *API) getTags(w http.ResponseWriter, r *http.Request) {
	roomID, err := ownAccountData(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	tags, err := a.accountData.Tags(r.Context(), requester(r).UserID, roomID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]map[string]json.RawMessage{"tags": tags})
}

func (a *API) putTag(w http.ResponseWriter, r *http.Request) {
	roomID, err := ownAccountData(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accountData.SetTag(r.Context(), requester(r).UserID, roomID, pathParam(r, "tag"), body); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) deleteTag(w http.ResponseWriter, r *http.Request) {
	roomID, err := ownAccountData(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accountData.RemoveTag(r.Context(), requester(r).UserID, roomID, pathParam(r, "tag")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}
