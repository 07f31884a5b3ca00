package adminapi

import "github.com/go-chi/chi/v5"

// DestinationAdmin is what the admin API asks of federation's outbound queues.
type DestinationAdmin interface{}

func (a *API) destinationRoutes(r chi.Router) {}
