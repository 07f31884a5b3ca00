package adminapi

import "github.com/go-chi/chi/v5"

// roomStore holds the queries of this file's endpoints.
type roomStore interface{}

func (a *API) roomRoutes(r chi.Router) {}
