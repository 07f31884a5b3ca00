// Package clientapi serves the Matrix Client-Server API: thin handlers that
// decode and validate requests, call the packages that own the logic, and
// encode the answers.
package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"homeserver/accountdata"
	"homeserver/accounts"
	"homeserver/appservice"
	"homeserver/e2ee"
	"homeserver/keybackup"
	"homeserver/mxhttp"
	"homeserver/presence"
	"homeserver/push"
	"homeserver/ratelimit"
	"homeserver/receipts"
	"homeserver/reports"
	"homeserver/rooms"
	"homeserver/search"
	"homeserver/spaces"
	"homeserver/syncapi"
	"homeserver/todevice"
	"homeserver/typing"
	"homeserver/userdir"
)

// RateLimit is one rc_* setting.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// Config is what the client API needs to know of homeserver.yaml.
type Config struct {
	ServerName                string
	PublicBaseURL             string
	ExtraWellKnown            map[string]any
	EnableRegistration        bool
	RegistrationRequiresToken bool
	RegistrationTokens        []string
	AllowGuestAccess          bool
	SharedSecret              string
	DefaultRoomVersion        string
	RcRegistration            RateLimit
	RcLoginAddress            RateLimit
	RcLoginAccount            RateLimit
	RcLoginFailed             RateLimit
	RcMessage                 RateLimit
	RcJoinsLocal              RateLimit
	RcInvitesPerRoom          RateLimit
	RcInvitesPerUser          RateLimit
	Turn                      TurnConfig
	// Support is /.well-known/matrix/support; nil answers 404.
	Support *Support
	// LoginTokens is login_via_existing_session.
	LoginTokens LoginTokens
}

// API is the client API over the services it calls.
type API struct {
	cfg         Config
	accounts    *accounts.Service
	rooms       *rooms.Service
	presence    *presence.Service
	accountData *accountdata.Service
	ephemeral   ephemeralServices
	sync        *syncapi.Service
	asQuery     *appservice.Querier
	appservices *appservice.Set
	push        *push.Service
	keyBackup   *keybackup.Service
	keys        *e2ee.Service
	toDevice    *todevice.Service
	remote      RemoteProfiles
	spaces      *spaces.Service
	reports     *reports.Service
	userDir     *userdir.Service
	searcher    *search.Service
	admin       AdminRoutes
	log         *slog.Logger
	// defaultAvatar, when set, makes each new user's avatar.
	defaultAvatar DefaultAvatar

	rcRegistration *ratelimit.Limiter
	rcLoginAddress *ratelimit.Limiter
	rcLoginAccount *ratelimit.Limiter
	rcMessage      *ratelimit.Limiter
	// rcMessageOverrides replace rcMessage for some users (shadowban.go).
	rcMessageOverrides messageOverrides
	rcJoins            *ratelimit.Limiter
	rcInvitesRoom      *ratelimit.Limiter
	rcInvitesUser      *ratelimit.Limiter
	// rcGetLoginToken is stricter than any rc_* setting, as in Synapse:
	// each token logs a new client in.
	rcGetLoginToken *ratelimit.Limiter
}

// RemoteProfiles asks other servers for their users' profiles (package
// federation): the whole profile, or one field (field != "").
type RemoteProfiles interface {
	QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
}

// Deps are the services the client API calls; all are required but
// RemoteProfiles, nil when the server does not federate.
type Deps struct {
	Accounts          *accounts.Service
	Rooms             *rooms.Service
	AccountData       *accountdata.Service
	Presence          *presence.Service
	Receipts          *receipts.Service
	Typing            *typing.Service
	Sync              *syncapi.Service
	AppServices       *appservice.Set
	AppServiceQuerier *appservice.Querier
	Push              *push.Service
	Keys              *e2ee.Service
	ToDevice          *todevice.Service
	KeyBackup         *keybackup.Service
	RemoteProfiles    RemoteProfiles
	Spaces            *spaces.Service
	UserDir           *userdir.Service
	Search            *search.Service
	Reports           *reports.Service
}

// New returns the client API.
func New(cfg Config, d Deps, log *slog.Logger) *API {
	lim := func(r RateLimit) *ratelimit.Limiter { return ratelimit.New(r.PerSecond, r.Burst) }
	// The accounts service checks every password, wherever it is asked for.
	d.Accounts.LimitFailedPasswords(lim(cfg.RcLoginFailed))
	return &API{
		cfg: cfg, accounts: d.Accounts, rooms: d.Rooms, log: log,
		accountData: d.AccountData, presence: d.Presence, sync: d.Sync,
		ephemeral: ephemeralServices{receipts: d.Receipts, typing: d.Typing},
		asQuery:   d.AppServiceQuerier, appservices: d.AppServices, push: d.Push,
		keys: d.Keys, toDevice: d.ToDevice, keyBackup: d.KeyBackup, remote: d.RemoteProfiles, spaces: d.Spaces, userDir: d.UserDir,
		reports:         d.Reports,
		searcher:        d.Search,
		rcRegistration:  lim(cfg.RcRegistration),
		rcLoginAddress:  lim(cfg.RcLoginAddress),
		rcLoginAccount:  lim(cfg.RcLoginAccount),
		rcMessage:       lim(cfg.RcMessage),
		rcGetLoginToken: ratelimit.New(1.0/60, 5),
		rcJoins:         lim(cfg.RcJoinsLocal),
		rcInvitesRoom:   lim(cfg.RcInvitesPerRoom),
		rcInvitesUser:   lim(cfg.RcInvitesPerUser),
	}
}

// Mount registers the client API's routes on r, which is the root router of
// a listener with the "client" resource.
func (a *API) Mount(r chi.Router) {
	r.Get("/_matrix/client/versions", a.versions)
	r.Get("/.well-known/matrix/client", a.wellKnownClient)
	r.Get("/.well-known/matrix/support", a.wellKnownSupport)
	a.fallbackRoutes(r)

	// One set of handlers, served under every prefix clients use.
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0", apiV1Prefix} {
		v1 := prefix == apiV1Prefix
		r.Route(prefix, func(r chi.Router) { a.clientRoutes(r, v1) })
	}
	// The 2015 v2 alpha API: only the endpoints it had (legacy_v2alpha.go).
	r.Route(v2AlphaPrefix, a.v2AlphaRoutes)
	r.Route("/_matrix/client/v1", func(r chi.Router) {
		r.Get("/register/m.login.registration_token/validity", a.registrationTokenValidity)
		r.Get("/auth_metadata", a.authMetadata)
		r.Group(func(r chi.Router) {
			r.Use(validPath, a.requireAuth)
			a.v1RoomRoutes(r)
			if a.cfg.LoginTokens.Enabled {
				r.Post("/login/get_token", a.getLoginToken)
			}
			a.moderationRoutes(r)
			r.Post("/appservice/{appserviceId}/ping", a.pingAppService)
		})
	})
	r.Group(func(r chi.Router) {
		r.Use(validPath, a.requireAuth)
		r.Post(slidingSyncPath, a.slidingSync)
	})
	r.Route("/_synapse/admin", func(r chi.Router) {
		r.Use(validPath)
		r.Get("/v1/register", a.sharedSecretNonce)
		r.Post("/v1/register", a.sharedSecretRegister)
		if a.admin != nil {
			r.Group(func(r chi.Router) {
				r.Use(a.requireAuth, requireAdmin)
				a.admin.Routes(r)
			})
		}
	})
}

// AdminRoutes is the admin API (package adminapi), served under
// /_synapse/admin to server admins.
type AdminRoutes interface {
	Routes(r chi.Router)
}

// SetAdmin serves the admin API; set before Mount.
func (a *API) SetAdmin(admin AdminRoutes) { a.admin = admin }

// requireAdmin answers 403 to users who are not server admins, as Synapse
// does.
func requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if req := requester(r); req == nil || !req.IsAdmin {
			mxhttp.WriteError(w, mxhttp.Forbidden("You are not a server admin"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientRoutes are the routes of every prefix; v1 is api/v1, whose
// registration also takes the 2015 body (legacy_register.go).
func (a *API) clientRoutes(r chi.Router, v1 bool) {
	r.Use(validPath)

	// Unauthenticated.
	if v1 {
		a.v1RegisterRoutes(r)
	} else {
		r.Post("/register", a.register)
	}
	r.Get("/register/available", a.registerAvailable)
	r.Post("/register/email/requestToken", a.threePIDUnsupported)
	r.Post("/register/msisdn/requestToken", a.threePIDUnsupported)
	r.Get("/login", a.loginFlows)
	r.Post("/login", a.login)
	r.Post("/refresh", a.refresh)
	r.Post("/account/password/email/requestToken", a.threePIDUnsupported)
	r.Post("/account/password/msisdn/requestToken", a.threePIDUnsupported)
	r.Get("/profile/{userID}", a.getProfile)
	r.Get("/profile/{userID}/{key}", a.getProfileField)
	a.publicDirectoryRoutes(r)

	// Authenticated.
	r.Group(func(r chi.Router) {
		r.Use(a.requireAuth)
		r.Get("/capabilities", a.capabilities)
		r.Post("/logout", a.logout)
		r.Post("/logout/all", a.logoutAll)
		r.Get("/account/whoami", a.whoami)
		r.Post("/account/password", a.changePassword)
		r.Post("/account/deactivate", a.deactivate)
		r.Get("/account/3pid", a.listThreePIDs)
		r.Post("/account/3pid", a.threePIDUnsupported)
		r.Post("/account/3pid/add", a.threePIDUnsupported)
		r.Post("/account/3pid/bind", a.threePIDUnsupported)
		r.Post("/account/3pid/delete", a.threePIDNoSupport)
		r.Post("/account/3pid/unbind", a.threePIDNoSupport)
		r.Post("/account/3pid/email/requestToken", a.threePIDUnsupported)
		r.Post("/account/3pid/msisdn/requestToken", a.threePIDUnsupported)
		r.Get("/devices", a.listDevices)
		r.Get("/devices/{deviceID}", a.getDevice)
		r.Put("/devices/{deviceID}", a.updateDevice)
		r.Delete("/devices/{deviceID}", a.deleteDevice)
		r.Post("/delete_devices", a.deleteDevices)
		r.Put("/profile/{userID}/{key}", a.setProfileField)
		r.Delete("/profile/{userID}/{key}", a.deleteProfileField)
		r.Post("/user/{userID}/openid/request_token", a.requestOpenIDToken)
		r.Post("/user_directory/search", a.searchUserDirectory)
		r.Post("/search", a.search)
		a.roomRoutes(r)
		a.syncRoutes(r)
		a.presenceRoutes(r)
		a.accountDataRoutes(r)
		a.receiptRoutes(r)
		a.pushRoutes(r)
		a.keyBackupRoutes(r)
		a.legacyRoutes(r)
		a.thirdPartyRoutes(r)
		a.keysRoutes(r)
		a.reportRoutes(r)
		r.Get("/admin/whois/{userID}", a.whois)
		r.Get("/voip/turnServer", a.turnServer)
	})
}

type ctxKey int

const (
	requesterKey ctxKey = iota
	clientIPKey
)

// WithClientIP records the client's address for handlers (rate limits,
// device last-seen); the listener decides whether to trust X-Forwarded-For.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey, ip)
}

func clientIP(r *http.Request) string {
	if ip, ok := r.Context().Value(clientIPKey).(string); ok {
		return ip
	}
	return r.RemoteAddr
}

// ClientIP returns the client's address as WithClientIP recorded it, for
// other packages' rate limits.
func ClientIP(r *http.Request) string { return clientIP(r) }

// pathParam returns a path parameter percent-decoded.
var pathParam = mxhttp.PathParam

// validPath refuses a path whose decoded form is not UTF-8 or holds a NUL,
// which no identifier may contain and no database stores.
func validPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !utf8.ValidString(r.URL.Path) || strings.ContainsRune(r.URL.Path, 0) {
			mxhttp.WriteError(w, mxhttp.InvalidParam("Path parameters must be UTF-8 without NUL"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func requester(r *http.Request) *accounts.Requester {
	req, _ := r.Context().Value(requesterKey).(*accounts.Requester)
	return req
}

// accessToken takes the token from the Authorization header or, for older
// clients and application services, the access_token query parameter.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		// The auth-scheme is case-insensitive (RFC 9110 section 11.1).
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

func (a *API) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := accessToken(r)
		if tok == "" {
			if r.Header.Get("Authorization") != "" {
				a.fail(w, r, mxhttp.UnknownTokenMsg(false, "Malformed Authorization header"))
				return
			}
			a.fail(w, r, mxhttp.MissingToken())
			return
		}
		var req *accounts.Requester
		var err error
		if as := a.appservices.ByASToken(tok); as != nil {
			req, err = a.appServiceRequester(r, as, tok)
		} else {
			req, err = a.accounts.Authenticate(r.Context(), tok, clientIP(r))
		}
		if err == nil {
			err = a.checkModeration(r, req)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		// Every authenticated endpoint comes through here, so this one check
		// keeps guests to the endpoints the guest access module lists.
		if req.IsGuest && !guestAllowed(r) {
			a.fail(w, r, mxhttp.GuestAccessForbidden("Guests may not use this endpoint"))
			return
		}
		if a.shadowBanned(w, r, req) {
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requesterKey, req)))
	})
}

// fail writes err, logging it when it is not a Matrix error meant for the
// client.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) { mxhttp.Fail(w, r, a.log, err) }

func ok(w http.ResponseWriter, v any) { mxhttp.WriteJSON(w, http.StatusOK, v) }

var empty = struct{}{}
