package syncapi

// The 2015 client API, deprecated in r0 but still listed by the spec:
// GET /initialSync, /events, /events/{eventId} and
// /rooms/{roomId}/initialSync. They read the same streams as /sync and take
// and hand out the same tokens, so that a client may start with /sync or
// /initialSync and follow with /events. Their events carry user_id beside
// sender, as the API did then.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"homeserver/accountdata"
	"homeserver/mxhttp"
	"homeserver/presence"
	"homeserver/receipts"
	"homeserver/rooms"
)

const (
	// DefaultInitialSyncLimit is the number of messages per room the
	// initial syncs return when the client names none.
	DefaultInitialSyncLimit = 10
	// DefaultEventsTimeout is how long /events waits when the client does
	// not say.
	DefaultEventsTimeout = 30 * time.Second
	// defaultStreamLimit and maxStreamLimit bound the room events of one
	// /events answer; the rest follow from its end token.
	defaultStreamLimit = 100
	maxStreamLimit     = 1000
)

// LegacyMessages is a room's pagination chunk: its latest messages, oldest
// first, between tokens /rooms/{roomId}/messages accepts.
type LegacyMessages struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start,omitempty"`
	End   string            `json:"end"`
}

// LegacyRoom is a room of /initialSync, and the answer of
// /rooms/{roomId}/initialSync.
type LegacyRoom struct {
	RoomID     string          `json:"room_id"`
	Membership string          `json:"membership,omitempty"`
	Invite     json.RawMessage `json:"invite,omitempty"`
	Inviter    string          `json:"inviter,omitempty"`
	Messages   *LegacyMessages `json:"messages,omitempty"`
	// Slices are left out when nil (an invite has none) and given as []
	// when empty.
	State       []json.RawMessage `json:"state,omitzero"`
	Presence    []json.RawMessage `json:"presence,omitzero"`
	Receipts    []json.RawMessage `json:"receipts,omitzero"`
	AccountData []json.RawMessage `json:"account_data,omitzero"`
	Visibility  string            `json:"visibility,omitempty"`
}

// InitialSyncRequest is one GET /initialSync.
type InitialSyncRequest struct {
	UserID, Scope string
	// Limit is the number of messages per room, at most maxTimelineLimit.
	Limit int
	// Archived includes the rooms the user has left or was banned from.
	Archived bool
}

// InitialSyncResponse is the answer of GET /initialSync.
type InitialSyncResponse struct {
	End         string            `json:"end"`
	Presence    []json.RawMessage `json:"presence"`
	Receipts    []json.RawMessage `json:"receipts"`
	Rooms       []*LegacyRoom     `json:"rooms"`
	AccountData []json.RawMessage `json:"account_data"`
}

// EventsRequest is one GET /events.
type EventsRequest struct {
	UserID, Scope string
	// From is a token of /sync, /initialSync or /events; "" starts now.
	From string
	// RoomID, when set, streams that room only, which the user may peek
	// into without being a member when it is world readable.
	RoomID  string
	Timeout time.Duration
	// Limit bounds the room events of the answer (0: the default).
	Limit int
}

// EventsResponse is the answer of GET /events.
type EventsResponse struct {
	Start string            `json:"start"`
	End   string            `json:"end"`
	Chunk []json.RawMessage `json:"chunk"`
}

// InitialSync snapshots the user's rooms: for each joined room (and left
// one, when archived) its latest messages and state; for each invite, the
// invite event.
func (s *Service) InitialSync(ctx context.Context, req InitialSyncRequest) (*InitialSyncResponse, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return nil, err
	}
	memberships, err := s.membershipsAt(ctx, req.UserID, now.Events)
	if err != nil {
		return nil, err
	}
	global, roomData, err := s.accountDataUpTo(ctx, req.UserID, now.AccountData)
	if err != nil {
		return nil, err
	}
	limit := min(max(req.Limit, 0), maxTimelineLimit)
	resp := &InitialSyncResponse{End: now.String(), Presence: []json.RawMessage{}, Receipts: []json.RawMessage{},
		Rooms: []*LegacyRoom{}, AccountData: global}
	members := map[string]bool{req.UserID: true}
	var joined []string
	for _, m := range memberships {
		var room *LegacyRoom
		switch m.Membership {
		case "join":
			var state []rooms.Stored
			room, state, err = s.legacyRoom(ctx, req.UserID, req.Scope, m.RoomID, m.Membership, now.Events, now.String(), limit, roomData[m.RoomID])
			for _, u := range joinedMembers(state) {
				members[u] = true
			}
			joined = append(joined, m.RoomID)
		case "invite":
			room, err = s.invitedRoom(ctx, req.UserID, req.Scope, m)
		case "leave", "ban":
			if !req.Archived {
				continue
			}
			room, _, err = s.legacyRoom(ctx, req.UserID, req.Scope, m.RoomID, m.Membership, m.Pos, rooms.FormatToken(m.Pos), limit, roomData[m.RoomID])
		default: // knocks were not part of this API
			continue
		}
		if err != nil {
			return nil, err
		}
		resp.Rooms = append(resp.Rooms, room)
	}
	if resp.Presence, err = s.presenceOf(ctx, members, now.Presence); err != nil {
		return nil, err
	}
	rs, err := s.receipts.Since(ctx, joined, 0, now.Receipts)
	if err != nil {
		return nil, err
	}
	resp.Receipts = append(resp.Receipts, receiptEvents(rs, req.UserID)...)
	return resp, nil
}

// RoomInitialSync snapshots one room as the user may see it: the current
// state and latest messages while joined or when the room is world
// readable, the state and messages up to their departure once they have
// left; anyone else is refused.
func (s *Service) RoomInitialSync(ctx context.Context, userID, scope, roomID string, limit int) (*LegacyRoom, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.rooms.MembershipAt(ctx, roomID, userID, now.Events)
	if err != nil {
		return nil, err
	}
	_, roomData, err := s.accountDataUpTo(ctx, userID, now.AccountData)
	if err != nil {
		return nil, err
	}
	limit = min(max(limit, 0), maxTimelineLimit)
	switch m.Membership {
	case "leave", "ban":
		room, _, err := s.legacyRoom(ctx, userID, scope, roomID, m.Membership, m.Pos, rooms.FormatToken(m.Pos), limit, roomData[roomID])
		if err != nil {
			return nil, err
		}
		room.Presence, room.Receipts = []json.RawMessage{}, []json.RawMessage{}
		return room, nil
	case "join":
	default:
		readable, err := s.worldReadable(ctx, roomID, now.Events)
		if err != nil {
			return nil, err
		}
		if !readable {
			return nil, mxhttp.Forbidden("You are not a member of this room and it is not world readable")
		}
	}
	room, state, err := s.legacyRoom(ctx, userID, scope, roomID, m.Membership, now.Events, now.String(), limit, roomData[roomID])
	if err != nil {
		return nil, err
	}
	members := map[string]bool{}
	for _, u := range joinedMembers(state) {
		members[u] = true
	}
	if room.Presence, err = s.presenceOf(ctx, members, now.Presence); err != nil {
		return nil, err
	}
	rs, err := s.receipts.Since(ctx, []string{roomID}, 0, now.Receipts)
	if err != nil {
		return nil, err
	}
	room.Receipts = append([]json.RawMessage{}, receiptEvents(rs, userID)...)
	return room, nil
}

// LegacyEvent returns one event the user may see, wherever it is (the old
// API named no room); any event the user may not see is "not found".
func (s *Service) LegacyEvent(ctx context.Context, userID, eventID string) (json.RawMessage, error) {
	notFound := mxhttp.NotFound("Event not found")
	if !strings.HasPrefix(eventID, "$") {
		return nil, notFound
	}
	roomID, err := s.rooms.RoomOfEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if roomID == "" {
		return nil, notFound
	}
	ev, err := s.rooms.GetEvent(ctx, userID, roomID, eventID)
	var me *mxhttp.Error
	if errors.As(err, &me) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	return withUserID(ev), nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Events answers GET /events: after the token, in stream order, the room
// events the user may see in the rooms they are joined to, those of the
// rooms they have left up to their departure, and their own membership
// events (invites included); then the typing, receipt and presence changes
// of their rooms. A chain of calls, each from the previous end, hands out
// each event once. With nothing to say it waits on the notifier until
// something happens or the timeout passes.
func (s *Service) Events(ctx context.Context, req EventsRequest) (*EventsResponse, error) {
	var from *Token
	if req.From != "" {
		t, err := s.parseSince(ctx, req.From)
		if err != nil {
			return nil, err
		}
		from = &t
	}
	if req.RoomID != "" {
		if err := s.checkPeek(ctx, req.UserID, req.RoomID); err != nil {
			return nil, err
		}
	}
	if err := s.presence.Touch(ctx, req.UserID, presence.Online); err != nil {
		s.log.Warn("updating presence from /events", "user_id", req.UserID, "err", err)
	}
	limit := req.Limit
	if limit <= 0 {
		limit = defaultStreamLimit
	}
	limit = min(limit, maxStreamLimit)
	timeout := min(req.Timeout, MaxTimeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var p *poll // admitted when it first waits, as /sync
	defer func() { s.polls.release(p) }()
	start := req.From
	for {
		memberships, err := s.rooms.UserMemberships(ctx, req.UserID)
		if err != nil {
			return nil, err
		}
		// Listen before the snapshot, read memberships after it, as /sync.
		w := s.notifier.Listen(req.UserID, s.listenRooms(req.RoomID, memberships))
		resp, next, err := s.eventsOnce(ctx, req, from, &start, limit)
		if err != nil {
			w.Close()
			return nil, err
		}
		if len(resp.Chunk) > 0 || timeout <= 0 {
			w.Close()
			return resp, nil
		}
		// Nothing for the user up to next: wait, then read on from there.
		from = &next
		if p == nil {
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
			return resp, nil
		case <-ctx.Done():
			w.Close()
			return resp, nil
		case <-p.evicted:
			w.Close()
			return resp, nil
		}
	}
}

func (s *Service) listenRooms(peek string, memberships []rooms.Stored) []string {
	if peek != "" {
		return []string{peek}
	}
	ids := make([]string, 0, len(memberships))
	for _, m := range memberships {
		ids = append(ids, m.RoomID)
	}
	return ids
}

// eventsOnce snapshots the streams and reads what changed after from (the
// snapshot itself when from is nil, which then becomes start).
func (s *Service) eventsOnce(ctx context.Context, req EventsRequest, from *Token, start *string, limit int) (*EventsResponse, Token, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return nil, Token{}, err
	}
	memberships, err := s.rooms.UserMemberships(ctx, req.UserID)
	if err != nil {
		return nil, Token{}, err
	}
	if from == nil {
		from = &now
		*start = now.String()
	}
	evs, upTo, err := s.streamRoomEvents(ctx, req, *from, now.Events, memberships, limit)
	if err != nil {
		return nil, Token{}, err
	}
	chunk, err := s.legacyFormat(ctx, req.UserID, req.Scope, evs)
	if err != nil {
		return nil, Token{}, err
	}
	if req.RoomID == "" {
		eph, err := s.streamEphemeral(ctx, req.UserID, *from, now, memberships)
		if err != nil {
			return nil, Token{}, err
		}
		chunk = append(chunk, eph...)
	}
	end := now
	end.Events = upTo
	return &EventsResponse{Start: *start, End: end.String(), Chunk: chunk}, end, nil
}

// streamRoomEvents returns the first events after from, up to target, that
// the user is to receive, and the position they go up to. It reads a
// window of positions at a time, halving it while it holds more than
// limit events, and moves on past windows with nothing for the user.
func (s *Service) streamRoomEvents(ctx context.Context, req EventsRequest, from Token, target int64, memberships []rooms.Stored, limit int) ([]rooms.Stored, int64, error) {
	current := map[string]rooms.Stored{}
	candidates := map[string]bool{}
	for _, m := range memberships {
		current[m.RoomID] = m
		// A room the user left before from has nothing more for them.
		if req.RoomID == "" && (m.Membership == "join" || m.Pos > from.Events) {
			candidates[m.RoomID] = true
		}
	}
	if req.RoomID != "" {
		candidates[req.RoomID] = true
	}
	cur := from.Events
	for cur < target {
		to := target
		for {
			evs, full, err := s.windowEvents(ctx, req, candidates, current, cur, to, limit)
			if err != nil {
				return nil, 0, err
			}
			if full && to-cur > int64(limit) {
				to = cur + (to-cur)/2
				continue
			}
			if len(evs) > 0 {
				slices.SortFunc(evs, func(a, b rooms.Stored) int { return cmp.Compare(a.Pos, b.Pos) })
				return evs, to, nil
			}
			break
		}
		cur = to
	}
	return nil, target, nil
}

// windowEvents returns the events in (from, to] for the user, or full when
// there are more than limit of them. A window of at most limit positions
// never is.
func (s *Service) windowEvents(ctx context.Context, req EventsRequest, candidates map[string]bool, current map[string]rooms.Stored, from, to int64, limit int) ([]rooms.Stored, bool, error) {
	active, err := s.rooms.RoomsWithEventsBetween(ctx, from, to)
	if err != nil {
		return nil, false, err
	}
	var out []rooms.Stored
	for _, roomID := range active {
		if !candidates[roomID] {
			continue
		}
		evs, limited, err := s.rooms.Timeline(ctx, req.UserID, roomID, from, to, limit, nil)
		if err != nil {
			return nil, false, err
		}
		if limited {
			return nil, true, nil
		}
		// In a room the user is in, whatever they may see; in one they have
		// left, what happened while they were there.
		if m := current[roomID]; req.RoomID == "" && m.Membership != "join" {
			if evs, err = s.whileJoined(ctx, req.UserID, roomID, from, evs); err != nil {
				return nil, false, err
			}
		}
		// The user's own latest membership event, even where history
		// visibility hides it (an invite to a room shared with members
		// only): it is how the old API announced invites.
		if m, ok := current[roomID]; ok && m.Pos > from && m.Pos <= to &&
			!slices.ContainsFunc(evs, func(e rooms.Stored) bool { return e.EventID == m.EventID }) {
			evs = append(evs, m)
		}
		out = append(out, evs...)
		if len(out) > limit {
			return nil, true, nil
		}
	}
	return out, false, nil
}

// whileJoined keeps the events of evs (oldest first, all after pos) sent
// while the user was joined, and the user's own membership events. A
// change into or out of "join" is always visible to the user, so
// following the membership events of evs tracks it exactly.
func (s *Service) whileJoined(ctx context.Context, userID, roomID string, pos int64, evs []rooms.Stored) ([]rooms.Stored, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	at, err := s.rooms.MembershipAt(ctx, roomID, userID, pos)
	if err != nil {
		return nil, err
	}
	membership := at.Membership
	var out []rooms.Stored
	for _, e := range evs {
		if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == userID {
			membership = e.Membership
			out = append(out, e)
			continue
		}
		if membership == "join" {
			out = append(out, e)
		}
	}
	return out, nil
}

// streamEphemeral renders the typing, receipt and presence changes in
// (from, now] in the 2015 shapes: room_id beside type and content for the
// first two, user_id inside the content of the last.
func (s *Service) streamEphemeral(ctx context.Context, userID string, from, now Token, memberships []rooms.Stored) ([]json.RawMessage, error) {
	var joined []string
	for _, m := range memberships {
		membership := m.Membership
		if m.Pos > now.Events {
			at, err := s.rooms.MembershipAt(ctx, m.RoomID, userID, now.Events)
			if err != nil {
				return nil, err
			}
			membership = at.Membership
		}
		if membership == "join" {
			joined = append(joined, m.RoomID)
		}
	}
	isJoined := set(joined)
	var out []json.RawMessage
	for _, roomID := range s.typing.ChangedSince(from.Typing) {
		if isJoined[roomID] {
			ev, _ := json.Marshal(map[string]any{"type": "m.typing", "room_id": roomID,
				"content": map[string]any{"user_ids": s.typing.Typing(roomID)}})
			out = append(out, ev)
		}
	}
	rs, err := s.receipts.Since(ctx, joined, from.Receipts, now.Receipts)
	if err != nil {
		return nil, err
	}
	out = append(out, receiptEvents(rs, userID)...)
	sts, err := s.presence.Changed(ctx, from.Presence, now.Presence)
	if err != nil {
		return nil, err
	}
	for _, st := range sts {
		shares, err := s.rooms.SharesRoom(ctx, userID, st.UserID)
		if err != nil {
			return nil, err
		}
		if shares {
			out = append(out, s.legacyPresence(st))
		}
	}
	return out, nil
}

// parseSince reads a client's token as /sync does.
func (s *Service) parseSince(ctx context.Context, tok string) (Token, error) {
	t, err := ParseToken(tok)
	if err != nil {
		return Token{}, err
	}
	now, err := s.Now(ctx)
	if err != nil {
		return Token{}, err
	}
	if t.after(now) {
		return Token{}, mxhttp.InvalidParam("Stream token from the future")
	}
	if t.Typing > now.Typing {
		t.Typing = 0 // typing is in memory: a restart starts it again
	}
	return t, nil
}

// checkPeek allows streaming one room to its members, past members and,
// when it is world readable, anyone.
func (s *Service) checkPeek(ctx context.Context, userID, roomID string) error {
	pos, err := s.rooms.MaxPos(ctx)
	if err != nil {
		return err
	}
	m, err := s.rooms.MembershipAt(ctx, roomID, userID, pos)
	if err != nil {
		return err
	}
	switch m.Membership {
	case "join", "leave", "ban":
		return nil
	}
	readable, err := s.worldReadable(ctx, roomID, pos)
	if err != nil {
		return err
	}
	if !readable {
		return mxhttp.Forbidden("You are not a member of this room and it is not world readable")
	}
	return nil
}

// worldReadable reports whether the room's history visibility is
// world_readable at pos (false for a room this server does not know).
func (s *Service) worldReadable(ctx context.Context, roomID string, pos int64) (bool, error) {
	state, err := s.rooms.StateAfter(ctx, roomID, pos)
	if err != nil {
		return false, err
	}
	for _, e := range state {
		if e.Type == "m.room.history_visibility" && e.StateKey != nil && *e.StateKey == "" {
			var c struct {
				Content struct {
					HistoryVisibility string `json:"history_visibility"`
				} `json:"content"`
			}
			_ = json.Unmarshal(e.JSON, &c)
			return c.Content.HistoryVisibility == "world_readable", nil
		}
	}
	return false, nil
}

// legacyRoom renders a room as seen up to position upTo: its latest
// messages, its state and the user's account data for it. It returns the
// state too, for the caller to find the members.
func (s *Service) legacyRoom(ctx context.Context, userID, scope, roomID, membership string, upTo int64, end string, limit int, data []accountdata.Item) (*LegacyRoom, []rooms.Stored, error) {
	evs, _, err := s.rooms.Timeline(ctx, userID, roomID, 0, upTo, limit, nil)
	if err != nil {
		return nil, nil, err
	}
	state, err := s.rooms.StateAfter(ctx, roomID, upTo)
	if err != nil {
		return nil, nil, err
	}
	room := &LegacyRoom{RoomID: roomID, Membership: membership, AccountData: []json.RawMessage{}}
	start := upTo
	if len(evs) > 0 {
		start = evs[0].Pos - 1
	}
	room.Messages = &LegacyMessages{Start: rooms.FormatToken(start), End: end}
	if room.Messages.Chunk, err = s.legacyFormat(ctx, userID, scope, evs); err != nil {
		return nil, nil, err
	}
	if room.State, err = s.legacyFormat(ctx, userID, scope, state); err != nil {
		return nil, nil, err
	}
	for _, it := range data {
		room.AccountData = append(room.AccountData, accountDataEvent(it))
	}
	if room.Visibility, err = s.directoryVisibility(ctx, roomID); err != nil {
		return nil, nil, err
	}
	return room, state, nil
}

// invitedRoom renders an invite: the invite event and who sent it.
func (s *Service) invitedRoom(ctx context.Context, userID, scope string, m rooms.Stored) (*LegacyRoom, error) {
	evs, err := s.legacyFormat(ctx, userID, scope, []rooms.Stored{m})
	if err != nil {
		return nil, err
	}
	vis, err := s.directoryVisibility(ctx, m.RoomID)
	if err != nil {
		return nil, err
	}
	return &LegacyRoom{RoomID: m.RoomID, Membership: m.Membership, Invite: evs[0], Inviter: m.Sender, Visibility: vis}, nil
}

// directoryVisibility is "public" for a room published in the directory,
// else "private" (a room known only by an invite included).
func (s *Service) directoryVisibility(ctx context.Context, roomID string) (string, error) {
	vis, err := s.rooms.DirectoryVisibility(ctx, roomID)
	var me *mxhttp.Error
	if errors.As(err, &me) {
		return rooms.VisibilityPrivate, nil
	}
	return vis, err
}

// membershipsAt returns the user's membership of each room as it was at
// pos, for those changed since.
func (s *Service) membershipsAt(ctx context.Context, userID string, pos int64) ([]rooms.Stored, error) {
	ms, err := s.rooms.UserMemberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	for i, m := range ms {
		if m.Pos > pos {
			at, err := s.rooms.MembershipAt(ctx, m.RoomID, userID, pos)
			if err != nil {
				return nil, err
			}
			at.RoomID = m.RoomID
			ms[i] = at
		}
	}
	return ms, nil
}

// accountDataUpTo returns the user's global account data events and their
// room account data by room, as of position pos.
func (s *Service) accountDataUpTo(ctx context.Context, userID string, pos int64) ([]json.RawMessage, map[string][]accountdata.Item, error) {
	items, err := s.account.Since(ctx, userID, 0, pos)
	if err != nil {
		return nil, nil, err
	}
	global := []json.RawMessage{}
	byRoom := map[string][]accountdata.Item{}
	for _, it := range items {
		if it.RoomID == "" {
			global = append(global, accountDataEvent(it))
		} else {
			byRoom[it.RoomID] = append(byRoom[it.RoomID], it)
		}
	}
	return global, byRoom, nil
}

// presenceOf returns the presence events of those users who have one.
func (s *Service) presenceOf(ctx context.Context, users map[string]bool, pos int64) ([]json.RawMessage, error) {
	ids := make([]string, 0, len(users))
	for u := range users {
		ids = append(ids, u)
	}
	slices.Sort(ids)
	sts, err := s.presence.Since(ctx, ids, 0, pos)
	if err != nil {
		return nil, err
	}
	out := []json.RawMessage{}
	for _, st := range sts {
		out = append(out, s.legacyPresence(st))
	}
	return out, nil
}

// legacyPresence renders an m.presence event with the user's ID in its
// content, where the 2015 API had it, as well as in sender.
func (s *Service) legacyPresence(st presence.Status) json.RawMessage {
	content := struct {
		presence.Content
		UserID string `json:"user_id"`
	}{s.presence.Content(st), st.UserID}
	ev, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": st.UserID, "content": content})
	return ev
}

// receiptEvents renders one m.receipt event per room, with its room_id.
func receiptEvents(rs []receipts.Receipt, viewer string) []json.RawMessage {
	byRoom := map[string][]receipts.Receipt{}
	var order []string
	for _, r := range rs {
		if _, ok := byRoom[r.RoomID]; !ok {
			order = append(order, r.RoomID)
		}
		byRoom[r.RoomID] = append(byRoom[r.RoomID], r)
	}
	var out []json.RawMessage
	for _, roomID := range order {
		if content, ok := receipts.Event(byRoom[roomID], viewer); ok {
			ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "room_id": roomID, "content": content})
			out = append(out, ev)
		}
	}
	return out
}

// joinedMembers lists the users whose membership in state is join.
func joinedMembers(state []rooms.Stored) []string {
	var out []string
	for _, e := range state {
		if e.Type == "m.room.member" && e.StateKey != nil && e.Membership == "join" {
			out = append(out, *e.StateKey)
		}
	}
	return out
}

// legacyFormat renders events in the client format with user_id.
func (s *Service) legacyFormat(ctx context.Context, userID, scope string, evs []rooms.Stored) ([]json.RawMessage, error) {
	out, err := s.rooms.ClientEvents(ctx, evs, rooms.FormatOptions{Legacy: true, Txn: &rooms.TxnRef{UserID: userID, Scope: scope}})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return out, nil
}

// withUserID adds user_id (= sender) to a rendered client event.
func withUserID(ev json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(ev, &m) != nil || m["sender"] == nil {
		return ev
	}
	m["user_id"] = m["sender"]
	out, err := json.Marshal(m)
	if err != nil {
		return ev
	}
	return out
}
