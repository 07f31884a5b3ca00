package clientapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/e2ee"
	"homeserver/mxhttp"
	"homeserver/todevice"
)

// keysBodyLimit bounds key uploads and queries: a hundred one-time keys
// are some 30 KiB, a query of thousands of users a few hundred.
const keysBodyLimit = 4 << 20

func (a *API) keysRoutes(r chi.Router) {
	r.Post("/keys/upload", a.uploadKeys)
	// The device ID in the path is what r0 clients before 2019 sent.
	r.Post("/keys/upload/{deviceID}", a.uploadKeys)
	r.Post("/keys/query", a.queryKeys)
	r.Post("/keys/claim", a.claimKeys)
	r.Get("/keys/changes", a.keyChanges)
	r.Post("/keys/device_signing/upload", a.uploadCrossSigningKeys)
	r.Post("/keys/signatures/upload", a.uploadSignatures)
	r.Put("/sendToDevice/{eventType}/{txnID}", a.sendToDevice)
}

func (a *API) uploadKeys(w http.ResponseWriter, r *http.Request) {
	me := requester(r)
	if d := pathParam(r, "deviceID"); d != "" && d != me.DeviceID {
		a.fail(w, r, mxhttp.InvalidParam("Keys may only be uploaded for the device making the request"))
		return
	}
	var req e2ee.UploadRequest
	if err := mxhttp.DecodeJSON(r, keysBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	counts, err := a.keys.UploadKeys(r.Context(), me.UserID, me.DeviceID, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"one_time_key_counts": counts})
}

func (a *API) queryKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceKeys *map[string][]string `json:"device_keys"`
		Timeout    *int64               `json:"timeout"`
	}
	if err := mxhttp.DecodeJSON(r, keysBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.DeviceKeys == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing device_keys"))
		return
	}
	resp, err := a.keys.QueryKeys(r.Context(), requester(r).UserID, *req.DeviceKeys, remoteTimeout(req.Timeout))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, resp)
}

func (a *API) claimKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OneTimeKeys *map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                        `json:"timeout"`
	}
	if err := mxhttp.DecodeJSON(r, keysBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing one_time_keys"))
		return
	}
	resp, err := a.keys.ClaimKeys(r.Context(), *req.OneTimeKeys, remoteTimeout(req.Timeout))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, resp)
}

// remoteTimeout is the wait for other servers a request's timeout (in
// milliseconds) asks for; zero leaves the default to the keys service.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return 0
	}
	return time.Duration(min(*ms, int64(e2ee.MaxRemoteTimeout/time.Millisecond))) * time.Millisecond
}

func (a *API) keyChanges(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	if from == "" || to == "" {
		a.fail(w, r, mxhttp.MissingParam("Both from and to are required"))
		return
	}
	dl, err := a.sync.KeyChanges(r.Context(), requester(r).UserID, from, to)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, dl)
}

func (a *API) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		e2ee.CrossSigningUpload
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.DecodeJSON(r, keysBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	me := requester(r)
	// Replacing published keys needs the password; a first upload, or the
	// same keys again, does not, nor does an application service (1.17).
	if me.AppServiceID == "" {
		need, err := a.keys.CrossSigningNeedsAuth(r.Context(), me.UserID, req.CrossSigningUpload)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if need {
			if err := a.checkPasswordUIA(r, req.Auth); err != nil {
				a.fail(w, r, err)
				return
			}
		}
	}
	if err := a.keys.UploadCrossSigning(r.Context(), me.UserID, req.CrossSigningUpload); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) uploadSignatures(w http.ResponseWriter, r *http.Request) {
	var req map[string]map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, keysBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	failures, err := a.keys.UploadSignatures(r.Context(), requester(r).UserID, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"failures": failures})
}

func (a *API) sendToDevice(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages *map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := mxhttp.DecodeJSON(r, todevice.MaxBodySize, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Messages == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing messages"))
		return
	}
	txn := txnRef(r, pathParam(r, "txnID"))
	err := a.toDevice.Send(r.Context(), txn.UserID, txn.Scope, txn.TxnID, pathParam(r, "eventType"), *req.Messages)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}
