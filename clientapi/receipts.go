package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/receipts"
	"homeserver/typing"
)

// ephemeralServices are what the receipt, read-marker and typing endpoints
// call.
type ephemeralServices struct {
	receipts *receipts.Service
	typing   *typing.Service
}

func (a *API) receiptRoutes(r chi.Router) {
	r.Post("/rooms/{roomID}/receipt/{receiptType}/{eventID}", a.postReceipt)
	r.Post("/rooms/{roomID}/read_markers", a.postReadMarkers)
	r.Put("/rooms/{roomID}/typing/{userID}", a.putTyping)
}

func (a *API) postReceipt(w http.ResponseWriter, r *http.Request) {
	roomID, receiptType, eventID := pathParam(r, "roomID"), pathParam(r, "receiptType"), pathParam(r, "eventID")
	if !strings.HasPrefix(roomID, "!") || !strings.HasPrefix(eventID, "$") {
		a.fail(w, r, mxhttp.InvalidParam("A valid room ID and event ID must be specified"))
		return
	}
	switch receiptType {
	case receipts.TypeRead, receipts.TypeReadPrivate, receipts.TypeFullyRead:
	default:
		a.fail(w, r, mxhttp.InvalidParam("Receipt type must be %s, %s or %s",
			receipts.TypeRead, receipts.TypeReadPrivate, receipts.TypeFullyRead))
		return
	}
	// The spec requires a body, but clients of old (and gomatrix's) send none.
	var body struct {
		ThreadID json.RawMessage `json:"thread_id"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	threadID, err := receiptThread(receiptType, body.ThreadID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	me := requester(r).UserID
	if err := a.checkReceipt(r.Context(), me, roomID, eventID, threadID); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.putReceipt(r.Context(), me, roomID, receiptType, eventID, threadID); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) postReadMarkers(w http.ResponseWriter, r *http.Request) {
	var body struct {
		FullyRead   *string `json:"m.fully_read"`
		Read        *string `json:"m.read"`
		ReadPrivate *string `json:"m.read.private"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, me := pathParam(r, "roomID"), requester(r).UserID
	// Check every marker before setting any, so that a refusal sets none.
	var marks [][2]string
	for _, m := range []struct {
		typ string
		id  *string
	}{{receipts.TypeFullyRead, body.FullyRead}, {receipts.TypeRead, body.Read}, {receipts.TypeReadPrivate, body.ReadPrivate}} {
		if m.id == nil || *m.id == "" {
			continue
		}
		if !strings.HasPrefix(*m.id, "$") {
			a.fail(w, r, mxhttp.InvalidParam("%s must be an event ID", m.typ))
			return
		}
		if err := a.checkReceipt(r.Context(), me, roomID, *m.id, ""); err != nil {
			a.fail(w, r, err)
			return
		}
		marks = append(marks, [2]string{m.typ, *m.id})
	}
	for _, m := range marks {
		if err := a.putReceipt(r.Context(), me, roomID, m[0], m[1], ""); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	ok(w, empty)
}

func (a *API) putTyping(w http.ResponseWriter, r *http.Request) {
	me, roomID := requester(r).UserID, pathParam(r, "roomID")
	if pathParam(r, "userID") != me {
		a.fail(w, r, mxhttp.Forbidden("Cannot set another user's typing state"))
		return
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Typing == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing typing"))
		return
	}
	var timeout time.Duration // the service's default
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			a.fail(w, r, mxhttp.InvalidParam("timeout must not be negative"))
			return
		}
		timeout = time.Duration(min(*body.Timeout, typing.MaxTimeout.Milliseconds())) * time.Millisecond
	}
	if err := a.requireJoined(r.Context(), me, roomID); err != nil {
		a.fail(w, r, err)
		return
	}
	a.ephemeral.typing.Set(roomID, me, *body.Typing, timeout)
	ok(w, empty)
}

// receiptThread reads a receipt's thread_id: absent, or a non-empty string
// ("main" or an event ID) for a receipt type that has threads.
func receiptThread(receiptType string, raw json.RawMessage) (string, error) {
	if raw == nil {
		return "", nil
	}
	var id string
	if err := json.Unmarshal(raw, &id); err != nil || id == "" {
		return "", mxhttp.InvalidParam("thread_id field must be a non-empty string")
	}
	if receiptType == receipts.TypeFullyRead {
		return "", mxhttp.InvalidParam("thread_id is not compatible with %s receipts", receipts.TypeFullyRead)
	}
	if !receipts.ValidThread(id) {
		return "", mxhttp.InvalidParam("thread_id must be %q or a thread root's event ID", receipts.MainThread)
	}
	return id, nil
}

// requireJoined refuses users not joined to the room.
func (a *API) requireJoined(ctx context.Context, user, roomID string) error {
	m, err := a.rooms.Membership(ctx, roomID, user)
	if err != nil {
		return err
	}
	if m != "join" {
		return mxhttp.Forbidden("User %s is not in room %s", user, roomID)
	}
	return nil
}

// checkReceipt checks that user may mark eventID: they are joined to the
// room, the event is in it and visible to them, and it belongs to threadID
// when one is given.
func (a *API) checkReceipt(ctx context.Context, user, roomID, eventID, threadID string) error {
	if err := a.requireJoined(ctx, user, roomID); err != nil {
		return err
	}
	ev, err := a.rooms.GetEvent(ctx, user, roomID, eventID)
	if err != nil {
		return err
	}
	if threadID == "" {
		return nil
	}
	seen := map[string]json.RawMessage{eventID: ev}
	in, err := receipts.InThread(ctx, eventID, threadID, func(ctx context.Context, id string) (receipts.Relation, error) {
		ev, ok := seen[id]
		if !ok {
			var err error
			ev, err = a.rooms.GetEvent(ctx, user, roomID, id)
			var me *mxhttp.Error
			if errors.As(err, &me) {
				return receipts.Relation{}, nil // unknown or hidden: the chain ends
			}
			if err != nil {
				return receipts.Relation{}, err
			}
		}
		var e struct {
			Content struct {
				RelatesTo receipts.Relation `json:"m.relates_to"`
			} `json:"content"`
		}
		_ = json.Unmarshal(ev, &e) // a malformed relation is none
		return e.Content.RelatesTo, nil
	})
	if err != nil {
		return err
	}
	if !in {
		return mxhttp.InvalidParam("event_id %s is not related to thread %s", eventID, threadID)
	}
	return nil
}

// putReceipt sets one receipt or, for m.fully_read, the read marker, which
// lives in the room's account data.
func (a *API) putReceipt(ctx context.Context, user, roomID, receiptType, eventID, threadID string) error {
	if receiptType == receipts.TypeFullyRead {
		content, err := json.Marshal(map[string]string{"event_id": eventID})
		if err != nil {
			return err
		}
		return a.accountData.PutInternal(ctx, user, roomID, receipts.TypeFullyRead, content)
	}
	return a.ephemeral.receipts.Post(ctx, user, roomID, receiptType, eventID, threadID)
}
