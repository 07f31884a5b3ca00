package adminapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// tokenAdmin is what the registration-token endpoints (Synapse's
// docs/admin_api/registration_tokens.md) ask of the accounts service,
// which owns the tokens' rules: their queries are its store's, since a
// token's pending uses are the UIA sessions holding it.
type tokenAdmin interface {
	RegistrationTokens(ctx context.Context, valid *bool) ([]accounts.RegistrationToken, error)
	RegistrationToken(ctx context.Context, token string) (accounts.RegistrationToken, error)
	CreateRegistrationToken(ctx context.Context, req accounts.NewRegistrationToken) (accounts.RegistrationToken, error)
	UpdateRegistrationToken(ctx context.Context, token string, u accounts.RegistrationTokenUpdate) (accounts.RegistrationToken, error)
	DeleteRegistrationToken(ctx context.Context, token string) error
}

var _ tokenAdmin = (*accounts.Service)(nil)

func (a *API) tokenRoutes(r chi.Router) {
	r.Get("/v1/registration_tokens", a.listRegistrationTokens)
	r.Post("/v1/registration_tokens/new", a.createRegistrationToken)
	r.Get("/v1/registration_tokens/{token}", a.getRegistrationToken)
	r.Put("/v1/registration_tokens/{token}", a.updateRegistrationToken)
	r.Delete("/v1/registration_tokens/{token}", a.deleteRegistrationToken)
}

func (a *API) tokens() tokenAdmin { return a.d.Accounts }

func (a *API) listRegistrationTokens(w http.ResponseWriter, r *http.Request) {
	var valid *bool
	if v, given := r.URL.Query()["valid"]; given {
		if v[0] != "true" && v[0] != "false" {
			a.fail(w, r, mxhttp.InvalidParam("Boolean query parameter 'valid' must be one of ['true', 'false']"))
			return
		}
		b := v[0] == "true"
		valid = &b
	}
	list, err := a.tokens().RegistrationTokens(r.Context(), valid)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"registration_tokens": list})
}

func (a *API) getRegistrationToken(w http.ResponseWriter, r *http.Request) {
	t, err := a.tokens().RegistrationToken(r.Context(), pathParam(r, "token"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, t)
}

func (a *API) createRegistrationToken(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	var req accounts.NewRegistrationToken
	if raw, given := body["token"]; given {
		if json.Unmarshal(raw, &req.Token) != nil {
			a.fail(w, r, mxhttp.InvalidParam("token must be a string"))
			return
		}
		if req.Token == "" {
			a.fail(w, r, mxhttp.InvalidParam("token must not be empty"))
			return
		}
	}
	// As in Synapse, length only matters (and is only checked) when the
	// token is generated.
	if raw, given := body["length"]; given && req.Token == "" {
		n, err := regTokenInt(raw, false)
		if err != nil || n == nil || *n <= 0 || *n > accounts.MaxRegistrationTokenLength {
			a.fail(w, r, mxhttp.InvalidParam("length must be an integer > 0 and <= %d", accounts.MaxRegistrationTokenLength))
			return
		}
		req.Length = int(*n)
	}
	var err error
	if req.UsesAllowed, _, err = regTokenNullableInt(body, "uses_allowed"); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.ExpiryTime, _, err = regTokenNullableInt(body, "expiry_time"); err != nil {
		a.fail(w, r, err)
		return
	}
	t, err := a.tokens().CreateRegistrationToken(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, t)
}

func (a *API) updateRegistrationToken(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	var u accounts.RegistrationTokenUpdate
	var err error
	if u.UsesAllowed, u.SetUsesAllowed, err = regTokenNullableInt(body, "uses_allowed"); err != nil {
		a.fail(w, r, err)
		return
	}
	if u.ExpiryTime, u.SetExpiryTime, err = regTokenNullableInt(body, "expiry_time"); err != nil {
		a.fail(w, r, err)
		return
	}
	t, err := a.tokens().UpdateRegistrationToken(r.Context(), pathParam(r, "token"), u)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, t)
}

func (a *API) deleteRegistrationToken(w http.ResponseWriter, r *http.Request) {
	if err := a.tokens().DeleteRegistrationToken(r.Context(), pathParam(r, "token")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

// regTokenNullableInt reads body[key]: an integer or null, and whether it was given.
func regTokenNullableInt(body map[string]json.RawMessage, key string) (*int64, bool, error) {
	raw, given := body[key]
	if !given {
		return nil, false, nil
	}
	n, err := regTokenInt(raw, true)
	if err != nil {
		return nil, true, mxhttp.InvalidParam("%s must be an integer or null", key)
	}
	return n, true, nil
}

// regTokenInt parses a JSON integer (not 1.5, not "1"), or null when allowed.
func regTokenInt(raw json.RawMessage, nullable bool) (*int64, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if v == nil {
		if nullable {
			return nil, nil
		}
		return nil, strconv.ErrSyntax
	}
	if _, isNum := v.(float64); !isNum {
		return nil, strconv.ErrSyntax
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return nil, err
	}
	return &n, nil
}
