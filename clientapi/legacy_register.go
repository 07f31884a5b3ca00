package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// apiV1Prefix is the 2015 API's prefix, which also serves today's
// endpoints.
const apiV1Prefix = "/_matrix/client/api/v1"

// v1RegisterRoutes serve registration under api/v1: the 2015 flows and
// body ({"type":"m.login.password","user":...,"password":...}), and
// today's user-interactive registration for any other body.
func (a *API) v1RegisterRoutes(r chi.Router) {
	r.Get("/register", a.v1RegisterFlows)
	r.Post("/register", a.v1Register)
}

// v1RegisterFlows lists the one 2015 flow this server completes, a
// password in one request; none when that cannot succeed (registration
// off, or a registration token required, which the 2015 body cannot carry).
func (a *API) v1RegisterFlows(w http.ResponseWriter, r *http.Request) {
	flows := []map[string]string{}
	if a.cfg.EnableRegistration && !a.cfg.RegistrationRequiresToken {
		flows = append(flows, map[string]string{"type": accounts.StagePassword})
	}
	ok(w, map[string]any{"flows": flows})
}

type v1RegisterRequest struct {
	Type     string          `json:"type"`
	Auth     json.RawMessage `json:"auth"`
	User     string          `json:"user"`
	Password *string         `json:"password"`
}

func (a *API) v1Register(w http.ResponseWriter, r *http.Request) {
	body, err := readUTF8Body(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req v1RegisterRequest
	if err := mxhttp.Unmarshal(body, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Type != accounts.StagePassword || req.Auth != nil || r.URL.Query().Has("kind") {
		// Not the 2015 body: today's registration, with all its checks.
		r.Body = io.NopCloser(bytes.NewReader(body))
		a.register(w, r)
		return
	}
	// The same checks as today's registration, where the 2015 body has
	// no user-interactive auth to carry them.
	if !a.cfg.EnableRegistration {
		a.fail(w, r, mxhttp.Forbidden("Registration has been disabled"))
		return
	}
	if a.cfg.RegistrationRequiresToken {
		a.fail(w, r, mxhttp.Forbidden("Registration requires a registration token: use /_matrix/client/v3/register"))
		return
	}
	if req.Password == nil || *req.Password == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing password"))
		return
	}
	if len(*req.Password) > accounts.MaxPasswordLength {
		a.fail(w, r, mxhttp.InvalidParam("Password too long"))
		return
	}
	ip := clientIP(r)
	if ok, retry := a.rcRegistration.Allow(ip); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	localpart := strings.ToLower(req.User)
	if localpart != "" {
		if err := a.accounts.CheckAvailable(r.Context(), localpart); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	creds, err := a.accounts.Register(r.Context(), accounts.RegisterRequest{
		Localpart: localpart, Password: *req.Password, IP: ip,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.afterRegister(r.Context(), creds.UserID)
	c := a.credentials(creds)
	ok(w, map[string]string{"user_id": c.UserID, "access_token": c.AccessToken, "home_server": c.HomeServer, "device_id": c.DeviceID})
}

// DefaultAvatar makes a new user's avatar and returns its mxc:// URI
// (enable_identicons).
type DefaultAvatar func(ctx context.Context, userID string) (string, error)

// SetDefaultAvatar has every user registered from now on given an avatar
// made by f; nil (the default) gives none.
func (a *API) SetDefaultAvatar(f DefaultAvatar) { a.defaultAvatar = f }

// afterRegister gives a newly registered user their default avatar, if the
// server makes one. A failure leaves the account without one: the
// registration itself succeeded.
func (a *API) afterRegister(ctx context.Context, userID string) {
	if a.defaultAvatar == nil {
		return
	}
	uri, err := a.defaultAvatar(ctx, userID)
	if err != nil {
		a.log.Warn("making default avatar", "user_id", userID, "err", err)
		return
	}
	value, _ := json.Marshal(uri)
	if err := a.accounts.SetProfileField(ctx, &accounts.Requester{UserID: userID}, userID, "avatar_url", value); err != nil {
		a.log.Warn("setting default avatar", "user_id", userID, "err", err)
	}
}
