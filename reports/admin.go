package reports

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"

	"homeserver/mxhttp"
)

// ErrNotFound is returned by AdminStore for an unknown report.
var ErrNotFound = errors.New("reports: not found")

// EventReport is a report of an event as server admins read it: the
// report, with what is known of the event and its room.
type EventReport struct {
	Report
	// Sender is the sender of the reported event; "" if the event is not
	// known here.
	Sender string
	// RoomName and CanonicalAlias come from the room's current state;
	// nil when it has none.
	RoomName, CanonicalAlias *string
	// EventJSON is the reported event (read by EventReport only).
	EventJSON json.RawMessage
}

// EventReportQuery selects a page of event reports.
type EventReportQuery struct {
	From, Limit int
	// Oldest first when set; the most recent first otherwise.
	Forwards bool
	// UserID and RoomID, when set, must be part of the reporter's user ID
	// and of the room ID; Sender, when set, is the reported event's sender.
	UserID, RoomID, Sender string
}

// AdminStore is what server admins read and remove of reports.
type AdminStore interface {
	// EventReports returns a page of event reports and how many match.
	EventReports(ctx context.Context, q EventReportQuery) ([]EventReport, int, error)
	// EventReport returns one event report with its event; ErrNotFound
	// when there is none with that ID.
	EventReport(ctx context.Context, id string) (EventReport, error)
	// DeleteEventReport removes an event report; ErrNotFound when there is
	// none with that ID.
	DeleteEventReport(ctx context.Context, id string) error
}

// reportIDRe is what Add makes report IDs of.
var reportIDRe = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

func checkID(id string) error {
	if !reportIDRe.MatchString(id) {
		return mxhttp.InvalidParam("The report_id parameter must be a report ID")
	}
	return nil
}

// EventReports returns a page of the reports of events, and how many match.
func (s *Service) EventReports(ctx context.Context, q EventReportQuery) ([]EventReport, int, error) {
	return s.store.EventReports(ctx, q)
}

// EventReport returns one report of an event, with the event.
func (s *Service) EventReport(ctx context.Context, id string) (EventReport, error) {
	if err := checkID(id); err != nil {
		return EventReport{}, err
	}
	r, err := s.store.EventReport(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return r, mxhttp.NotFound("Event report not found")
	}
	return r, err
}

// DeleteEventReport removes one report of an event.
func (s *Service) DeleteEventReport(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	err := s.store.DeleteEventReport(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return mxhttp.NotFound("Event report not found")
	}
	return err
}
