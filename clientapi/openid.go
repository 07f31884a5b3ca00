package clientapi

import (
	"encoding/json"
	"net/http"

	"homeserver/mxhttp"
)

// requestOpenIDToken issues an OpenID token for the requester, which
// another service exchanges for their user ID through the federation API.
func (a *API) requestOpenIDToken(w http.ResponseWriter, r *http.Request) {
	userID := pathParam(r, "userID")
	if err := validUserID(userID); err != nil {
		a.fail(w, r, err)
		return
	}
	// The body is an empty object, reserved for future expansion: it must
	// be a JSON object, its content is ignored.
	var body map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	tok, err := a.accounts.RequestOpenIDToken(r.Context(), requester(r), userID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{
		"access_token":       tok.AccessToken,
		"token_type":         "Bearer",
		"matrix_server_name": a.cfg.ServerName,
		"expires_in":         int64(tok.ExpiresIn.Seconds()),
	})
}
