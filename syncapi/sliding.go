package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"homeserver/mxhttp"
	"homeserver/rooms"
)

// This file serves sliding sync (MSC4186, as Synapse serves it at
// /_matrix/client/unstable/org.matrix.simplified_msc3575/sync). It reads
// the same streams, notifier and visibility rules as /sync; what a
// connection's client already has is kept in the database (SlidingStore),
// so that a restart or another process continues the connection.

// SlidingStore keeps sliding sync connections (storage).
type SlidingStore interface {
	// NewSlidingConnection starts a connection, replacing one of the same
	// ID, and returns its key.
	NewSlidingConnection(ctx context.Context, userID, deviceID, connID, token string, nowMS int64) (int64, error)
	// ResumeSlidingConnection returns the key of the connection and the
	// sync token that its position pos stands for, forgetting what later
	// positions recorded; ErrNotFound when either is unknown.
	ResumeSlidingConnection(ctx context.Context, userID, deviceID, connID string, pos, nowMS int64) (int64, string, error)
	// SlidingRooms returns the connection's rooms as of pos.
	SlidingRooms(ctx context.Context, key, pos int64) (map[string]SlidingRoomState, error)
	// SaveSlidingPos hands out the connection's next position, standing for
	// token, recording the rooms whose state changed.
	SaveSlidingPos(ctx context.Context, key int64, token string, changed map[string]SlidingRoomState) (int64, error)
}

// SlidingRoomState is what a connection's client has of a room.
type SlidingRoomState struct {
	// SentTo is liveRoom while the client has every change of the room up
	// to the connection's token, else the event position it has the room
	// up to (the room changed while outside the client's lists).
	SentTo int64
	// Config is the room config it was last sent with.
	Config []byte
}

const liveRoom = -1

// SlidingResponse is the answer.
type SlidingResponse struct {
	Pos        string                       `json:"pos"`
	TxnID      string                       `json:"txn_id,omitempty"`
	Lists      map[string]SlidingListResult `json:"lists"`
	Rooms      map[string]*SlidingRoom      `json:"rooms"`
	Extensions SlidingExtensions            `json:"extensions"`
}

// SlidingListResult is a list's size, its ranges aside.
type SlidingListResult struct {
	Count int `json:"count"`
}

// Hero is one of the members a client names an unnamed room after.
type Hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SlidingRoom is a room's part of the answer: what changed, or all of it
// when Initial.
type SlidingRoom struct {
	// Name and Avatar are JSON null when removed.
	Name             json.RawMessage `json:"name,omitempty"`
	Avatar           json.RawMessage `json:"avatar,omitempty"`
	Heroes           []Hero          `json:"heroes,omitempty"`
	IsDM             *bool           `json:"is_dm,omitempty"`
	Initial          bool            `json:"initial,omitempty"`
	ExpandedTimeline bool            `json:"expanded_timeline,omitempty"`
	// UnstableExpandedTimeline is ExpandedTimeline under Synapse's earlier
	// name, which released clients read.
	UnstableExpandedTimeline bool              `json:"unstable_expanded_timeline,omitempty"`
	RequiredState            []json.RawMessage `json:"required_state,omitempty"`
	Timeline                 []json.RawMessage `json:"timeline,omitempty"`
	PrevBatch                string            `json:"prev_batch,omitempty"`
	Limited                  bool              `json:"limited,omitempty"`
	NumLive                  *int              `json:"num_live,omitempty"`
	JoinedCount              *int              `json:"joined_count,omitempty"`
	InvitedCount             *int              `json:"invited_count,omitempty"`
	// The counts are those of /sync; threads' are not split out.
	NotificationCount *int   `json:"notification_count,omitempty"`
	HighlightCount    *int   `json:"highlight_count,omitempty"`
	BumpStamp         *int64 `json:"bump_stamp,omitempty"`
	// InviteState is the stripped state of an invite or knock, under the
	// unstable name and the MSC's later one.
	InviteState   []json.RawMessage `json:"invite_state,omitempty"`
	StrippedState []json.RawMessage `json:"stripped_state,omitempty"`
	Membership    string            `json:"membership,omitempty"`
	Lists         []string          `json:"lists,omitempty"`
}

// unknownPos is the answer to a position the server does not have: the
// client starts the connection again.
func unknownPos() error {
	return mxhttp.UnknownPos("Unknown position: start the connection again")
}

// formatPos writes a position: the connection's key (so that a position
// of a replaced connection is not taken for the new one's) and its number.
func formatPos(key, n int64) string {
	return strconv.FormatInt(key, 36) + "." + strconv.FormatInt(n, 10)
}

func parsePos(s string) (int64, int64, bool) {
	k, n, ok := strings.Cut(s, ".")
	if !ok {
		return 0, 0, false
	}
	key, err1 := strconv.ParseInt(k, 36, 64)
	pos, err2 := strconv.ParseInt(n, 10, 64)
	return key, pos, err1 == nil && err2 == nil && pos > 0
}

// SlidingSync answers one sliding sync request, long-polling when asked
// to and nothing is new.
func (s *Service) SlidingSync(ctx context.Context, req SlidingRequest) (*SlidingResponse, error) {
	if s.sliding == nil {
		return nil, mxhttp.Unrecognized("Sliding sync is not available")
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	// One request at a time per connection: a new one supersedes the one
	// in flight, whose client has given up on it.
	ctx, release, err := s.slidingLocks.acquire(ctx, req.UserID+"\x00"+req.DeviceID+"\x00"+req.ConnID)
	if err != nil {
		return nil, err
	}
	defer release()

	nowMS := time.Now().UnixMilli()
	var key int64
	var since *Token
	var prev map[string]SlidingRoomState
	if req.Pos == "" {
		if key, err = s.sliding.NewSlidingConnection(ctx, req.UserID, req.DeviceID, req.ConnID, "", nowMS); err != nil {
			return nil, err
		}
		prev = map[string]SlidingRoomState{}
	} else {
		k, n, ok := parsePos(req.Pos)
		if !ok {
			return nil, unknownPos()
		}
		found, token, err := s.sliding.ResumeSlidingConnection(ctx, req.UserID, req.DeviceID, req.ConnID, n, nowMS)
		if errors.Is(err, ErrNotFound) || (err == nil && found != k) {
			return nil, unknownPos()
		}
		if err != nil {
			return nil, err
		}
		key = k
		t, err := ParseToken(token)
		if err != nil {
			return nil, unknownPos()
		}
		since = &t
		if prev, err = s.sliding.SlidingRooms(ctx, key, n); err != nil {
			return nil, err
		}
	}
	if req.SetPresence != "offline" {
		if err := s.presence.Touch(ctx, req.UserID, req.SetPresence); err != nil {
			s.log.Warn("updating presence from sliding sync", "user_id", req.UserID, "err", err)
		}
	}
	var timeout time.Duration
	if req.Timeout != nil {
		timeout = min(time.Duration(max(*req.Timeout, 0))*time.Millisecond, MaxTimeout)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var p *poll
	defer func() { s.polls.release(p) }()
	for {
		memberships, w, now, err := s.snapshot(ctx, req.UserID)
		if err != nil {
			return nil, err
		}
		if since != nil && since.Typing > now.Typing {
			since.Typing = 0 // typing is in memory: a restart starts it again
		}
		sb := &slidingBuilder{s: s, req: req, since: since, now: now, prev: prev, changes: map[string]SlidingRoomState{}}
		resp, err := sb.build(ctx, memberships)
		if err != nil {
			w.Close()
			return nil, err
		}
		wait := since != nil && resp.empty() && timeout > 0
		if wait {
			if p == nil {
				if p, err = s.polls.admit(req.UserID); err != nil {
					w.Close()
					return nil, err
				}
			}
			select {
			case <-w.C():
				w.Close()
				continue
			case <-deadline.C:
			case <-ctx.Done():
				w.Close()
				return nil, ctx.Err()
			case <-p.evicted:
			}
		}
		w.Close()
		n, err := s.sliding.SaveSlidingPos(ctx, key, sb.now.String(), sb.changes)
		if errors.Is(err, ErrNotFound) {
			return nil, unknownPos() // replaced meanwhile by a new connection of the same ID
		}
		if err != nil {
			return nil, err
		}
		resp.Pos = formatPos(key, n)
		resp.TxnID = req.TxnID
		return resp, nil
	}
}

func (r *SlidingResponse) empty() bool {
	return len(r.Rooms) == 0 && r.Extensions.empty()
}

// connLocks lets one request at a time work on a connection, the newest
// cancelling the one in flight.
type connLocks struct {
	mu sync.Mutex
	m  map[string]*connLock
}

type connLock struct {
	sem    chan struct{}
	cancel context.CancelFunc
	refs   int
}

func (c *connLocks) acquire(ctx context.Context, key string) (context.Context, func(), error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*connLock{}
	}
	l := c.m[key]
	if l == nil {
		l = &connLock{sem: make(chan struct{}, 1)}
		c.m[key] = l
	}
	l.refs++
	if l.cancel != nil {
		l.cancel()
	}
	c.mu.Unlock()
	unref := func() {
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.m, key)
		}
		c.mu.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		unref()
		return nil, nil, ctx.Err()
	}
	ctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	l.cancel = cancel
	c.mu.Unlock()
	return ctx, func() {
		cancel()
		c.mu.Lock()
		l.cancel = nil
		c.mu.Unlock()
		<-l.sem
		unref()
	}, nil
}

// slidingBuilder builds one answer.
type slidingBuilder struct {
	s     *Service
	req   SlidingRequest
	since *Token // nil on a connection's first request
	now   Token
	prev  map[string]SlidingRoomState
	// changes are the rooms whose state on the connection this answer
	// changes.
	changes map[string]SlidingRoomState

	resp *SlidingResponse
	// relevant are the rooms of each list's ranges, and the subscribed
	// ones, for the extensions.
	inLists    map[string][]string
	subscribed []string
	// initialRooms are the rooms this answer sends whole.
	initialRooms map[string]bool
	// timelines are the events sent of each room, for the receipts
	// extension.
	timelines map[string][]rooms.Stored
	direct    map[string]bool
	changed   map[string]bool
	ignorer   *builder
	// membership is the user's membership of each room at the snapshot.
	membership map[string]string
}

func (b *slidingBuilder) from() Token {
	if b.since == nil {
		return Token{}
	}
	return *b.since
}

// candidate is a room of the user's room list.
type candidate struct {
	m       rooms.Stored
	info    rooms.RoomInfo
	recency int64
}

func (b *slidingBuilder) build(ctx context.Context, memberships []rooms.Stored) (*SlidingResponse, error) {
	s := b.s
	b.resp = &SlidingResponse{Lists: map[string]SlidingListResult{}, Rooms: map[string]*SlidingRoom{}}
	b.initialRooms = map[string]bool{}
	b.timelines = map[string][]rooms.Stored{}
	// Memberships changed after the snapshot: answer with what held at it.
	for i, m := range memberships {
		if m.Pos > b.now.Events {
			at, err := s.rooms.MembershipAt(ctx, m.RoomID, b.req.UserID, b.now.Events)
			if err != nil {
				return nil, err
			}
			at.RoomID = m.RoomID
			memberships[i] = at
		}
	}
	// The server's list: the rooms joined, invited to, knocked on, kicked
	// or banned from, and left ones the client was sent on this connection.
	byRoom := map[string]rooms.Stored{}
	var ids []string
	b.membership = map[string]string{}
	for _, m := range memberships {
		b.membership[m.RoomID] = m.Membership
		switch m.Membership {
		case "join", "invite", "knock":
		case "leave", "ban":
			_, sent := b.prev[m.RoomID]
			if m.Sender == b.req.UserID && !sent {
				continue
			}
		default:
			continue
		}
		byRoom[m.RoomID] = m
		ids = append(ids, m.RoomID)
	}
	encryption := false
	for _, l := range b.req.Lists {
		encryption = encryption || (l.Filters != nil && l.Filters.IsEncrypted != nil)
	}
	infos, err := s.rooms.UserRoomInfos(ctx, b.req.UserID, encryption)
	if err != nil {
		return nil, err
	}
	list := make([]candidate, 0, len(ids))
	for _, id := range ids {
		c := candidate{m: byRoom[id], info: infos[id]}
		c.recency = c.m.Pos
		if c.m.Membership == "join" && c.info.BumpPos > 0 {
			c.recency = c.info.BumpPos
		}
		list = append(list, c)
	}
	slices.SortFunc(list, func(x, y candidate) int {
		if x.recency != y.recency {
			if x.recency > y.recency {
				return -1
			}
			return 1
		}
		return strings.Compare(x.m.RoomID, y.m.RoomID)
	})
	if b.direct, err = b.directRooms(ctx); err != nil {
		return nil, err
	}
	f := &listFilter{b: b}
	configs := map[string]*roomConfig{}
	listsOf := map[string][]string{}
	b.inLists = map[string][]string{}
	for _, name := range slices.Sorted(maps.Keys(b.req.Lists)) {
		l := b.req.Lists[name]
		var kept []candidate
		for _, c := range list {
			ok, err := f.keep(ctx, l.Filters, c)
			if err != nil {
				return nil, err
			}
			if ok {
				kept = append(kept, c)
			}
		}
		b.resp.Lists[name] = SlidingListResult{Count: len(kept)}
		ranges := l.ranges()
		if ranges == nil {
			ranges = [][]int64{{0, int64(len(kept))}}
		}
		seen := map[string]bool{}
		for _, r := range ranges {
			for i := r[0]; i <= r[1] && i < int64(len(kept)); i++ {
				id := kept[i].m.RoomID
				if seen[id] {
					continue
				}
				seen[id] = true
				if configs[id] == nil {
					configs[id] = &roomConfig{}
				}
				configs[id].add(l.RoomConfig)
				listsOf[id] = append(listsOf[id], name)
				b.inLists[name] = append(b.inLists[name], id)
			}
		}
	}
	// Subscriptions: rooms the user is or was in, or is invited to or
	// knocked on; others are ignored, as the MSC says.
	for _, id := range slices.Sorted(maps.Keys(b.req.RoomSubscriptions)) {
		m, ok := byRoom[id]
		if !ok {
			for _, mm := range memberships {
				if mm.RoomID == id && mm.Membership != "" {
					m, ok = mm, true
				}
			}
			if !ok {
				continue
			}
			byRoom[id] = m
		}
		if configs[id] == nil {
			configs[id] = &roomConfig{}
		}
		configs[id].add(b.req.RoomSubscriptions[id])
		b.subscribed = append(b.subscribed, id)
	}
	changed, err := b.changedRooms(ctx)
	if err != nil {
		return nil, err
	}
	b.changed = changed
	for _, id := range slices.Sorted(maps.Keys(configs)) {
		c := candidate{m: byRoom[id], info: infos[id]}
		c.recency = c.m.Pos
		if c.m.Membership == "join" && c.info.BumpPos > 0 {
			c.recency = c.info.BumpPos
		}
		room, err := b.room(ctx, c, configs[id], changed[id])
		if err != nil {
			return nil, err
		}
		if room != nil {
			room.Lists = listsOf[id]
			b.resp.Rooms[id] = room
		}
	}
	// Rooms that changed while outside every list keep the position the
	// client has them up to, to be sent from there when they come back.
	for id := range changed {
		if st, ok := b.prev[id]; ok && st.SentTo == liveRoom && configs[id] == nil {
			b.changes[id] = SlidingRoomState{SentTo: b.from().Events, Config: st.Config}
		}
	}
	if err := b.extensions(ctx, memberships); err != nil {
		return nil, err
	}
	return b.resp, nil
}

// changedRooms are the rooms with news since the connection's token:
// events, or new unread counts.
func (b *slidingBuilder) changedRooms(ctx context.Context) (map[string]bool, error) {
	if b.since == nil {
		return map[string]bool{}, nil
	}
	ids, err := b.s.rooms.RoomsWithEventsBetween(ctx, b.since.Events, b.now.Events)
	if err != nil {
		return nil, err
	}
	out := set(ids)
	if b.s.push != nil && b.now.Notifications > b.since.Notifications && b.since.Notifications >= 0 {
		notified, err := b.s.push.RoomsNotifiedBetween(ctx, b.req.UserID, b.since.Notifications, b.now.Notifications)
		if err != nil {
			return nil, err
		}
		for _, id := range notified {
			out[id] = true
		}
	}
	return out, nil
}

// directRooms are the rooms m.direct names.
func (b *slidingBuilder) directRooms(ctx context.Context) (map[string]bool, error) {
	raw, err := b.s.account.Get(ctx, b.req.UserID, "", "m.direct")
	if err != nil {
		if isNotFound(err) {
			return map[string]bool{}, nil
		}
		return nil, err
	}
	var direct map[string][]string
	out := map[string]bool{}
	if json.Unmarshal(raw, &direct) == nil {
		for _, ids := range direct {
			for _, id := range ids {
				out[id] = true
			}
		}
	}
	return out, nil
}

func isNotFound(err error) bool {
	var e *mxhttp.Error
	return errors.As(err, &e) && e.Code == "M_NOT_FOUND"
}
