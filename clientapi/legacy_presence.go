package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// Presence lists, from the 2015 API: the users whose presence a user
// follows, listed with their presence. Only the owner reads or edits a list.

func (a *API) ownPresenceList(r *http.Request) (string, error) {
	userID := pathParam(r, "userID")
	if err := validUserID(userID); err != nil {
		return "", err
	}
	if userID != requester(r).UserID {
		return "", mxhttp.Forbidden("Cannot access another user's presence list")
	}
	return userID, nil
}

func (a *API) getPresenceList(w http.ResponseWriter, r *http.Request) {
	owner, err := a.ownPresenceList(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	list, err := a.presence.List(r.Context(), owner)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, list)
}

func (a *API) editPresenceList(w http.ResponseWriter, r *http.Request) {
	owner, err := a.ownPresenceList(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		Invite json.RawMessage `json:"invite"`
		Drop   json.RawMessage `json:"drop"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	invite, err := userIDList(body.Invite, "invite")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	drop, err := userIDList(body.Drop, "drop")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.presence.EditList(r.Context(), owner, invite, drop, a.acceptPresenceInvite); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

// userIDList decodes an optional list of user IDs, skipping empty strings
// as Synapse did.
func userIDList(raw json.RawMessage, field string) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, mxhttp.BadJSON("%s must be a list of user IDs", field)
	}
	out := ids[:0]
	for _, id := range ids {
		if id == "" {
			continue
		}
		if err := validUserID(id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

// acceptPresenceInvite answers for the invited user as Synapse's 2015
// presence handler did: a local user who exists accepts at once; anyone
// else (an unknown local user, or a remote one, as presence invitations are
// not sent over federation) does not, and is left off the list.
func (a *API) acceptPresenceInvite(ctx context.Context, userID string) (bool, error) {
	if !a.accounts.IsLocal(userID) {
		return false, nil
	}
	_, err := a.accounts.GetAccount(ctx, userID)
	if errors.Is(err, accounts.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
