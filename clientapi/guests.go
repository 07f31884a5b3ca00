package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// guestRoutes are the only endpoints guests may call: those the guest access
// module lists, and the few more Synapse allows. Everything else is closed to them by default, so that an
// endpoint added later is not opened to guests by accident. The handlers
// are never run; the router only matches.
var guestRoutes = func() *chi.Mux {
	m := chi.NewMux()
	allow := func(method, pattern string) { m.MethodFunc(method, pattern, http.NotFound) }
	for _, p := range []string{"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/api/v1", v2AlphaPrefix} {
		// Reading rooms, including world-readable ones the guest is not in.
		allow(http.MethodGet, p+"/rooms/{roomID}/state")
		allow(http.MethodGet, p+"/rooms/{roomID}/state/{eventType}")
		allow(http.MethodGet, p+"/rooms/{roomID}/state/{eventType}/*")
		allow(http.MethodGet, p+"/rooms/{roomID}/context/{eventID}")
		allow(http.MethodGet, p+"/rooms/{roomID}/event/{eventID}")
		allow(http.MethodGet, p+"/rooms/{roomID}/messages")
		allow(http.MethodGet, p+"/rooms/{roomID}/members")
		allow(http.MethodGet, p+"/rooms/{roomID}/initialSync")
		allow(http.MethodGet, p+"/sync")
		allow(http.MethodGet, p+"/events")

		// Taking part in rooms that let guests in (rooms.JoinOptions.Guest).
		allow(http.MethodPost, p+"/rooms/{roomID}/join")
		allow(http.MethodPost, p+"/rooms/{roomID}/leave")
		allow(http.MethodPut, p+"/rooms/{roomID}/send/{eventType}/{txnID}")
		allow(http.MethodPut, p+"/rooms/{roomID}/state/{eventType}")
		allow(http.MethodPut, p+"/rooms/{roomID}/state/{eventType}/*")
		allow(http.MethodPut, p+"/sendToDevice/{eventType}/{txnID}")

		// Their own account: the display name is the only profile field
		// they may change.
		allow(http.MethodPut, p+"/profile/{userID}/displayname")
		allow(http.MethodDelete, p+"/profile/{userID}/displayname")
		allow(http.MethodGet, p+"/devices")
		allow(http.MethodGet, p+"/devices/{deviceID}")
		allow(http.MethodPut, p+"/devices/{deviceID}")
		allow(http.MethodGet, p+"/account/whoami")

		// Beyond the module's list, what Synapse also lets guests do and
		// real clients in guest mode need: joining by alias (the room's
		// guest_access still decides), typing and receipts, their own
		// filters, presence and session.
		allow(http.MethodPost, p+"/join/{roomIDOrAlias}")
		allow(http.MethodPut, p+"/rooms/{roomID}/typing/{userID}")
		allow(http.MethodPost, p+"/rooms/{roomID}/receipt/{receiptType}/{eventID}")
		allow(http.MethodPost, p+"/rooms/{roomID}/read_markers")
		allow(http.MethodPost, p+"/user/{userID}/filter")
		allow(http.MethodGet, p+"/user/{userID}/filter/{filterID}")
		allow(http.MethodGet, p+"/capabilities")
		allow(http.MethodGet, p+"/pushrules/*")
		allow(http.MethodGet, p+"/presence/{userID}/status")
		allow(http.MethodPut, p+"/presence/{userID}/status")
		allow(http.MethodPost, p+"/logout")
		// Calls; turn_allow_guests still decides.
		allow(http.MethodGet, p+"/voip/turnServer")

		// End-to-end encryption; /keys/upload/{deviceID} is the r0 form of
		// /keys/upload.
		allow(http.MethodPost, p+"/keys/upload")
		allow(http.MethodPost, p+"/keys/upload/{deviceID}")
		allow(http.MethodPost, p+"/keys/query")
		allow(http.MethodPost, p+"/keys/claim")
	}
	allow(http.MethodGet, "/_matrix/client/v1/media/download/{serverName}/{mediaId}")
	allow(http.MethodGet, "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}")
	allow(http.MethodGet, "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}")
	return m
}()

// guestAllowed reports whether a guest may make the request. It matches the
// whole path rather than the route the request took, because the access-token
// middleware runs before routing for some of the APIs it guards (media).
func guestAllowed(r *http.Request) bool {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	return guestRoutes.Match(chi.NewRouteContext(), r.Method, path)
}
