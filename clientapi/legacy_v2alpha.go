package clientapi

import "github.com/go-chi/chi/v5"

// v2AlphaPrefix is the 2015 v2 alpha API's prefix, which r0 replaced.
const v2AlphaPrefix = "/_matrix/client/v2_alpha"

// v2AlphaRoutes serve, with today's handlers, the endpoints the v2 alpha
// API had: registration, /sync and filters, account data and tags,
// receipts, and the account endpoints. Nothing newer answers under this
// prefix, and /versions does not list it.
func (a *API) v2AlphaRoutes(r chi.Router) {
	r.Use(validPath)

	r.Post("/register", a.register)
	r.Post("/register/email/requestToken", a.threePIDUnsupported)
	r.Post("/account/password/email/requestToken", a.threePIDUnsupported)

	r.Group(func(r chi.Router) {
		r.Use(a.requireAuth)
		r.Get("/sync", a.syncHandler)
		r.Post("/user/{userID}/filter", a.createFilter)
		r.Get("/user/{userID}/filter/{filterID}", a.getFilter)

		r.Get("/user/{userID}/account_data/{type}", a.getAccountData(false))
		r.Put("/user/{userID}/account_data/{type}", a.putAccountData(false))
		r.Get("/user/{userID}/rooms/{roomID}/account_data/{type}", a.getAccountData(true))
		r.Put("/user/{userID}/rooms/{roomID}/account_data/{type}", a.putAccountData(true))
		r.Get("/user/{userID}/rooms/{roomID}/tags", a.getTags)
		r.Put("/user/{userID}/rooms/{roomID}/tags/{tag}", a.putTag)
		r.Delete("/user/{userID}/rooms/{roomID}/tags/{tag}", a.deleteTag)

		r.Post("/rooms/{roomID}/receipt/{receiptType}/{eventID}", a.postReceipt)

		r.Post("/account/password", a.changePassword)
		r.Post("/account/deactivate", a.deactivate)
		r.Get("/account/3pid", a.listThreePIDs)
		r.Post("/account/3pid", a.threePIDUnsupported)
		r.Post("/account/3pid/email/requestToken", a.threePIDUnsupported)
	})
}
