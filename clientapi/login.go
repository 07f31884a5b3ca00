package clientapi

import (
	"encoding/json"
	"net/http"
	"time"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// LoginTypeToken logs in with a token from /login/get_token.
const LoginTypeToken = "m.login.token"

// LoginTokens is login_via_existing_session: whether logged-in clients may
// issue login tokens, whether they must confirm with the user's password
// first, and how long a token stays valid.
type LoginTokens struct {
	Enabled    bool
	RequireUIA bool
	Lifetime   time.Duration
}

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	flows := []map[string]any{{"type": accounts.StagePassword}}
	if a.appservices != nil && len(a.appservices.Regs) > 0 {
		flows = append(flows, map[string]any{"type": LoginTypeAppService})
	}
	if a.cfg.LoginTokens.Enabled {
		// Unauthenticated clients learn here that they may be handed a
		// token by a logged-in one.
		flows = append(flows, map[string]any{"type": LoginTypeToken, "get_login_token": true})
	}
	ok(w, map[string]any{"flows": flows})
}

type getLoginTokenRequest struct {
	Auth json.RawMessage `json:"auth"`
}

// getLoginToken issues a single-use login token for the requester. The spec
// asks for user-interactive auth on every call (no grace period), so that
// the user consents to each new client.
func (a *API) getLoginToken(w http.ResponseWriter, r *http.Request) {
	var req getLoginTokenRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	me := requester(r)
	if me.IsGuest {
		a.fail(w, r, mxhttp.GuestAccessForbidden("Guests cannot issue login tokens"))
		return
	}
	if a.cfg.LoginTokens.RequireUIA {
		if err := a.checkPasswordUIA(r, req.Auth); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	if ok, retry := a.rcGetLoginToken.Allow(me.UserID); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	token, err := a.accounts.IssueLoginToken(r.Context(), me.UserID, a.cfg.LoginTokens.Lifetime)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"login_token": token, "expires_in_ms": a.cfg.LoginTokens.Lifetime.Milliseconds()})
}

type loginRequest struct {
	Type       string               `json:"type"`
	Identifier *accounts.Identifier `json:"identifier"`
	// Deprecated top-level forms of the identifier.
	User    string `json:"user"`
	Medium  string `json:"medium"`
	Address string `json:"address"`

	Password                 *string `json:"password"`
	Token                    string  `json:"token"`
	DeviceID                 string  `json:"device_id"`
	InitialDeviceDisplayName string  `json:"initial_device_display_name"`
	RefreshToken             bool    `json:"refresh_token"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Type == LoginTypeAppService {
		a.loginAppService(w, r, req)
		return
	}
	ip := clientIP(r)
	if ok, retry := a.rcLoginAddress.Allow(ip); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	switch req.Type {
	case "":
		a.fail(w, r, mxhttp.MissingParam("Missing login type"))
		return
	case LoginTypeToken:
		// Offered only while tokens can be issued, like any login type.
		if a.cfg.LoginTokens.Enabled {
			a.loginToken(w, r, req, ip)
			return
		}
		a.fail(w, r, mxhttp.Unknown("Unknown login type %s", req.Type))
		return
	case accounts.StagePassword:
	default:
		a.fail(w, r, mxhttp.Unknown("Unknown login type %s", req.Type))
		return
	}
	user := req.User
	if id := req.Identifier; id != nil {
		switch id.Type {
		case "m.id.user":
			user = id.User
		case "m.id.thirdparty", "m.id.phone":
			a.fail(w, r, mxhttp.Forbidden("Unknown third-party identifier"))
			return
		default:
			a.fail(w, r, mxhttp.Unknown("Unknown identifier type %q", id.Type))
			return
		}
	} else if req.Medium != "" || req.Address != "" {
		a.fail(w, r, mxhttp.Forbidden("Unknown third-party identifier"))
		return
	}
	if user == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing user identifier"))
		return
	}
	if req.Password == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing password"))
		return
	}
	userID, err := a.accounts.ResolveUser(user)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if ok, retry := a.rcLoginAccount.Allow(userID); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	creds, err := a.accounts.Login(r.Context(), accounts.LoginRequest{
		User: userID, Password: *req.Password, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, RefreshToken: req.RefreshToken, IP: ip,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.loggedIn(w, creds)
}

// loginToken logs in with a token from /login/get_token, which is spent.
func (a *API) loginToken(w http.ResponseWriter, r *http.Request, req loginRequest, ip string) {
	if req.Token == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing token"))
		return
	}
	creds, err := a.accounts.LoginWithToken(r.Context(), req.Token, req.DeviceID, req.InitialDeviceDisplayName, ip, req.RefreshToken)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.loggedIn(w, creds)
}

// loggedIn answers a successful login.
func (a *API) loggedIn(w http.ResponseWriter, creds accounts.Credentials) {
	resp := a.credentials(creds)
	if wk := a.wellKnown(); wk != nil {
		resp.WellKnown = wk
	}
	ok(w, resp)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.RefreshToken == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing refresh_token"))
		return
	}
	creds, err := a.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{
		"access_token": creds.AccessToken, "refresh_token": creds.RefreshToken,
		"expires_in_ms": creds.ExpiresIn.Milliseconds(),
	})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	if err := a.accounts.Logout(r.Context(), requester(r)); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) logoutAll(w http.ResponseWriter, r *http.Request) {
	if err := a.accounts.LogoutAll(r.Context(), requester(r).UserID); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	req := requester(r)
	resp := map[string]any{"user_id": req.UserID, "is_guest": req.IsGuest}
	if req.DeviceID != "" {
		resp["device_id"] = req.DeviceID
	}
	ok(w, resp)
}
