package federation

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
)

// OpenIDTokens resolves the OpenID tokens local users requested.
type OpenIDTokens interface {
	// OpenIDUser returns the user who requested token, "" when the token
	// is unknown or expired.
	OpenIDUser(ctx context.Context, token string) (string, error)
}

// MountOpenID adds the OpenID userinfo endpoint to r. It is not
// X-Matrix authenticated: the token is its credential, and the services
// that call it are not Matrix servers. Mount includes it; a listener with
// the openid resource but not the federation one serves it alone.
func (s *Service) MountOpenID(r chi.Router) {
	r.Get("/_matrix/federation/v1/openid/userinfo", s.openIDUserInfo)
}

// openIDUserInfo exchanges an OpenID token for the ID of its user.
func (s *Service) openIDUserInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		// As Synapse answers.
		s.fail(w, r, &mxhttp.Error{Status: http.StatusUnauthorized, Code: "M_MISSING_TOKEN", Message: "Access token required"})
		return
	}
	userID := ""
	if s.openID != nil {
		var err error
		if userID, err = s.openID.OpenIDUser(r.Context(), token); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if userID == "" {
		s.fail(w, r, &mxhttp.Error{Status: http.StatusUnauthorized, Code: "M_UNKNOWN_TOKEN", Message: "Access token unknown or expired"})
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"sub": userID})
}
