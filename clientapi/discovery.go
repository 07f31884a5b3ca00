package clientapi

import (
	"maps"
	"net/http"
	"strconv"

	"homeserver/mxhttp"
)

// specVersions are the Client-Server API versions whose endpoints this
// server implements as specified.
var specVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// MaxRoomVersion is the newest room version the server knows.
const MaxRoomVersion = 12

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	// Only what is built is advertised: Element X requires sliding sync.
	ok(w, map[string]any{"versions": specVersions, "unstable_features": map[string]bool{
		"org.matrix.simplified_msc3575": true,
	}})
}

func (a *API) wellKnown() map[string]any {
	if a.cfg.PublicBaseURL == "" {
		return nil
	}
	wk := map[string]any{}
	maps.Copy(wk, a.cfg.ExtraWellKnown)
	wk["m.homeserver"] = map[string]string{"base_url": a.cfg.PublicBaseURL}
	return wk
}

func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) {
	wk := a.wellKnown()
	if wk == nil {
		a.fail(w, r, mxhttp.NotFound(".well-known not available"))
		return
	}
	ok(w, wk)
}

func (a *API) capabilities(w http.ResponseWriter, r *http.Request) {
	available := map[string]string{}
	for v := 1; v <= MaxRoomVersion; v++ {
		available[strconv.Itoa(v)] = "stable"
	}
	enabled := map[string]bool{"enabled": true}
	caps := map[string]any{
		"m.change_password": enabled,
		"m.set_displayname": enabled,
		"m.set_avatar_url":  enabled,
		"m.profile_fields":  enabled,
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": a.cfg.LoginTokens.Enabled && !requester(r).IsGuest},
		"m.room_versions":   map[string]any{"default": a.cfg.DefaultRoomVersion, "available": available},
	}
	// Server admins may suspend and lock accounts; for anyone else the
	// spec wants the capability left out.
	if requester(r).IsAdmin {
		caps["m.account_moderation"] = map[string]bool{"suspend": true, "lock": true}
	}
	ok(w, map[string]any{"capabilities": caps})
}
