package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/notices"
	"homeserver/rooms"
)

// NoticeSender sends server notices (package notices).
type NoticeSender interface {
	Send(ctx context.Context, n notices.Notice) (string, error)
}

var _ NoticeSender = (*notices.Service)(nil)

func (a *API) noticeRoutes(r chi.Router) {
	r.Post("/v1/send_server_notice", a.sendServerNotice)
	r.Put("/v1/send_server_notice/{txnID}", a.sendServerNotice)
}

// sendServerNotice serves both forms of Synapse's
// docs/admin_api/server_notices.md; PUT's transaction ID is the admin's,
// scoped like the client API's, so that a retry returns the first event.
func (a *API) sendServerNotice(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UserID   *string         `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     *string         `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.UserID == nil || len(body.Content) == 0 || bytes.Equal(body.Content, []byte("null")) {
		a.fail(w, r, mxhttp.MissingParam("Missing params: user_id, content"))
		return
	}
	if a.d.Notices == nil {
		a.fail(w, r, mxhttp.Unknown("Server notices are not enabled on this server"))
		return
	}
	n := notices.Notice{UserID: *body.UserID, StateKey: body.StateKey, Content: body.Content}
	if body.Type != nil {
		if *body.Type == "" {
			a.fail(w, r, mxhttp.InvalidParam("type must not be empty"))
			return
		}
		n.Type = *body.Type
	}
	if r.Method == http.MethodPut {
		me := a.requester(r)
		scope := me.DeviceID
		if scope == "" {
			scope = "token:" + me.TokenHash
		}
		n.Txn = &rooms.TxnRef{UserID: me.UserID, Scope: scope, Path: "admin/send_server_notice", TxnID: pathParam(r, "txnID")}
	}
	id, err := a.d.Notices.Send(r.Context(), n)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"event_id": id})
}
