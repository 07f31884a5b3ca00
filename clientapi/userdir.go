package clientapi

import (
	"encoding/json"
	"net/http"

	"homeserver/mxhttp"
)

// maxDirectoryLimit caps a search's limit, as Synapse does.
const maxDirectoryLimit = 50

// searchUserDirectory is POST /user_directory/search.
func (a *API) searchUserDirectory(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SearchTerm *string         `json:"search_term"`
		Limit      json.RawMessage `json:"limit"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.SearchTerm == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing search_term"))
		return
	}
	limit := 10
	if len(req.Limit) > 0 {
		// A number with a fraction or exponent is not an integer limit.
		if json.Unmarshal(req.Limit, &limit) != nil {
			a.fail(w, r, mxhttp.BadJSON("limit must be an integer"))
			return
		}
		if limit < 0 {
			a.fail(w, r, mxhttp.InvalidParam("limit must not be negative"))
			return
		}
	}
	results, limited, err := a.userDir.Search(r.Context(), requester(r).UserID, *req.SearchTerm, min(limit, maxDirectoryLimit))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"results": results, "limited": limited})
}
