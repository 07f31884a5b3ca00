package federation

import (
	"context"

	"homeserver/stream"
)

// OutboxItem is one thing owed to a destination: an event or an EDU.
type OutboxItem struct {
	Pos       int64
	EventID   string
	EDU       []byte
	CreatedTS int64
}

// OutboxEntry is an item to enqueue for a destination.
type OutboxEntry struct {
	Destination string
	EventID     string
	EDU         []byte
}

// Store is the persistence federation needs beyond the rooms service.
type Store interface {
	// Enqueue adds entries to the destinations' outboxes and moves the
	// reader's cursor in stream s to pos, in one transaction.
	Enqueue(ctx context.Context, entries []OutboxEntry, reader string, s stream.Name, pos int64) error
	// Outbox returns up to limit items owed to destination, oldest first.
	Outbox(ctx context.Context, destination string, limit int) ([]OutboxItem, error)
	// OutboxDestinations lists the destinations with something owed.
	OutboxDestinations(ctx context.Context) ([]string, error)
	// Delivered removes destination's items up to pos.
	Delivered(ctx context.Context, destination string, upTo int64) error
	// OutboxDepth counts the items owed to destination.
	OutboxDepth(ctx context.Context, destination string) (int64, error)
	ReaderCursor(ctx context.Context, reader string, s stream.Name) (int64, bool, error)
	SetReaderCursor(ctx context.Context, reader string, s stream.Name, pos int64) error
	InboundTxn(ctx context.Context, origin, txnID string) ([]byte, bool, error)
	SaveInboundTxn(ctx context.Context, origin, txnID string, response []byte) error
	DestinationStore
}
