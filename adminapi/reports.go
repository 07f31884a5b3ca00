package adminapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/reports"
)

func (a *API) reportRoutes(r chi.Router) {
	r.Get("/v1/event_reports", a.listEventReports)
	r.Get("/v1/event_reports/{reportID}", a.getEventReport)
	r.Delete("/v1/event_reports/{reportID}", a.deleteEventReport)
}

// eventReportJSON is a report as Synapse lists it.
func eventReportJSON(rep reports.EventReport) map[string]any {
	return map[string]any{
		"id":              rep.ID,
		"received_ts":     rep.ReceivedTS,
		"room_id":         rep.RoomID,
		"name":            rep.RoomName,
		"event_id":        rep.EventID,
		"user_id":         rep.Reporter,
		"reason":          rep.Reason,
		"score":           rep.Score,
		"sender":          nullable(rep.Sender),
		"canonical_alias": rep.CanonicalAlias,
	}
}

func (a *API) listEventReports(w http.ResponseWriter, r *http.Request) {
	p, err := readOffsetPage(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	desc, err := readDirection(r, "b")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	qs := r.URL.Query()
	list, total, err := a.d.Reports.EventReports(r.Context(), reports.EventReportQuery{
		From: p.from, Limit: p.limit, Forwards: !desc,
		UserID: qs.Get("user_id"), RoomID: qs.Get("room_id"), Sender: qs.Get("sender_user_id"),
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(list))
	for i, rep := range list {
		out[i] = eventReportJSON(rep)
	}
	resp := map[string]any{"event_reports": out, "total": total}
	if next, more := p.next(len(list), total); more {
		resp["next_token"] = next
	}
	ok(w, resp)
}

func (a *API) getEventReport(w http.ResponseWriter, r *http.Request) {
	rep, err := a.d.Reports.EventReport(r.Context(), pathParam(r, "reportID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := eventReportJSON(rep)
	out["event_json"] = rep.EventJSON
	ok(w, out)
}

func (a *API) deleteEventReport(w http.ResponseWriter, r *http.Request) {
	if err := a.d.Reports.DeleteEventReport(r.Context(), pathParam(r, "reportID")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}
