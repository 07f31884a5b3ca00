// Package reports keeps what users report to the server's admins: events,
// rooms and users they find inappropriate. Reports are stored, not acted
// upon; admins read them from the database.
package reports

import (
	"context"
	"time"

	"homeserver/accounts"
)

// MaxReasonLength bounds a report's reason (in bytes), so that one report
// cannot hold much more than a person writes.
const MaxReasonLength = 4096

// Report is one report. Of RoomID, EventID and UserID, the ones naming
// what is reported are set: RoomID and EventID for an event, RoomID for a
// room, UserID for a user.
type Report struct {
	ID         string
	Reporter   string
	RoomID     string
	EventID    string
	UserID     string
	Reason     string
	Score      *int64
	ReceivedTS int64
}

// Store persists reports.
type Store interface {
	AddReport(ctx context.Context, r Report) error
	AdminStore
}

// Service records reports.
type Service struct {
	store Store
	now   func() time.Time
}

// New returns the reports service.
func New(store Store) *Service { return &Service{store: store, now: time.Now} }

// Add stores r, giving it an ID and the time it was received.
func (s *Service) Add(ctx context.Context, r Report) error {
	r.ID = accounts.RandomString(24, "abcdefghijklmnopqrstuvwxyz0123456789")
	r.ReceivedTS = s.now().UnixMilli()
	return s.store.AddReport(ctx, r)
}
