package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

type registerRequest struct {
	Type                     string          `json:"type"`
	Auth                     json.RawMessage `json:"auth"`
	Username                 string          `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

type credentialsResponse struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	HomeServer   string `json:"home_server,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	WellKnown    any    `json:"well_known,omitempty"`
}

func (a *API) credentials(c accounts.Credentials) credentialsResponse {
	return credentialsResponse{
		UserID: c.UserID, AccessToken: c.AccessToken, DeviceID: c.DeviceID,
		HomeServer: a.cfg.ServerName, RefreshToken: c.RefreshToken, ExpiresInMS: c.ExpiresIn.Milliseconds(),
	}
}

func (a *API) registrationFlows() []accounts.Flow {
	if a.cfg.RegistrationRequiresToken {
		return []accounts.Flow{{Stages: []string{accounts.StageRegistrationToken}}}
	}
	return []accounts.Flow{{Stages: []string{accounts.StageDummy}}}
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	switch kind {
	case "", "user":
	case "guest":
		a.registerGuest(w, r)
		return
	default:
		a.fail(w, r, mxhttp.InvalidParam("Invalid kind %q", kind))
		return
	}
	body, err := readUTF8Body(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req registerRequest
	if err := mxhttp.Unmarshal(body, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Type == LoginTypeAppService {
		a.registerAppService(w, r, req)
		return
	}
	if !a.cfg.EnableRegistration {
		a.fail(w, r, mxhttp.Forbidden("Registration has been disabled"))
		return
	}
	ip := clientIP(r)
	localpart := strings.ToLower(req.Username)
	if req.Username != "" {
		if err := a.accounts.CheckAvailable(r.Context(), localpart); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	if req.Password != nil && len(*req.Password) > accounts.MaxPasswordLength {
		a.fail(w, r, mxhttp.InvalidParam("Password too long"))
		return
	}
	// Checked before a stage can complete the session, so that the client
	// can retry with the same session (a bare request for flows may omit it).
	hasPassword := req.Password != nil && *req.Password != ""
	if hasAuth, err := accounts.HasAuth(req.Auth); err != nil {
		a.fail(w, r, err)
		return
	} else if hasAuth && !hasPassword {
		a.fail(w, r, mxhttp.MissingParam("Missing password"))
		return
	}
	session, err := a.accounts.CheckRegistrationUIA(r.Context(), accounts.UIARequest{
		Method: r.Method, Path: r.URL.Path, Auth: req.Auth,
		Flows: a.registrationFlows(), RegistrationTokens: a.cfg.RegistrationTokens,
		// Every registration opens exactly one session, so counting
		// sessions both limits registrations and bounds abandoned sessions.
		AllowNewSession: func() error {
			if ok, retry := a.rcRegistration.Allow(ip); !ok {
				return mxhttp.LimitExceeded(retry)
			}
			return nil
		},
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	creds, err := a.accounts.Register(r.Context(), accounts.RegisterRequest{
		Localpart: localpart, Password: *req.Password,
		DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, RefreshToken: req.RefreshToken, IP: ip,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accounts.FinishRegistration(r.Context(), session); err != nil {
		a.log.Warn("finishing registration session", "user_id", creds.UserID, "err", err)
	}
	a.afterRegister(r.Context(), creds.UserID)
	ok(w, a.credentials(creds))
}

// registerGuest ignores everything but initial_device_display_name, as the
// spec requires for guests.
func (a *API) registerGuest(w http.ResponseWriter, r *http.Request) {
	var req struct {
		InitialDeviceDisplayName string `json:"initial_device_display_name"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if !a.cfg.AllowGuestAccess {
		a.fail(w, r, mxhttp.GuestAccessForbidden("Guest access is disabled"))
		return
	}
	ip := clientIP(r)
	if ok, retry := a.rcRegistration.Allow(ip); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	creds, err := a.accounts.Register(r.Context(), accounts.RegisterRequest{
		Guest: true, DeviceDisplayName: req.InitialDeviceDisplayName, IP: ip,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, a.credentials(creds))
}

func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) {
	username := r.URL.Query().Get("username")
	if username == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing username"))
		return
	}
	if !a.cfg.EnableRegistration {
		a.fail(w, r, mxhttp.Forbidden("Registration has been disabled"))
		return
	}
	if err := a.accounts.CheckAvailable(r.Context(), strings.ToLower(username)); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"available": true})
}

func (a *API) registrationTokenValidity(w http.ResponseWriter, r *http.Request) {
	if !a.cfg.EnableRegistration {
		a.fail(w, r, mxhttp.Forbidden("Registration has been disabled"))
		return
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing token"))
		return
	}
	if ok, retry := a.rcRegistration.Allow(clientIP(r)); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	valid, err := a.accounts.RegistrationTokenValid(r.Context(), a.cfg.RegistrationTokens, token)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"valid": valid})
}

func (a *API) threePIDUnsupported(w http.ResponseWriter, r *http.Request) {
	a.fail(w, r, mxhttp.ThreePIDMediumNotSupported())
}

// threePIDNoSupport answers /account/3pid/delete and /unbind: no 3PID is
// ever bound here, but the request must still have the required shape.
func (a *API) threePIDNoSupport(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Medium   *string `json:"medium"`
		Address  *string `json:"address"`
		IDServer string  `json:"id_server"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Medium == nil || req.Address == nil {
		a.fail(w, r, mxhttp.MissingParam("medium and address are required"))
		return
	}
	ok(w, map[string]string{"id_server_unbind_result": "no-support"})
}

func (a *API) listThreePIDs(w http.ResponseWriter, r *http.Request) {
	ok(w, map[string][]any{"threepids": {}})
}

func (a *API) sharedSecretNonce(w http.ResponseWriter, r *http.Request) {
	nonce, err := a.accounts.SharedSecretNonce(r.Context(), a.cfg.SharedSecret)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"nonce": nonce})
}

func (a *API) sharedSecretRegister(w http.ResponseWriter, r *http.Request) {
	if a.cfg.SharedSecret == "" {
		a.fail(w, r, mxhttp.Unknown("Shared secret registration is not enabled"))
		return
	}
	var req accounts.SharedSecretRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	creds, err := a.accounts.SharedSecretRegister(r.Context(), a.cfg.SharedSecret, req, clientIP(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, a.credentials(creds))
}

// readUTF8Body reads a registration body. encoding/json would turn invalid
// UTF-8 into U+FFFD: such a body must fail here rather than open a
// session.
func readUTF8Body(r *http.Request) ([]byte, error) {
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(body) {
		return nil, mxhttp.NotJSON("Request body is not valid UTF-8")
	}
	return body, nil
}
