package clientapi

import (
	"encoding/json"
	"net/http"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// passwordFlows protect sensitive operations of a logged-in user.
var passwordFlows = []accounts.Flow{{Stages: []string{accounts.StagePassword}}}

func (a *API) checkPasswordUIA(r *http.Request, auth json.RawMessage) error {
	return a.accounts.CheckUIA(r.Context(), accounts.UIARequest{
		Method: r.Method, Path: r.URL.Path, UserID: requester(r).UserID, Auth: auth, Flows: passwordFlows,
	})
}

type changePasswordRequest struct {
	Auth          json.RawMessage `json:"auth"`
	NewPassword   string          `json:"new_password"`
	LogoutDevices *bool           `json:"logout_devices"`
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request) {
	var req changePasswordRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if hasAuth, err := accounts.HasAuth(req.Auth); err != nil {
		a.fail(w, r, err)
		return
	} else if hasAuth && req.NewPassword == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing new_password"))
		return
	}
	if err := a.checkPasswordUIA(r, req.Auth); err != nil {
		a.fail(w, r, err)
		return
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	me := requester(r)
	if err := a.accounts.ChangePassword(r.Context(), me.UserID, req.NewPassword, me.DeviceID, logout); err != nil {
		a.fail(w, r, err)
		return
	}
	if logout {
		if err := a.push.DeleteOtherDevicesPushers(r.Context(), me.UserID, me.DeviceID); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	ok(w, empty)
}

type deactivateRequest struct {
	Auth     json.RawMessage `json:"auth"`
	Erase    bool            `json:"erase"`
	IDServer string          `json:"id_server"`
}

func (a *API) deactivate(w http.ResponseWriter, r *http.Request) {
	var req deactivateRequest
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.checkPasswordUIA(r, req.Auth); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accounts.Deactivate(r.Context(), requester(r).UserID); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"id_server_unbind_result": "no-support"})
}
