package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// validUserID checks the shape of a user ID taken from a path.
func validUserID(id string) error {
	if !strings.HasPrefix(id, "@") || !strings.Contains(id, ":") || len(id) > accounts.MaxUserIDLength {
		return mxhttp.InvalidParam("Invalid user ID %q", id)
	}
	return nil
}

// profileOf reads the profile of the user in the path, or one field of it
// (field != ""): a local user's here, another server's user's from their
// server.
func (a *API) profileOf(w http.ResponseWriter, r *http.Request, field string) (map[string]json.RawMessage, bool) {
	userID := pathParam(r, "userID")
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	var p map[string]json.RawMessage
	var err error
	switch {
	case a.accounts.IsLocal(userID):
		p, err = a.accounts.GetProfile(r.Context(), userID)
	case a.remote != nil:
		p, err = a.remote.QueryProfile(r.Context(), userID, field)
	default:
		err = mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	return p, true
}

func (a *API) getProfile(w http.ResponseWriter, r *http.Request) {
	if p, found := a.profileOf(w, r, ""); found {
		ok(w, p)
	}
}

func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) {
	key := pathParam(r, "key")
	p, found := a.profileOf(w, r, key)
	if !found {
		return
	}
	v, set := p[key]
	if !set {
		a.fail(w, r, mxhttp.NotFound("Profile field %s not set", key))
		return
	}
	ok(w, map[string]json.RawMessage{key: v})
}

func (a *API) setProfileField(w http.ResponseWriter, r *http.Request) {
	userID, key := pathParam(r, "userID"), pathParam(r, "key")
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return
	}
	var body map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	value, present := body[key]
	if !present {
		a.fail(w, r, mxhttp.MissingParam("Missing key %s", key))
		return
	}
	a.writeProfileField(w, r, userID, key, value)
}

func (a *API) deleteProfileField(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userID")
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeProfileField(w, r, userID, pathParam(r, "key"), nil)
}

func (a *API) writeProfileField(w http.ResponseWriter, r *http.Request, userID, key string, value json.RawMessage) {
	me := requester(r)
	if ok, retry := a.allow(r, a.rcMessage, me.UserID); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	if err := a.accounts.SetProfileField(r.Context(), me, userID, key, value); err != nil {
		a.fail(w, r, err)
		return
	}
	if key == "displayname" || key == "avatar_url" {
		if err := a.rooms.UpdateMemberProfiles(r.Context(), userID); err != nil {
			a.fail(w, r, err)
			return
		}
		// A user in no room writes no member event for the directory's
		// reader to see.
		if err := a.userDir.ProfileChanged(r.Context(), userID); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	ok(w, empty)
}
