package clientapi

import (
	"net/http"

	"homeserver/mxhttp"
	"homeserver/search"
)

// search is POST /search: server-side search of room events (package
// search). Guests may not search (the guest gate denies it), as in Synapse.
func (a *API) search(w http.ResponseWriter, r *http.Request) {
	var req search.Request
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.searcher.Search(r.Context(), requester(r).UserID, req, r.URL.Query().Get("next_batch"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}
