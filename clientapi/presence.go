package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

func (a *API) presenceRoutes(r chi.Router) {
	r.Put("/presence/{userID}/status", a.setPresence)
	r.Get("/presence/{userID}/status", a.getPresence)
}

func (a *API) setPresence(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userID")
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return
	}
	if userID != requester(r).UserID {
		a.fail(w, r, mxhttp.Forbidden("You cannot set the presence of another user"))
		return
	}
	var body struct {
		Presence  *string         `json:"presence"`
		StatusMsg json.RawMessage `json:"status_msg"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Presence == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing presence"))
		return
	}
	// status_msg absent keeps the current message; null clears it.
	var msg *string
	if body.StatusMsg != nil {
		if err := json.Unmarshal(body.StatusMsg, &msg); err != nil {
			a.fail(w, r, mxhttp.BadJSON("status_msg must be a string"))
			return
		}
	}
	if msg == nil {
		msg = new(string)
	}
	if err := a.presence.Set(r.Context(), userID, *body.Presence, *msg, body.StatusMsg != nil); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) getPresence(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userID")
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.canSeePresence(r.Context(), requester(r).UserID, userID); err != nil {
		a.fail(w, r, err)
		return
	}
	st, err := a.presence.Get(r.Context(), userID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, a.presence.Content(st))
}

// canSeePresence allows one's own presence and that of users one shares a
// joined room with; a local user who does not exist is not found.
func (a *API) canSeePresence(ctx context.Context, requesterID, target string) error {
	if requesterID == target {
		return nil
	}
	if a.accounts.IsLocal(target) {
		if _, err := a.accounts.GetAccount(ctx, target); errors.Is(err, accounts.ErrNotFound) {
			return mxhttp.NotFound("Unknown user %s", target)
		} else if err != nil {
			return err
		}
	}
	mine, err := a.rooms.JoinedRooms(ctx, requesterID)
	if err != nil {
		return err
	}
	theirs, err := a.rooms.JoinedRooms(ctx, target)
	if err != nil {
		return err
	}
	joined := make(map[string]bool, len(mine))
	for _, id := range mine {
		joined[id] = true
	}
	for _, id := range theirs {
		if joined[id] {
			return nil
		}
	}
	return mxhttp.Forbidden("You are not allowed to see their presence")
}
