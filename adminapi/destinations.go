package adminapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/federation"
	"homeserver/mxhttp"
)

// DestinationAdmin is what the admin API asks of federation's outbound
// queues (*federation.Service).
type DestinationAdmin interface {
	Destinations(ctx context.Context, q federation.DestinationQuery) ([]federation.Destination, int, error)
	Destination(ctx context.Context, name string) (federation.Destination, error)
	DestinationRooms(ctx context.Context, name string, from, limit int, desc bool) ([]federation.DestinationRoom, int, error)
	ResetConnection(ctx context.Context, name string) error
}

var _ DestinationAdmin = (*federation.Service)(nil)

func (a *API) destinationRoutes(r chi.Router) {
	r.Get("/v1/federation/destinations", a.listDestinations)
	r.Get("/v1/federation/destinations/{destination}", a.getDestination)
	r.Get("/v1/federation/destinations/{destination}/rooms", a.destinationRooms)
	r.Post("/v1/federation/destinations/{destination}/reset_connection", a.resetDestination)
}

func destinationJSON(d federation.Destination) map[string]any {
	return map[string]any{
		"destination":                     d.Name,
		"retry_last_ts":                   d.RetryLastTS,
		"retry_interval":                  d.RetryInterval,
		"failure_ts":                      d.FailureTS,
		"last_successful_stream_ordering": d.LastSuccessfulStreamOrdering,
	}
}

// noDestination answers for a named destination of a server that does
// not federate: it has none.
func noDestination() error { return mxhttp.NotFound("Unknown destination") }

func (a *API) listDestinations(w http.ResponseWriter, r *http.Request) {
	p, err := readOffsetPage(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := federation.DestinationQuery{From: p.from, Limit: p.limit, Search: r.URL.Query().Get("destination")}
	if q.OrderBy, err = readOrderBy(r, "destination", federation.DestinationOrders); err != nil {
		a.fail(w, r, err)
		return
	}
	if q.Desc, err = readDirection(r, "f"); err != nil {
		a.fail(w, r, err)
		return
	}
	list, total := []federation.Destination{}, 0
	if a.d.Destinations != nil {
		if list, total, err = a.d.Destinations.Destinations(r.Context(), q); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	out := make([]map[string]any, len(list))
	for i, d := range list {
		out[i] = destinationJSON(d)
	}
	resp := map[string]any{"destinations": out, "total": total}
	// Synapse gives this list's next_token as a string.
	if next, more := p.next(len(list), total); more {
		resp["next_token"] = strconv.Itoa(next)
	}
	ok(w, resp)
}

func (a *API) getDestination(w http.ResponseWriter, r *http.Request) {
	if a.d.Destinations == nil {
		a.fail(w, r, noDestination())
		return
	}
	d, err := a.d.Destinations.Destination(r.Context(), pathParam(r, "destination"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, destinationJSON(d))
}

func (a *API) destinationRooms(w http.ResponseWriter, r *http.Request) {
	p, err := readOffsetPage(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	desc, err := readDirection(r, "f")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if a.d.Destinations == nil {
		a.fail(w, r, noDestination())
		return
	}
	rooms, total, err := a.d.Destinations.DestinationRooms(r.Context(), pathParam(r, "destination"), p.from, p.limit, desc)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(rooms))
	for i, rm := range rooms {
		out[i] = map[string]any{"room_id": rm.RoomID, "stream_ordering": rm.StreamOrdering}
	}
	resp := map[string]any{"rooms": out, "total": total}
	if next, more := p.next(len(rooms), total); more {
		resp["next_token"] = strconv.Itoa(next)
	}
	ok(w, resp)
}

func (a *API) resetDestination(w http.ResponseWriter, r *http.Request) {
	if a.d.Destinations == nil {
		a.fail(w, r, noDestination())
		return
	}
	if err := a.d.Destinations.ResetConnection(r.Context(), pathParam(r, "destination")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}
