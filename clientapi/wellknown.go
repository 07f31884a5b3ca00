package clientapi

import (
	"net/http"

	"homeserver/mxhttp"
)

// Support is the document of /.well-known/matrix/support: at least one
// contact or a support page.
type Support struct {
	Contacts []SupportContact
	Page     string
}

// SupportContact is one way to reach the server's admins.
type SupportContact struct {
	MatrixID     string `json:"matrix_id,omitempty"`
	EmailAddress string `json:"email_address,omitempty"`
	Role         string `json:"role"`
}

func (a *API) wellKnownSupport(w http.ResponseWriter, r *http.Request) {
	s := a.cfg.Support
	if s == nil {
		a.fail(w, r, mxhttp.NotFound("No support information is configured"))
		return
	}
	doc := map[string]any{}
	if len(s.Contacts) > 0 {
		doc["contacts"] = s.Contacts
	}
	if s.Page != "" {
		doc["support_page"] = s.Page
	}
	ok(w, doc)
}

// authMetadata is the OAuth 2.0 server metadata, which a server that
// authenticates only with the legacy API answers as the spec says of an
// unsupported API: 404 M_UNRECOGNIZED.
func (a *API) authMetadata(w http.ResponseWriter, r *http.Request) {
	a.fail(w, r, mxhttp.Unrecognized("This server does not support the OAuth 2.0 API"))
}
