package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"

	"homeserver/mxhttp"
)

// TurnConfig are the TURN servers handed to VoIP clients (Synapse's
// turn_* keys).
type TurnConfig struct {
	URIs []string
	// SharedSecret, when set, derives time-limited credentials as coturn's
	// use-auth-secret expects; else Username and Password are handed out.
	SharedSecret string
	Username     string
	Password     string
	UserLifetime time.Duration
	AllowGuests  bool
}

// turnServer answers as Synapse does: credentials for the configured TURN
// servers, or an empty object when there are none to give.
func (a *API) turnServer(w http.ResponseWriter, r *http.Request) {
	t := a.cfg.Turn
	me := requester(r)
	if me.IsGuest && !t.AllowGuests {
		a.fail(w, r, mxhttp.Forbidden("Guest access not allowed"))
		return
	}
	var username, password string
	switch {
	case len(t.URIs) == 0:
		ok(w, empty)
		return
	case t.SharedSecret != "":
		expiry := time.Now().Add(t.UserLifetime).Unix()
		username = fmt.Sprintf("%d:%s", expiry, me.UserID)
		mac := hmac.New(sha1.New, []byte(t.SharedSecret))
		mac.Write([]byte(username))
		password = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	case t.Username != "" && t.Password != "":
		username, password = t.Username, t.Password
	default:
		ok(w, empty)
		return
	}
	ok(w, map[string]any{
		"username": username,
		"password": password,
		"uris":     t.URIs,
		"ttl":      int64(t.UserLifetime / time.Second),
	})
}
