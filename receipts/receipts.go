// Package receipts keeps users' read receipts (m.read and m.read.private):
// "read up to" markers, one per room, receipt type, user and thread. Each
// change takes a position on the receipts stream, which /sync reads forward
// from its token; m.receipt ephemeral events are built per viewer, so that a
// private receipt reaches no one but its owner.
package receipts

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"homeserver/mxhttp"
)

// Receipt types and the thread ID of the main timeline.
const (
	TypeRead        = "m.read"
	TypeReadPrivate = "m.read.private"
	// TypeFullyRead is not a receipt but a room account data event; the
	// receipt endpoints accept it as a shorthand for /read_markers.
	TypeFullyRead = "m.fully_read"
	MainThread    = "main"
)

// Receipt is one user's latest receipt of one type in one room and thread.
type Receipt struct {
	RoomID  string
	Type    string // TypeRead or TypeReadPrivate
	UserID  string
	EventID string
	// ThreadID is "" for an unthreaded receipt, MainThread, or the event
	// ID of a thread root.
	ThreadID string
	TS       int64 // milliseconds since the epoch
	Pos      int64 // position on the receipts stream
}

// Store keeps receipts; storage implements it.
type Store interface {
	// PutReceipt replaces the user's receipt for (room, type, user, thread)
	// with r unless the one it has points at the same event or at a later
	// one in the room (receipts only move forward), and returns the
	// position given to r, which is one more than the highest position
	// given so far, or 0 when nothing changed. r.Pos is ignored.
	PutReceipt(ctx context.Context, r Receipt) (int64, error)
	// ReceiptsSince returns the receipts of those rooms whose position is in
	// (from, to], in position order.
	ReceiptsSince(ctx context.Context, roomIDs []string, from, to int64) ([]Receipt, error)
	// MaxReceiptPos returns the highest position given (0 when none).
	MaxReceiptPos(ctx context.Context) (int64, error)
}

// Service records receipts and reads them back by stream position.
type Service struct {
	store  Store
	notify func(roomID string)
	now    func() time.Time

	// write makes positions follow commit order: each position is
	// allocated and committed before the next is allocated.
	write sync.Mutex
}

// New returns the receipts service. notify, when not nil, is called after
// each receipt commits, with its room, so that waiting syncs of the room's
// members look again; it must not block.
func New(store Store, notify func(roomID string)) *Service {
	return &Service{store: store, notify: notify, now: time.Now}
}

// ValidThread reports whether threadID may name a receipt's thread: "" for
// none, MainThread, or an event ID.
func ValidThread(threadID string) bool {
	return threadID == "" || threadID == MainThread || strings.HasPrefix(threadID, "$")
}

// Post records that userID has read up to eventID in roomID. The caller has
// checked that the user may (is joined) and that the event is in the room.
func (s *Service) Post(ctx context.Context, userID, roomID, receiptType, eventID, threadID string) error {
	if receiptType != TypeRead && receiptType != TypeReadPrivate {
		return mxhttp.InvalidParam("Receipt type must be %s or %s", TypeRead, TypeReadPrivate)
	}
	if !strings.HasPrefix(eventID, "$") {
		return mxhttp.InvalidParam("Invalid event ID %q", eventID)
	}
	if !ValidThread(threadID) {
		return mxhttp.InvalidParam("thread_id must be %q or an event ID", MainThread)
	}
	s.write.Lock()
	pos, err := s.store.PutReceipt(ctx, Receipt{
		RoomID: roomID, Type: receiptType, UserID: userID, EventID: eventID,
		ThreadID: threadID, TS: s.now().UnixMilli(),
	})
	s.write.Unlock()
	if err != nil {
		return err
	}
	if pos > 0 && s.notify != nil {
		s.notify(roomID)
	}
	return nil
}

// Since returns the latest receipt per (room, type, user, thread) of those
// rooms that changed in (from, to], private ones included: Event filters
// them per viewer.
func (s *Service) Since(ctx context.Context, roomIDs []string, from, to int64) ([]Receipt, error) {
	if len(roomIDs) == 0 || to <= from {
		return nil, nil
	}
	return s.store.ReceiptsSince(ctx, roomIDs, from, to)
}

// MaxPos returns the current position of the receipts stream.
func (s *Service) MaxPos(ctx context.Context) (int64, error) {
	return s.store.MaxReceiptPos(ctx)
}

type userReceipt struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// Event builds the content of the m.receipt ephemeral event of one room as
// viewer may see it, {eventID: {type: {userID: {ts, thread_id?}}}}: a
// private receipt only when viewer owns it. It returns false when there is
// nothing to show. receipts must all be of one room; where two of them
// claim the same (event, type, user) slot, as threaded and unthreaded ones
// on one event can, the later one wins.
func Event(receipts []Receipt, viewer string) (json.RawMessage, bool) {
	content := map[string]map[string]map[string]userReceipt{}
	pos := map[[3]string]int64{}
	for _, r := range receipts {
		switch r.Type {
		case TypeRead:
		case TypeReadPrivate:
			if r.UserID != viewer {
				continue
			}
		default:
			continue
		}
		slot := [3]string{r.EventID, r.Type, r.UserID}
		if p, seen := pos[slot]; seen && p > r.Pos {
			continue
		}
		pos[slot] = r.Pos
		byType := content[r.EventID]
		if byType == nil {
			byType = map[string]map[string]userReceipt{}
			content[r.EventID] = byType
		}
		byUser := byType[r.Type]
		if byUser == nil {
			byUser = map[string]userReceipt{}
			byType[r.Type] = byUser
		}
		byUser[r.UserID] = userReceipt{TS: r.TS, ThreadID: r.ThreadID}
	}
	if len(content) == 0 {
		return nil, false
	}
	data, err := json.Marshal(content)
	if err != nil {
		return nil, false // maps of strings always marshal
	}
	return data, true
}

// Relation is an event's m.relates_to, as far as threads are concerned.
type Relation struct {
	RelType string `json:"rel_type"` // "m.thread", "m.annotation", ...; "" when none
	EventID string `json:"event_id"` // the event related to
}

// maxThreadHops bounds the walk up relations, as the spec recommends.
const maxThreadHops = 3

// InThread reports whether eventID belongs to threadID (MainThread or a
// thread root's event ID), following its relations upwards: an event is in
// thread T when it is T, relates to T with m.thread, or relates (by any
// other relation, up to three hops) to such an event; it is in the main
// timeline when no m.thread relation is met. relation returns an event's
// relation, the zero Relation for an event it cannot find.
func InThread(ctx context.Context, eventID, threadID string, relation func(ctx context.Context, eventID string) (Relation, error)) (bool, error) {
	id := eventID
	for range maxThreadHops + 1 {
		if threadID != MainThread && id == threadID {
			return true, nil
		}
		rel, err := relation(ctx, id)
		if err != nil {
			return false, err
		}
		if rel.RelType == "m.thread" {
			return threadID != MainThread && rel.EventID == threadID, nil
		}
		if rel.EventID == "" {
			break
		}
		id = rel.EventID
	}
	return threadID == MainThread, nil
}
