// Package syncapi serves /sync: it snapshots the position of every stream,
// answers with what changed for the user between the client's token and
// that snapshot, and, when nothing did, waits on the notifier until
// something does or the timeout passes.
package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"homeserver/accountdata"
	"homeserver/e2ee"
	"homeserver/filter"
	"homeserver/mxhttp"
	"homeserver/presence"
	"homeserver/push"
	"homeserver/receipts"
	"homeserver/rooms"
	"homeserver/stream"
	"homeserver/todevice"
	"homeserver/typing"
)

// ErrNotFound is returned by FilterStore for an unknown filter.
var ErrNotFound = errors.New("syncapi: not found")

// FilterStore keeps uploaded filters.
type FilterStore interface {
	CreateFilter(ctx context.Context, userID string, data []byte) (string, error)
	GetFilter(ctx context.Context, userID, filterID string) ([]byte, error)
}

// Service answers /sync.
type Service struct {
	rooms    *rooms.Service
	filters  FilterStore
	account  *accountdata.Service
	receipts *receipts.Service
	typing   *typing.Service
	presence *presence.Service
	notifier *Notifier
	push     *push.Service
	keys     *e2ee.Service
	toDevice *todevice.Service
	polls    *admission
	heads    StreamHeads
	reads    ReadSnapshots
	joined   joinedCache
	parked   parkedWaiters
	lazy     *lazyMembers
	log      *slog.Logger

	sliding      SlidingStore
	slidingLocks connLocks
}

// Deps are the services /sync reads from.
type Deps struct {
	Rooms       *rooms.Service
	Filters     FilterStore
	AccountData *accountdata.Service
	Receipts    *receipts.Service
	Typing      *typing.Service
	Presence    *presence.Service
	Notifier    *Notifier
	// Push, when set, gives the unread notification counts.
	Push *push.Service
	// Keys and ToDevice, when set, give the end-to-end encryption sections.
	Keys     *e2ee.Service
	ToDevice *todevice.Service
	// Limits bound the long-polls waiting at once.
	Limits Limits
	// Heads, when set, reads the streams' positions in one query rather
	// than one per stream.
	Heads StreamHeads
	// Sliding, when set, keeps sliding sync connections.
	Sliding SlidingStore
	// Reads, when set, makes an answer's reads from one snapshot of the
	// database.
	Reads  ReadSnapshots
	Logger *slog.Logger
}

// ReadSnapshots runs fn with its reads from one snapshot of the database
// (storage).
type ReadSnapshots interface {
	ReadSnapshot(ctx context.Context, fn func(context.Context) error) error
}

// New returns the sync service.
func New(d Deps) *Service {
	return &Service{rooms: d.Rooms, filters: d.Filters, account: d.AccountData, receipts: d.Receipts,
		typing: d.Typing, presence: d.Presence, notifier: d.Notifier, push: d.Push,
		keys: d.Keys, toDevice: d.ToDevice, polls: newAdmission(d.Limits), heads: d.Heads, reads: d.Reads, lazy: newLazyMembers(), log: d.Logger, sliding: d.Sliding}
}

// Request is one /sync call.
type Request struct {
	UserID, DeviceID, Scope string
	Since                   string
	Timeout                 time.Duration
	FullState               bool
	SetPresence             string
	Filter                  *filter.Filter
}

// Events is the {"events": [...]} shape used throughout /sync.
type Events struct {
	Events []json.RawMessage `json:"events"`
}

func newEvents() Events { return Events{Events: []json.RawMessage{}} }

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// JoinedRoom is rooms.join.{roomId}.
type JoinedRoom struct {
	Summary     *rooms.Summary `json:"summary,omitempty"`
	State       Events         `json:"state"`
	Timeline    Timeline       `json:"timeline"`
	Ephemeral   Events         `json:"ephemeral"`
	AccountData Events         `json:"account_data"`
	// UnreadNotifications and UnreadThreadNotifications are the push
	// notification counts not yet covered by the user's read receipts.
	UnreadNotifications       *push.Counts           `json:"unread_notifications,omitempty"`
	UnreadThreadNotifications map[string]push.Counts `json:"unread_thread_notifications,omitempty"`
}

// LeftRoom is rooms.leave.{roomId}.
type LeftRoom struct {
	State       Events   `json:"state"`
	Timeline    Timeline `json:"timeline"`
	AccountData Events   `json:"account_data"`
}

// InvitedRoom is rooms.invite.{roomId}.
type InvitedRoom struct {
	InviteState Events `json:"invite_state"`
}

// KnockedRoom is rooms.knock.{roomId}.
type KnockedRoom struct {
	KnockState Events `json:"knock_state"`
}

// Rooms is the rooms section.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	Knock  map[string]*KnockedRoom `json:"knock"`
}

// DeviceLists are the users whose devices a client should fetch again
// (changed) or may stop tracking (left).
type DeviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// Response is the /sync answer.
type Response struct {
	NextBatch                    string         `json:"next_batch"`
	Rooms                        Rooms          `json:"rooms"`
	AccountData                  Events         `json:"account_data"`
	Presence                     Events         `json:"presence"`
	ToDevice                     Events         `json:"to_device"`
	DeviceLists                  DeviceLists    `json:"device_lists"`
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	DeviceUnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

func newResponse() *Response {
	return &Response{
		Rooms: Rooms{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
			Leave: map[string]*LeftRoom{}, Knock: map[string]*KnockedRoom{}},
		AccountData: newEvents(), Presence: newEvents(), ToDevice: newEvents(),
		DeviceLists:            DeviceLists{Changed: []string{}, Left: []string{}},
		DeviceOneTimeKeysCount: map[string]int{}, DeviceUnusedFallbackKeyTypes: []string{},
	}
}

func (r *Response) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && len(r.ToDevice.Events) == 0 &&
		len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

// MaxTimeout caps long-polls.
const MaxTimeout = 5 * time.Minute

// Now snapshots the position of every stream.
func (s *Service) Now(ctx context.Context) (Token, error) {
	if s.heads != nil {
		return s.nowFromHeads(ctx)
	}
	var t Token
	var err error
	if t.Events, err = s.rooms.MaxPos(ctx); err != nil {
		return t, err
	}
	if t.Receipts, err = s.receipts.MaxPos(ctx); err != nil {
		return t, err
	}
	if t.AccountData, err = s.account.MaxPos(ctx); err != nil {
		return t, err
	}
	if t.Presence, err = s.presence.MaxPos(ctx); err != nil {
		return t, err
	}
	t.Typing = s.typing.Pos()
	if s.toDevice != nil {
		if t.ToDevice, err = s.toDevice.MaxPos(ctx); err != nil {
			return t, err
		}
	}
	if s.keys != nil {
		if t.DeviceLists, err = s.keys.DeviceListMaxPos(ctx); err != nil {
			return t, err
		}
	}
	if s.push != nil {
		if t.Notifications, err = s.push.NotificationPos(ctx); err != nil {
			return t, err
		}
	}
	return t, nil
}

// nowFromHeads is Now in one read of the streams' positions.
func (s *Service) nowFromHeads(ctx context.Context) (Token, error) {
	names := []stream.Name{stream.Events, stream.Receipts, stream.AccountData, stream.Presence}
	if s.toDevice != nil {
		names = append(names, stream.ToDevice)
	}
	if s.keys != nil {
		names = append(names, stream.DeviceLists)
	}
	if s.push != nil {
		names = append(names, stream.Notifications)
	}
	h, err := s.heads.StreamHeads(ctx, names)
	if err != nil {
		return Token{}, err
	}
	return Token{
		Events: h[stream.Events], Receipts: h[stream.Receipts], AccountData: h[stream.AccountData],
		Presence: h[stream.Presence], Typing: s.typing.Pos(), ToDevice: h[stream.ToDevice],
		DeviceLists: h[stream.DeviceLists], Notifications: h[stream.Notifications],
	}, nil
}

// StreamHeads reads the positions of several streams at once (storage).
type StreamHeads interface {
	StreamHeads(ctx context.Context, names []stream.Name) (map[stream.Name]int64, error)
}

// Sync answers one /sync request, long-polling when asked to.
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	var since *Token
	if req.Since != "" {
		t, err := ParseToken(req.Since)
		if err != nil {
			return nil, err
		}
		since = &t
	}
	// The token is checked against the first answer's positions.
	checked := since == nil
	check := func(now Token) error {
		if checked {
			return nil
		}
		checked = true
		if since.after(now) {
			return mxhttp.InvalidParam("Sync token from the future")
		}
		if since.Typing > now.Typing {
			since.Typing = 0 // typing is in memory: a restart starts it again
		}
		if since.Notifications < 0 {
			since.Notifications = now.Notifications
		}
		return nil
	}
	if req.SetPresence != "offline" {
		if err := s.presence.Touch(ctx, req.UserID, req.SetPresence); err != nil {
			s.log.Warn("updating presence from sync", "user_id", req.UserID, "err", err)
		}
	}
	timeout := min(req.Timeout, MaxTimeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Admitted when it first waits, the long-poll keeps its place across
	// wake-ups that bring nothing for the user.
	var p *poll
	defer func() { s.polls.release(p) }()
	// answer reads and builds an answer. With skipUnchanged, a long-poll
	// whose token is every stream's present position builds nothing (nil):
	// nothing can have happened for it. That is every long-poll coming
	// back after an answer, and most of what woken clients ask.
	// answeredAt is the snapshot the last answer was built from.
	var answeredAt Token
	answer := func(skipUnchanged bool) (*Response, *Waiter, error) {
		var resp *Response
		w, err := s.listenAndRead(ctx, req.UserID, func(ctx context.Context, memberships []rooms.Stored, now Token) error {
			if err := check(now); err != nil {
				return err
			}
			if skipUnchanged && since != nil && *since == now {
				return nil
			}
			var err error
			resp, err = s.build(ctx, req, since, now, memberships)
			answeredAt = now
			return err
		})
		return resp, w, err
	}
	// done hands the answer out; its waiter, which listened from before
	// the answer's snapshot, is parked under the answer's token for the
	// client's next long-poll when the token is the snapshot's.
	done := func(resp *Response, w *Waiter) *Response {
		if resp.NextBatch == answeredAt.String() {
			s.parked.put(req.UserID, resp.NextBatch, w)
		} else {
			w.Close()
		}
		return resp
	}
	// last answers a long-poll that ends without news: built in full
	// when the last look skipped building.
	last := func(resp *Response) (*Response, error) {
		if resp != nil {
			return resp, nil
		}
		resp, w, err := answer(false)
		if err != nil {
			return nil, err
		}
		return done(resp, w), nil
	}
	wait := since != nil && !req.FullState && timeout > 0
	// A long-poll from the token of this process's last answer to the
	// user finds that answer's waiter parked: unsignalled, nothing
	// happened for the user since, and it waits without a first read.
	var parked *Waiter
	if wait {
		parked = s.parked.take(req.UserID, req.Since)
	}
	for {
		var resp *Response
		var w *Waiter
		if parked != nil && !parked.signalled() {
			w = parked
		} else {
			if parked != nil {
				parked.Close()
			}
			var err error
			if resp, w, err = answer(wait); err != nil {
				return nil, err
			}
		}
		parked = nil
		if !wait || (resp != nil && !resp.empty()) {
			return done(resp, w), nil
		}
		if p == nil {
			var err error
			if p, err = s.polls.admit(req.UserID); err != nil {
				w.Close()
				return nil, err
			}
		}
		select {
		case <-w.C():
			w.Close()
		case <-deadline.C:
			w.Close()
			return last(resp)
		case <-ctx.Done():
			w.Close()
			if resp == nil {
				// The client has gone: it reads no answer.
				return &Response{NextBatch: since.String()}, nil
			}
			return resp, nil
		case <-p.evicted:
			w.Close()
			return last(resp)
		}
	}
}

// snapshot starts an answer to the user: it listens for what concerns
// them, snapshots every stream's position, and reads their memberships.
func (s *Service) snapshot(ctx context.Context, user string) (memberships []rooms.Stored, w *Waiter, now Token, err error) {
	w, err = s.listenAndRead(ctx, user, func(_ context.Context, m []rooms.Stored, t Token) error {
		memberships, now = m, t
		return nil
	})
	return memberships, w, now, err
}

// listenAndRead listens for what concerns the user, then runs read with
// every stream's position and the user's memberships, all from one
// snapshot of the database. Listening comes before the snapshot: whatever
// commits after it either is in the snapshot or wakes the waiter, which
// the caller closes (on error it is closed here). The rooms listened to
// are those the user was joined to at their last answer; when the
// snapshot finds others, it is taken again listening to those.
func (s *Service) listenAndRead(ctx context.Context, user string, read func(ctx context.Context, memberships []rooms.Stored, now Token) error) (*Waiter, error) {
	roomIDs, known := s.joined.get(user)
	if !known {
		memberships, err := s.rooms.UserMembershipHeads(ctx, user)
		if err != nil {
			return nil, err
		}
		roomIDs = joinedRooms(memberships)
	}
	for {
		w := s.notifier.Listen(user, roomIDs)
		moved := false
		err := s.readSnapshot(ctx, func(ctx context.Context) error {
			now, err := s.Now(ctx)
			if err != nil {
				return err
			}
			memberships, err := s.rooms.UserMembershipHeads(ctx, user)
			if err != nil {
				return err
			}
			if joined := joinedRooms(memberships); !slices.Equal(joined, roomIDs) {
				roomIDs, moved = joined, true
				return nil
			}
			return read(ctx, memberships, now)
		})
		if err != nil {
			w.Close()
			return nil, err
		}
		s.joined.put(user, roomIDs)
		if !moved {
			return w, nil
		}
		w.Close()
	}
}

// joinedRooms are the rooms of memberships the user is joined to, in the
// memberships' order (by room ID). Only those concern the user as rooms:
// a change of their own membership wakes them as a user, and what happens
// in rooms they left, or are only invited to, is not theirs to see.
func joinedRooms(memberships []rooms.Stored) []string {
	var out []string
	for _, m := range memberships {
		if m.Membership == "join" {
			out = append(out, m.RoomID)
		}
	}
	return out
}

// joinedCache keeps the rooms each user was joined to at their last
// answer, which the next one listens to before reading (and checks).
type joinedCache struct {
	mu sync.Mutex
	m  map[string][]string
}

// maxJoinedCached bounds the cache; it is emptied when full.
const maxJoinedCached = 100_000

func (c *joinedCache) get(user string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[user]
	return r, ok
}

func (c *joinedCache) put(user string, roomIDs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxJoinedCached {
		c.m = map[string][]string{}
	}
	c.m[user] = roomIDs
}

func (s *Service) readSnapshot(ctx context.Context, fn func(context.Context) error) error {
	if s.reads == nil {
		return fn(ctx)
	}
	return s.reads.ReadSnapshot(ctx, fn)
}
