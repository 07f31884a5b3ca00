package clientapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"homeserver/accounts"
	"homeserver/appservice"
	"homeserver/mxhttp"
	"homeserver/ratelimit"
)

// LoginTypeAppService is the registration and login type by which an
// application service creates and logs in the users of its namespaces.
const LoginTypeAppService = "m.login.application_service"

// maxTS is the largest origin_server_ts a client may ask for: the largest
// integer canonical JSON allows.
const maxTS = 1<<53 - 1

// appServiceRequester authenticates a request made with an as_token: the
// service acts as its sender or, with ?user_id=, as an existing local user
// of its user namespaces (identity assertion).
func (a *API) appServiceRequester(r *http.Request, as *appservice.Registration, token string) (*accounts.Requester, error) {
	userID := r.URL.Query().Get("user_id")
	if userID == "" {
		userID = as.Sender(a.cfg.ServerName)
	}
	if !a.accounts.IsLocal(userID) || !as.MayActAs(userID, a.cfg.ServerName) {
		return nil, mxhttp.Forbidden("Application service cannot masquerade as this user (%s)", userID)
	}
	acc, err := a.accounts.GetAccount(r.Context(), userID)
	if errors.Is(err, accounts.ErrNotFound) {
		return nil, mxhttp.Forbidden("Application service has not registered this user (%s)", userID)
	}
	if err != nil {
		return nil, err
	}
	if acc.Deactivated {
		return nil, mxhttp.Forbidden("User %s has been deactivated", userID)
	}
	// Device masquerading (Matrix 1.17): act as one of the user's devices,
	// for what needs one (keys, to-device messages).
	var deviceID string
	if d := r.URL.Query().Get("device_id"); d != "" {
		_, err := a.accounts.GetDevice(r.Context(), userID, d)
		var me *mxhttp.Error
		if errors.As(err, &me) && me.Code == "M_NOT_FOUND" {
			return nil, mxhttp.UnknownDevice("Device %s does not belong to %s", d, userID)
		}
		if err != nil {
			return nil, err
		}
		deviceID = d
	}
	return &accounts.Requester{
		UserID: userID, DeviceID: deviceID, IsAdmin: acc.IsAdmin, IsGuest: acc.IsGuest,
		TokenHash: accounts.HashToken(token), AppServiceID: as.ID,
	}, nil
}

// appServiceFromToken identifies the application service whose as_token the
// request carries, for the endpoints that take one without requiring
// authentication (/register and /login with m.login.application_service).
func (a *API) appServiceFromToken(r *http.Request) (*appservice.Registration, error) {
	tok := accessToken(r)
	if tok == "" {
		if r.Header.Get("Authorization") != "" {
			return nil, mxhttp.UnknownTokenMsg(false, "Malformed Authorization header")
		}
		return nil, mxhttp.MissingToken()
	}
	as := a.appservices.ByASToken(tok)
	if as == nil {
		return nil, mxhttp.UnknownTokenMsg(false, "Unknown application service token")
	}
	return as, nil
}

// unlimited reports whether the request is exempt from the rc_* limits:
// that of an application service registered with rate_limited: false.
func (a *API) unlimited(r *http.Request) bool {
	me := requester(r)
	if me == nil || me.AppServiceID == "" {
		return false
	}
	as := a.appservices.ByID(me.AppServiceID)
	return as != nil && !as.RateLimited()
}

// allow takes one request from limiter l for key, unless the request is
// exempt from rate limits.
func (a *API) allow(r *http.Request, l *ratelimit.Limiter, key string) (bool, time.Duration) {
	if a.unlimited(r) {
		return true, 0
	}
	if l == a.rcMessage {
		l = a.rcMessageOverrides.limiter(l, r)
	}
	return l.Allow(key)
}

// originTS reads ?ts= (timestamp massaging), which only application
// services may use; 0 means now.
func originTS(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("ts")
	if s == "" || requester(r).AppServiceID == "" {
		return 0, nil
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ts < 0 || ts > maxTS {
		return 0, mxhttp.InvalidParam("Invalid ts %q", s)
	}
	return ts, nil
}

// registerAppService creates a user of the service's namespaces: no
// user-interactive auth, no password, whether or not registration is open.
func (a *API) registerAppService(w http.ResponseWriter, r *http.Request, req registerRequest) {
	as, err := a.appServiceFromToken(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Username == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing username"))
		return
	}
	ip := clientIP(r)
	if as.RateLimited() {
		if ok, retry := a.rcRegistration.Allow(ip); !ok {
			a.fail(w, r, mxhttp.LimitExceeded(retry))
			return
		}
	}
	// The accounts service's user guard keeps the service to its namespaces.
	creds, err := a.accounts.Register(r.Context(), accounts.RegisterRequest{
		Localpart: req.Username, AppServiceID: as.ID,
		DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, RefreshToken: req.RefreshToken, IP: ip,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, a.credentials(creds))
}

// loginAppService logs a user of the service's namespaces in without a
// password.
func (a *API) loginAppService(w http.ResponseWriter, r *http.Request, req loginRequest) {
	as, err := a.appServiceFromToken(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ip := clientIP(r)
	if as.RateLimited() {
		if ok, retry := a.rcLoginAddress.Allow(ip); !ok {
			a.fail(w, r, mxhttp.LimitExceeded(retry))
			return
		}
	}
	user := req.User
	if id := req.Identifier; id != nil {
		if id.Type != "m.id.user" {
			a.fail(w, r, mxhttp.Unknown("Unknown identifier type %q", id.Type))
			return
		}
		user = id.User
	}
	userID, err := a.accounts.ResolveUser(user)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !as.MayActAs(userID, a.cfg.ServerName) {
		a.fail(w, r, mxhttp.Exclusive("User %s is not in the namespace of this application service", userID))
		return
	}
	acc, err := a.accounts.GetAccount(r.Context(), userID)
	if errors.Is(err, accounts.ErrNotFound) {
		a.fail(w, r, mxhttp.Forbidden("Invalid username"))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if acc.Deactivated {
		a.fail(w, r, mxhttp.UserDeactivated())
		return
	}
	creds, err := a.accounts.StartSession(r.Context(), userID, req.DeviceID, req.InitialDeviceDisplayName, ip, req.RefreshToken)
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

// setNetworkVisibility serves PUT /directory/list/appservice/{networkId}/{roomId}:
// an application service publishes a room in the list of one of its
// third-party networks.
func (a *API) setNetworkVisibility(w http.ResponseWriter, r *http.Request) {
	me := requester(r)
	if me.AppServiceID == "" {
		a.fail(w, r, mxhttp.Forbidden("Only application services may maintain network room lists"))
		return
	}
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Visibility == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing visibility"))
		return
	}
	err := a.rooms.SetNetworkVisibility(r.Context(), me.AppServiceID, pathParam(r, "networkID"), pathParam(r, "roomID"), *req.Visibility)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}
