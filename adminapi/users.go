package adminapi

import "github.com/go-chi/chi/v5"

// userStore holds the queries of this file's endpoints.
type userStore interface{}

func (a *API) userRoutes(r chi.Router) {}
