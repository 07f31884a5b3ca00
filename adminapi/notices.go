package adminapi

import "github.com/go-chi/chi/v5"

func (a *API) noticeRoutes(r chi.Router) {}
