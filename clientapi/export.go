package clientapi

import (
	"net/http"

	"homeserver/accounts"
)

// RequireAuth is the client API's access-token middleware (application
// service tokens included), for the other APIs served beside it, such as the
// content repository.
func (a *API) RequireAuth(next http.Handler) http.Handler { return validPath(a.requireAuth(next)) }

// RequesterOf returns whom RequireAuth authenticated, or nil.
func RequesterOf(r *http.Request) *accounts.Requester { return requester(r) }
