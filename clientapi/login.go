package clientapi

import (
	"net/http"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	flows := []map[string]string{{"type": accounts.StagePassword}}
	if a.appservices != nil && len(a.appservices.Regs) > 0 {
		flows = append(flows, map[string]string{"type": LoginTypeAppService})
	}
	ok(w, map[string]any{"flows": flows})
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
