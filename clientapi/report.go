package clientapi

import (
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/reports"
	"homeserver/rooms"
)

func (a *API) reportRoutes(r chi.Router) {
	r.Post("/rooms/{roomID}/report/{eventID}", a.reportEvent)
	r.Post("/rooms/{roomID}/report", a.reportRoom)
	r.Post("/users/{userID}/report", a.reportUser)
}

// reportBody is the body of every report. Score is the legacy rating of
// event reports (removed in Matrix 1.18), still stored when a client sends
// it.
type reportBody struct {
	Reason *string `json:"reason"`
	Score  *int64  `json:"score"`
}

// readReport decodes a report's body; reasonRequired is for the room and
// user reports, whose reason the spec requires (it may be blank).
func (a *API) readReport(w http.ResponseWriter, r *http.Request, reasonRequired bool) (reports.Report, bool) {
	var body reportBody
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return reports.Report{}, false
	}
	if body.Reason == nil && reasonRequired {
		a.fail(w, r, mxhttp.MissingParam("Missing reason"))
		return reports.Report{}, false
	}
	rep := reports.Report{Reporter: requester(r).UserID, Score: body.Score}
	if body.Reason != nil {
		rep.Reason = *body.Reason
	}
	if len(rep.Reason) > reports.MaxReasonLength {
		a.fail(w, r, mxhttp.InvalidParam("reason may not be longer than %d bytes", reports.MaxReasonLength))
		return reports.Report{}, false
	}
	// Reports are written by anyone about anything, so they share the
	// message limit that bounds what a user can make the server store.
	if ok, retry := a.allow(r, a.rcMessage, rep.Reporter); !ok {
		a.fail(w, r, mxhttp.LimitExceeded(retry))
		return reports.Report{}, false
	}
	return rep, true
}

func (a *API) addReport(w http.ResponseWriter, r *http.Request, rep reports.Report) {
	if err := a.reports.Add(r.Context(), rep); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

// reportEvent reports an event of a room the reporter is joined to. An
// event they are not joined to the room of, or may not see, answers as
// one that does not exist, so that reports reveal nothing.
func (a *API) reportEvent(w http.ResponseWriter, r *http.Request) {
	rep, valid := a.readReport(w, r, false)
	if !valid {
		return
	}
	rep.RoomID, rep.EventID = pathParam(r, "roomID"), pathParam(r, "eventID")
	hidden := mxhttp.NotFound("Unable to report event: it does not exist or you aren't able to see it")
	membership, err := a.rooms.Membership(r.Context(), rep.RoomID, rep.Reporter)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if membership != "join" {
		a.fail(w, r, hidden)
		return
	}
	if _, err := a.rooms.GetEvent(r.Context(), rep.Reporter, rep.RoomID, rep.EventID); err != nil {
		var me *mxhttp.Error
		if errors.As(err, &me) && me.Status < http.StatusInternalServerError {
			err = hidden
		}
		a.fail(w, r, err)
		return
	}
	a.addReport(w, r, rep)
}

// reportRoom reports a room this server knows; the reporter need not be
// in it.
func (a *API) reportRoom(w http.ResponseWriter, r *http.Request) {
	rep, valid := a.readReport(w, r, true)
	if !valid {
		return
	}
	rep.RoomID = pathParam(r, "roomID")
	if _, err := a.rooms.RoomVersion(r.Context(), rep.RoomID); err != nil {
		if errors.Is(err, rooms.ErrNotFound) {
			err = mxhttp.NotFound("Room does not exist")
		}
		a.fail(w, r, err)
		return
	}
	a.addReport(w, r, rep)
}

// reportUser reports a user. Local users must exist (deactivated ones do
// not, to the reporter); other servers' users cannot be checked here and
// are taken on trust.
func (a *API) reportUser(w http.ResponseWriter, r *http.Request) {
	rep, valid := a.readReport(w, r, true)
	if !valid {
		return
	}
	rep.UserID = pathParam(r, "userID")
	if err := validUserID(rep.UserID); err != nil {
		a.fail(w, r, err)
		return
	}
	if a.accounts.IsLocal(rep.UserID) {
		acc, err := a.accounts.GetAccount(r.Context(), rep.UserID)
		if errors.Is(err, accounts.ErrNotFound) || (err == nil && acc.Deactivated) {
			err = mxhttp.NotFound("User does not exist")
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
	}
	a.addReport(w, r, rep)
}
