package adminapi

import "github.com/go-chi/chi/v5"

// tokenStore holds the queries of this file's endpoints.
type tokenStore interface{}

func (a *API) tokenRoutes(r chi.Router) {}
