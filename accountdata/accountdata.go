// Package accountdata keeps each user's account data: global and per-room
// JSON objects keyed by type, including the room tags (the m.tag event).
// Every change gets a position on the account-data stream, an ephemeral
// stream of its own that /sync reads forward from its token.
package accountdata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sync"

	"homeserver/mxhttp"
)

// Item is the latest value of one piece of account data.
type Item struct {
	RoomID  string // "" for global account data
	Type    string
	Content json.RawMessage
	Pos     int64
}

// ErrNotFound is what the store returns for account data never set.
var ErrNotFound = errors.New("accountdata: not found")

// Store persists account data, one row per (user, room, type) holding the
// latest content and the stream position of its last change.
type Store interface {
	// UpdateAccountData runs fn, in one write transaction, on the current
	// content (nil when unset). Unless fn returns nil content, what it
	// returns is stored under the next stream position, which is returned;
	// positions are strictly increasing in commit order. It returns 0 when
	// fn changed nothing.
	UpdateAccountData(ctx context.Context, userID, roomID, eventType string, fn func(current json.RawMessage) (json.RawMessage, error)) (int64, error)
	// GetAccountData returns the content, or ErrNotFound.
	GetAccountData(ctx context.Context, userID, roomID, eventType string) (json.RawMessage, error)
	// AccountDataSince lists the user's items whose last change is in
	// (from, to], in stream order.
	AccountDataSince(ctx context.Context, userID string, from, to int64) ([]Item, error)
	// MaxAccountDataPos is the position of the last committed change (0
	// when there is none).
	MaxAccountDataPos(ctx context.Context) (int64, error)
}

// TagType is the room account-data type that holds a room's tags.
const TagType = "m.tag"

// maxNameLen bounds event types and tag names (the spec's 255 bytes).
const maxNameLen = 255

// serverManaged lists the types clients may read but not set: the server
// maintains them through other APIs.
var serverManaged = map[string]bool{"m.fully_read": true, "m.push_rules": true}

// roomIDRe is the shape of a room ID; the server part is absent in rooms of
// version 12 and later.
var roomIDRe = regexp.MustCompile(`^![^:]+(:.+)?$`)

// Service reads and writes account data.
type Service struct {
	store  Store
	notify func(userID string)
	// write keeps this process's changes in one queue, so that they
	// allocate positions and commit without waiting on each other in the
	// database.
	write sync.Mutex
}

// New returns the service. notify, when not nil, is called after each
// committed change with the user whose account data changed.
func New(store Store, notify func(userID string)) *Service {
	return &Service{store: store, notify: notify}
}

// Put sets account data for a client: global when roomID is "", else for
// that room. Types the server manages are refused with 405.
func (s *Service) Put(ctx context.Context, userID, roomID, eventType string, content json.RawMessage) error {
	if err := checkKey(roomID, eventType); err != nil {
		return err
	}
	if serverManaged[eventType] {
		return &mxhttp.Error{Status: http.StatusMethodNotAllowed, Code: "M_BAD_JSON",
			Message: fmt.Sprintf("Cannot set %s through this API", eventType)}
	}
	return s.PutInternal(ctx, userID, roomID, eventType, content)
}

// PutInternal is Put without the restriction on types, for the server's own
// writers (read markers set m.fully_read).
func (s *Service) PutInternal(ctx context.Context, userID, roomID, eventType string, content json.RawMessage) error {
	if err := checkKey(roomID, eventType); err != nil {
		return err
	}
	c, err := object(content)
	if err != nil {
		return err
	}
	return s.update(ctx, userID, roomID, eventType, func(json.RawMessage) (json.RawMessage, error) { return c, nil })
}

// Get returns the content of account data; 404 M_NOT_FOUND when unset.
func (s *Service) Get(ctx context.Context, userID, roomID, eventType string) (json.RawMessage, error) {
	if err := checkKey(roomID, eventType); err != nil {
		return nil, err
	}
	c, err := s.store.GetAccountData(ctx, userID, roomID, eventType)
	if errors.Is(err, ErrNotFound) {
		if roomID != "" {
			return nil, mxhttp.NotFound("Room account data not found")
		}
		return nil, mxhttp.NotFound("Account data not found")
	}
	return c, err
}

// Since returns the latest value of each of the user's items changed in
// (from, to], in stream order. An item changed again after to is left for
// the window that holds its last change, so a reader moving its token from
// window to window sees every item's latest value exactly once per change.
func (s *Service) Since(ctx context.Context, userID string, from, to int64) ([]Item, error) {
	if to <= from {
		return nil, nil
	}
	return s.store.AccountDataSince(ctx, userID, from, to)
}

// MaxPos returns the current position of the account-data stream.
func (s *Service) MaxPos(ctx context.Context) (int64, error) {
	return s.store.MaxAccountDataPos(ctx)
}

// Tags returns the user's tags on a room (empty when there are none).
func (s *Service) Tags(ctx context.Context, userID, roomID string) (map[string]json.RawMessage, error) {
	if err := checkRoom(roomID); err != nil {
		return nil, err
	}
	c, err := s.store.GetAccountData(ctx, userID, roomID, TagType)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	_, tags := splitTags(c)
	return tags, nil
}

// SetTag adds a tag to a room, or replaces its content. content is the tag's
// object, whose order, if present, must be a number in [0, 1].
func (s *Service) SetTag(ctx context.Context, userID, roomID, tag string, content json.RawMessage) error {
	if err := checkTag(roomID, tag); err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := mxhttp.Unmarshal(content, &fields); err != nil {
		return err
	}
	if raw, ok := fields["order"]; ok {
		var order *float64
		if err := json.Unmarshal(raw, &order); err != nil || order == nil {
			return mxhttp.BadJSON("order must be a number")
		}
		if *order < 0 || *order > 1 {
			return mxhttp.InvalidParam("order must be between 0 and 1")
		}
	}
	c, err := compact(content)
	if err != nil {
		return err
	}
	return s.update(ctx, userID, roomID, TagType, func(current json.RawMessage) (json.RawMessage, error) {
		rest, tags := splitTags(current)
		tags[tag] = c
		return joinTags(rest, tags)
	})
}

// RemoveTag removes a tag from a room; removing a tag the room does not
// have changes nothing.
func (s *Service) RemoveTag(ctx context.Context, userID, roomID, tag string) error {
	if err := checkTag(roomID, tag); err != nil {
		return err
	}
	return s.update(ctx, userID, roomID, TagType, func(current json.RawMessage) (json.RawMessage, error) {
		rest, tags := splitTags(current)
		if _, ok := tags[tag]; !ok {
			return nil, nil
		}
		delete(tags, tag)
		return joinTags(rest, tags)
	})
}

func (s *Service) update(ctx context.Context, userID, roomID, eventType string, fn func(json.RawMessage) (json.RawMessage, error)) error {
	s.write.Lock()
	pos, err := s.store.UpdateAccountData(ctx, userID, roomID, eventType, fn)
	s.write.Unlock()
	if err != nil {
		return err
	}
	if pos != 0 && s.notify != nil {
		s.notify(userID)
	}
	return nil
}

// splitTags parses m.tag content into its tags and any other top-level
// fields, which are kept. Content that is not of the expected shape (it may
// have been set through the generic API) counts as no tags.
func splitTags(content json.RawMessage) (map[string]json.RawMessage, map[string]json.RawMessage) {
	var rest, tags map[string]json.RawMessage
	if len(content) > 0 {
		_ = json.Unmarshal(content, &rest)
		if raw, ok := rest["tags"]; ok {
			_ = json.Unmarshal(raw, &tags)
		}
	}
	if rest == nil {
		rest = map[string]json.RawMessage{}
	}
	if tags == nil {
		tags = map[string]json.RawMessage{}
	}
	return rest, tags
}

func joinTags(rest, tags map[string]json.RawMessage) (json.RawMessage, error) {
	t, err := json.Marshal(tags)
	if err != nil {
		return nil, fmt.Errorf("accountdata: encoding tags: %w", err)
	}
	rest["tags"] = t
	c, err := json.Marshal(rest)
	if err != nil {
		return nil, fmt.Errorf("accountdata: encoding tags: %w", err)
	}
	return c, nil
}

// object checks that content is a JSON object (with the errors of a request
// body) and returns it compacted.
func object(content json.RawMessage) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := mxhttp.Unmarshal(content, &obj); err != nil {
		return nil, err
	}
	return compact(content)
}

func compact(content json.RawMessage) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, content); err != nil {
		return nil, mxhttp.NotJSON("Content is not valid JSON")
	}
	return b.Bytes(), nil
}

func checkKey(roomID, eventType string) error {
	if roomID != "" {
		if err := checkRoom(roomID); err != nil {
			return err
		}
	}
	if eventType == "" || len(eventType) > maxNameLen {
		return mxhttp.InvalidParam("Invalid account data type")
	}
	return nil
}

func checkRoom(roomID string) error {
	if len(roomID) > maxNameLen || !roomIDRe.MatchString(roomID) {
		return mxhttp.InvalidParam("%q is not a valid room ID", roomID)
	}
	return nil
}

func checkTag(roomID, tag string) error {
	if err := checkRoom(roomID); err != nil {
		return err
	}
	if tag == "" || len(tag) > maxNameLen {
		return mxhttp.InvalidParam("Tag names must be 1 to %d bytes", maxNameLen)
	}
	return nil
}
