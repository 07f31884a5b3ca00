package adminapi

import "github.com/go-chi/chi/v5"

// mediaStore holds the queries of this file's endpoints.
type mediaStore interface{}

// MediaAdmin is what the admin API asks of the media repository.
type MediaAdmin interface{}

func (a *API) mediaRoutes(r chi.Router) {}
