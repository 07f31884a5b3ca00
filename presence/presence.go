// Package presence keeps each user's presence (online, unavailable, offline),
// status message and last activity, as one row per user stamped with a
// position on the presence stream, so that /sync can serve the changes since
// a token and wake the users who share a room with whoever changed.
package presence

import (
	"context"
	"encoding/json"
	"time"

	"homeserver/mxhttp"
)

// Presence states.
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// activeRefresh is how stale last_active may grow while a user keeps
// syncing before it is written again; anything fresher is left alone so
// that idle long-polls do not write.
const activeRefresh = time.Minute

// Status is one user's presence as stored. LastActiveTS is 0 when the user
// was never seen active; Pos is the stream position of the last change.
type Status struct {
	UserID          string
	Presence        string
	StatusMsg       string
	LastActiveTS    int64
	CurrentlyActive bool
	Pos             int64
}

// Store persists presence. Positions are allocated by the store in the
// writing transaction, strictly increasing in commit order.
type Store interface {
	// PresenceChanged returns every status changed in (from, to].
	PresenceChanged(ctx context.Context, from, to int64) ([]Status, error)
	// GetPresence returns the user's stored status; found is false when the
	// user has none.
	GetPresence(ctx context.Context, userID string) (st Status, found bool, err error)
	// UpdatePresence calls decide, inside the write transaction and with no
	// other presence write in between, with the user's current status. When
	// decide returns write, the returned status is stored under a new
	// position (its Pos is ignored) and returned with that position.
	UpdatePresence(ctx context.Context, userID string, decide func(cur Status, found bool) (next Status, write bool)) (st Status, written bool, err error)
	// PresenceSince returns the statuses of those users last changed at a
	// position in (from, to], in position order.
	PresenceSince(ctx context.Context, userIDs []string, from, to int64) ([]Status, error)
	// MaxPresencePos is the latest position of the presence stream (0 if none).
	MaxPresencePos(ctx context.Context) (int64, error)
}

// Service owns the presence rules.
type Service struct {
	store  Store
	notify func(userID string)
	now    func() time.Time
	sweep  idleSweeper
}

// New returns the presence service. notify, when set, is called with the
// user whose presence changed after each committed change; now defaults to
// time.Now.
func New(store Store, notify func(userID string), now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, notify: notify, now: now}
}

// ValidPresence reports whether p is one of the three presence states.
func ValidPresence(p string) bool {
	return p == Online || p == Unavailable || p == Offline
}

// Set is an explicit change by the user (PUT /presence/{userId}/status): it
// counts as activity. The status message is replaced only when setStatusMsg
// is true (an empty one clears it).
func (s *Service) Set(ctx context.Context, userID, presence, statusMsg string, setStatusMsg bool) error {
	if !ValidPresence(presence) {
		return mxhttp.InvalidParam("presence must be one of online, unavailable or offline")
	}
	nowMS := s.now().UnixMilli()
	_, err := s.update(ctx, userID, func(cur Status, _ bool) (Status, bool) {
		next := cur
		next.UserID, next.Presence, next.LastActiveTS = userID, presence, nowMS
		next.CurrentlyActive = presence == Online
		if setStatusMsg {
			next.StatusMsg = statusMsg
		}
		return next, true
	})
	return err
}

// Touch records that userID is syncing with the given set_presence: "" is
// online (the default), "unavailable" marks the user idle, and "offline"
// leaves presence alone. It writes only when the presence changes or, for an
// online user, when last_active is older than a minute, so that a client
// long-polling in a loop costs one read per request.
func (s *Service) Touch(ctx context.Context, userID, setPresence string) error {
	target := setPresence
	switch setPresence {
	case "", Online:
		target = Online
	case Unavailable:
	case Offline:
		return nil
	default:
		return mxhttp.InvalidParam("set_presence must be one of online, unavailable or offline")
	}
	nowMS := s.now().UnixMilli()
	decide := func(cur Status, found bool) (Status, bool) {
		return touched(cur, found, userID, target, nowMS)
	}
	cur, found, err := s.store.GetPresence(ctx, userID)
	if err != nil {
		return err
	}
	if _, write := decide(cur, found); !write {
		return nil
	}
	// Decide again on the row as it is under the write lock: another
	// request may have changed it since the read.
	_, err = s.update(ctx, userID, decide)
	return err
}

// touched is the status after a sync with presence target, and whether it
// needs writing.
func touched(cur Status, found bool, userID, target string, nowMS int64) (Status, bool) {
	next := cur
	next.UserID, next.Presence = userID, target
	if target == Online {
		next.CurrentlyActive = true
		if !found || cur.Presence != Online || !cur.CurrentlyActive || nowMS-cur.LastActiveTS >= activeRefresh.Milliseconds() {
			next.LastActiveTS = nowMS
		}
	} else {
		// An idle client says the user is away: that is no activity.
		next.CurrentlyActive = false
	}
	changed := !found || next != cur
	return next, changed
}

func (s *Service) update(ctx context.Context, userID string, decide func(Status, bool) (Status, bool)) (bool, error) {
	_, written, err := s.store.UpdatePresence(ctx, userID, decide)
	if err != nil {
		return false, err
	}
	if written && s.notify != nil {
		s.notify(userID)
	}
	return written, nil
}

// Get returns the user's presence; a user never seen is offline with no
// last activity.
func (s *Service) Get(ctx context.Context, userID string) (Status, error) {
	st, found, err := s.store.GetPresence(ctx, userID)
	if err != nil {
		return Status{}, err
	}
	if !found {
		return Status{UserID: userID, Presence: Offline}, nil
	}
	return st, nil
}

// Since returns the presence of those users that changed at a position in
// (from, to], in position order.
func (s *Service) Since(ctx context.Context, userIDs []string, from, to int64) ([]Status, error) {
	if len(userIDs) == 0 || to <= from {
		return nil, nil
	}
	return s.store.PresenceSince(ctx, userIDs, from, to)
}

// Changed returns every status changed in (from, to], in position order;
// /sync keeps those of users sharing a room with the syncing user.
func (s *Service) Changed(ctx context.Context, from, to int64) ([]Status, error) {
	if to <= from {
		return nil, nil
	}
	return s.store.PresenceChanged(ctx, from, to)
}

// MaxPos is the latest position of the presence stream.
func (s *Service) MaxPos(ctx context.Context) (int64, error) {
	return s.store.MaxPresencePos(ctx)
}

// Content is the content of an m.presence event, which is also the answer
// to GET /presence/{userId}/status.
type Content struct {
	Presence        string `json:"presence"`
	LastActiveAgo   *int64 `json:"last_active_ago,omitempty"`
	StatusMsg       string `json:"status_msg,omitempty"`
	CurrentlyActive *bool  `json:"currently_active,omitempty"`
}

// Content renders st with last_active_ago computed from now.
// currently_active is given for online users only, as the spec describes it.
func (s *Service) Content(st Status) Content {
	c := Content{Presence: st.Presence, StatusMsg: st.StatusMsg}
	if st.LastActiveTS > 0 {
		ago := max(s.now().UnixMilli()-st.LastActiveTS, 0)
		c.LastActiveAgo = &ago
	}
	if st.Presence == Online {
		active := st.CurrentlyActive
		c.CurrentlyActive = &active
	}
	return c
}

// Event renders the m.presence event as /sync serves it, with
// last_active_ago computed from now.
func (s *Service) Event(st Status) json.RawMessage {
	ev, err := json.Marshal(struct {
		Type    string  `json:"type"`
		Sender  string  `json:"sender"`
		Content Content `json:"content"`
	}{"m.presence", st.UserID, s.Content(st)})
	if err != nil {
		// Strings, integers and booleans always marshal.
		panic("presence: marshal event: " + err.Error())
	}
	return ev
}
