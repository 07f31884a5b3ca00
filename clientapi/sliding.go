package clientapi

import (
	"net/http"
	"strconv"

	"homeserver/mxhttp"
	"homeserver/syncapi"
)

// slidingSyncPath is where Synapse serves simplified sliding sync
// (MSC4186), and where Element X and matrix-rust-sdk look for it.
const slidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// slidingSync decodes a sliding sync request: pos, timeout and
// set_presence come in the query string (Synapse's unstable shape) or in
// the body (the MSC's later one).
func (a *API) slidingSync(w http.ResponseWriter, r *http.Request) {
	me := requester(r)
	var req syncapi.SlidingRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	if v := q.Get("pos"); v != "" {
		req.Pos = v
	}
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			a.fail(w, r, mxhttp.InvalidParam("Invalid timeout %q", v))
			return
		}
		req.Timeout = &ms
	}
	if v := q.Get("set_presence"); v != "" {
		req.SetPresence = v
	}
	req.UserID, req.DeviceID, req.Scope = me.UserID, me.DeviceID, txnRef(r, "").Scope
	resp, err := a.sync.SlidingSync(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, resp)
}
