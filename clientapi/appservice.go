package clientapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/appservice"
	"homeserver/mxhttp"
)

func (a *API) thirdPartyRoutes(r chi.Router) {
	r.Get("/thirdparty/protocols", a.thirdPartyProtocols)
	r.Get("/thirdparty/protocol/{protocol}", a.thirdPartyProtocol)
	r.Get("/thirdparty/location/{protocol}", a.thirdPartyLookup("location"))
	r.Get("/thirdparty/user/{protocol}", a.thirdPartyLookup("user"))
	r.Get("/thirdparty/location", a.thirdPartyReverse("location", "alias"))
	r.Get("/thirdparty/user", a.thirdPartyReverse("user", "userid"))
}

func (a *API) pingAppService(w http.ResponseWriter, r *http.Request) {
	id := pathParam(r, "appserviceId")
	reg := a.asQuery.Registration(id)
	if me := requester(r); me.AppServiceID == "" || me.AppServiceID != id || reg == nil {
		a.fail(w, r, mxhttp.Forbidden("Only the application service %s may ping itself", id))
		return
	}
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	took, err := a.asQuery.Ping(r.Context(), reg, body.TransactionID)
	if err != nil {
		a.fail(w, r, pingError(err))
		return
	}
	ok(w, map[string]int64{"duration_ms": took.Milliseconds()})
}

// pingError maps a failed ping to the errors of the ping API.
func pingError(err error) error {
	var se *appservice.StatusError
	switch {
	case errors.Is(err, appservice.ErrNoURL):
		return &mxhttp.Error{Status: http.StatusBadRequest, Code: "M_URL_NOT_SET", Message: "The application service has no URL"}
	case errors.Is(err, appservice.ErrConnectionTimeout):
		return &mxhttp.Error{Status: http.StatusGatewayTimeout, Code: "M_CONNECTION_TIMEOUT", Message: "Connection to the application service timed out"}
	case errors.Is(err, appservice.ErrConnectionFailed):
		return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_CONNECTION_FAILED", Message: "Connection to the application service failed"}
	case errors.As(err, &se):
		e := &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_BAD_STATUS", Message: "Ping returned status " + strconv.Itoa(se.Status)}
		return e.With("status", se.Status).With("body", se.Body)
	}
	return err
}

func (a *API) thirdPartyProtocols(w http.ResponseWriter, r *http.Request) {
	ok(w, a.asQuery.Protocols(r.Context()))
}

func (a *API) thirdPartyProtocol(w http.ResponseWriter, r *http.Request) {
	protocol := pathParam(r, "protocol")
	meta, found := a.asQuery.Protocol(r.Context(), protocol)
	if !found {
		a.fail(w, r, mxhttp.NotFound("Unknown protocol %s", protocol))
		return
	}
	ok(w, meta)
}

// thirdPartyLookup forwards a search for locations or users of a protocol.
func (a *API) thirdPartyLookup(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		protocol := pathParam(r, "protocol")
		if !a.asQuery.Declared(protocol) {
			a.fail(w, r, mxhttp.NotFound("Unknown protocol %s", protocol))
			return
		}
		ok(w, a.asQuery.ThirdParty(r.Context(), kind, protocol, appservice.Forwardable(r.URL.Query())))
	}
}

// thirdPartyReverse forwards a reverse lookup by a Matrix identifier.
func (a *API) thirdPartyReverse(kind, param string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get(param) == "" {
			a.fail(w, r, mxhttp.MissingParam("Missing %s", param))
			return
		}
		ok(w, a.asQuery.ThirdParty(r.Context(), kind, "", appservice.Forwardable(r.URL.Query())))
	}
}
