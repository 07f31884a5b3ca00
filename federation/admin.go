package federation

import (
	"context"
	"errors"

	"homeserver/mxhttp"
)

// ErrUnknownDestination is returned by DestinationStore for a destination
// never tried.
var ErrUnknownDestination = errors.New("federation: unknown destination")

// Destination is the durable record of a destination's health, in
// Synapse's terms: when the last failed attempt was (0 after a success),
// the wait before the next one, when the current run of failures began,
// and the stream position of the last event delivered.
type Destination struct {
	Name                         string
	RetryLastTS, RetryInterval   int64
	FailureTS                    *int64
	LastSuccessfulStreamOrdering *int64
}

// DestinationRoom is a room whose events a destination was sent, with the
// stream position of the last one delivered.
type DestinationRoom struct {
	RoomID         string
	StreamOrdering int64
}

// DestinationQuery selects a page of destinations.
type DestinationQuery struct {
	From, Limit int
	// OrderBy is one of DestinationOrders; Desc reverses it.
	OrderBy string
	Desc    bool
	// Search, when set, must be part of the destination's name.
	Search string
}

// DestinationOrders are the orders of the list of destinations.
var DestinationOrders = []string{"destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"}

// DestinationStore keeps the destinations' records.
type DestinationStore interface {
	// RecordDelivery notes a delivery to destination: its backoff ends,
	// and the rooms of the delivered events (eventIDs) record their
	// stream positions.
	RecordDelivery(ctx context.Context, destination string, eventIDs []string) error
	// RecordFailure notes a failed attempt at now; the next one waits
	// interval. failureTS starts the run of failures when there is none.
	RecordFailure(ctx context.Context, destination string, now, interval int64) error
	// ResetDestination ends destination's backoff.
	ResetDestination(ctx context.Context, destination string) error
	// GetDestination returns ErrUnknownDestination for a destination
	// never tried.
	GetDestination(ctx context.Context, destination string) (Destination, error)
	ListDestinations(ctx context.Context, q DestinationQuery) ([]Destination, int, error)
	// DestinationRooms returns a page of destination's rooms, ordered by
	// room ID, and how many there are.
	DestinationRooms(ctx context.Context, destination string, from, limit int, desc bool) ([]DestinationRoom, int, error)
}

// recordDelivery notes that dest took a transaction holding items. A
// failure to record is logged: the transaction is delivered whatever the
// record says.
func (s *Service) recordDelivery(ctx context.Context, dest string, items []OutboxItem) {
	var ids []string
	for _, it := range items {
		if it.EventID != "" {
			ids = append(ids, it.EventID)
		}
	}
	if err := s.store.RecordDelivery(ctx, dest, ids); err != nil {
		s.log.Warn("recording a delivery", "destination", dest, "err", err)
	}
}

// recordFailure notes a failed attempt at dest. The recorded wait doubles
// from MinRetry up to MaxRetry, as the queue's own backoff does.
func (s *Service) recordFailure(ctx context.Context, dest string) {
	interval := s.cfg.MinRetry.Milliseconds()
	d, err := s.store.GetDestination(ctx, dest)
	if err == nil && d.RetryInterval > 0 {
		interval = min(d.RetryInterval*2, s.cfg.MaxRetry.Milliseconds())
	}
	if err != nil && !errors.Is(err, ErrUnknownDestination) {
		s.log.Warn("reading a destination's record", "destination", dest, "err", err)
		return
	}
	if err := s.store.RecordFailure(ctx, dest, s.now().UnixMilli(), interval); err != nil {
		s.log.Warn("recording a failed attempt", "destination", dest, "err", err)
	}
}

func unknownDestination() *mxhttp.Error { return mxhttp.NotFound("Unknown destination") }

// Destinations returns a page of the destinations this server has tried,
// and how many match.
func (s *Service) Destinations(ctx context.Context, q DestinationQuery) ([]Destination, int, error) {
	return s.store.ListDestinations(ctx, q)
}

// Destination returns one destination's record.
func (s *Service) Destination(ctx context.Context, name string) (Destination, error) {
	d, err := s.store.GetDestination(ctx, name)
	if errors.Is(err, ErrUnknownDestination) {
		return d, unknownDestination()
	}
	return d, err
}

// DestinationRooms returns a page of the rooms whose events name was sent.
func (s *Service) DestinationRooms(ctx context.Context, name string, from, limit int, desc bool) ([]DestinationRoom, int, error) {
	if _, err := s.Destination(ctx, name); err != nil {
		return nil, 0, err
	}
	return s.store.DestinationRooms(ctx, name, from, limit, desc)
}

// ResetConnection ends a failing destination's backoff and has its queue
// try again now. As in Synapse, a destination that is not failing is a
// 400.
func (s *Service) ResetConnection(ctx context.Context, name string) error {
	d, err := s.Destination(ctx, name)
	if err != nil {
		return err
	}
	if d.RetryLastTS == 0 {
		return mxhttp.Unknown("The retry timing does not need to be reset for this destination.")
	}
	if err := s.store.ResetDestination(ctx, name); err != nil {
		return err
	}
	// The queue runs in the process holding the sender's lease; in another
	// one, wake does nothing and the queue retries when its wait ends.
	s.sender.wake(name)
	s.sender.kick(name)
	return nil
}
