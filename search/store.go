package search

import (
	"context"

	"homeserver/rooms"
)

// Keys that can be searched, and the event type each belongs to.
const (
	KeyBody  = "content.body"
	KeyName  = "content.name"
	KeyTopic = "content.topic"
)

// Entry is one event's searchable text, as indexed.
type Entry struct {
	EventID, RoomID, Sender string
	// Key is the searched key the text comes from (KeyBody, ...).
	Key   string
	Value string
	Pos   int64 // stream position
	TS    int64 // origin_server_ts
}

// Update is what one step of the indexing reader changes, applied in one
// transaction with its cursor.
type Update struct {
	Put []Entry
	// Redacted are events whose redaction was applied: their entries go.
	Redacted []string
}

// Cursor is where a page of results ended: results continue strictly
// after it in the query's order.
type Cursor struct {
	Rank float64 // order by rank only
	Pos  int64
}

// Query is one search of the index.
type Query struct {
	// Words must all occur in the text; the last matches as a prefix.
	// They hold letters, digits and marks only.
	Words []string
	// Rooms bounds the search (never empty).
	Rooms []string
	// Keys bounds the keys searched (never empty).
	Keys       []string
	Senders    []string // nil: any
	NotSenders []string
	// Recent orders by stream position, newest first; else by rank, best
	// first, then newest first.
	Recent bool
	After  *Cursor
	Limit  int
}

// Hit is one event found, with its rank (higher is better).
type Hit struct {
	Event rooms.Stored
	Rank  float64
}

// Store is the persistence search needs; storage implements it.
type Store interface {
	// SearchCursor is the position in the events stream up to which the
	// index is written (0 for none).
	SearchCursor(ctx context.Context, reader string) (int64, error)
	EventsAfter(ctx context.Context, from int64, limit int) ([]rooms.Stored, error)
	// UpdateSearchIndex applies u and, when cursor >= 0, sets the reader's
	// cursor in the events stream, in one transaction.
	UpdateSearchIndex(ctx context.Context, reader string, u Update, cursor int64) error
	// SearchEvents returns up to q.Limit matches in q's order, with their
	// events, redacted ones included (the index may not have caught up).
	SearchEvents(ctx context.Context, q Query) ([]Hit, error)
	// CountSearchEvents counts the matches of q, ignoring After and Limit,
	// up to max.
	CountSearchEvents(ctx context.Context, q Query, max int) (int, error)
}
