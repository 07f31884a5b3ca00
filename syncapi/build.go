package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"homeserver/accountdata"
	"homeserver/filter"
	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/presence"
	"homeserver/push"
	"homeserver/receipts"
	"homeserver/rooms"
)

const (
	defaultTimelineLimit = 10
	maxTimelineLimit     = 100
)

// build answers for the changes in (since, now]; since nil is an initial sync.
func (s *Service) build(ctx context.Context, req Request, since *Token, now Token, memberships []rooms.Stored) (*Response, error) {
	resp := newResponse()
	f := req.Filter
	if f == nil {
		f = &filter.Filter{}
	}
	initial := since == nil
	var from Token
	if !initial {
		from = *since
	}
	b := &builder{s: s, req: req, f: f, resp: resp, from: from, now: now, next: now, initial: initial}
	if f.Room != nil {
		b.timelineF, b.stateF, b.ephemeralF, b.roomDataF = f.Room.Timeline, f.Room.State, f.Room.Ephemeral, f.Room.AccountData
	}
	b.limit = defaultTimelineLimit
	if b.timelineF != nil && b.timelineF.Limit != nil {
		b.limit = min(max(*b.timelineF.Limit, 0), maxTimelineLimit)
	}
	b.opts = rooms.FormatOptions{Federation: f.EventFormat == "federation", Txn: &rooms.TxnRef{UserID: req.UserID, Scope: req.Scope}, WithoutRoomID: true}

	items, err := s.account.Since(ctx, req.UserID, from.AccountData, now.AccountData)
	if err != nil {
		return nil, err
	}
	b.roomData = map[string][]accountdata.Item{}
	for _, it := range items {
		if it.RoomID == "" {
			if f.AccountData.Match(it.Type, "") {
				resp.AccountData.Events = append(resp.AccountData.Events, accountDataEvent(it))
			}
			continue
		}
		b.roomData[it.RoomID] = append(b.roomData[it.RoomID], it)
	}
	if initial {
		if err := b.pushRules(ctx, items); err != nil {
			return nil, err
		}
	}

	if !initial {
		changed, err := s.rooms.RoomsWithEventsBetween(ctx, from.Events, now.Events)
		if err != nil {
			return nil, err
		}
		b.changed = set(changed)
		b.typingChanged = set(s.typing.ChangedSince(from.Typing))
		if s.push != nil && now.Notifications > from.Notifications {
			notified, err := s.push.RoomsNotifiedBetween(ctx, req.UserID, from.Notifications, now.Notifications)
			if err != nil {
				return nil, err
			}
			b.notified = set(notified)
		}
	}
	var joined []string
	for i, m := range memberships {
		if m.Pos > now.Events {
			// Changed after the snapshot: answer with what held at it.
			at, err := s.rooms.MembershipAt(ctx, m.RoomID, req.UserID, now.Events)
			if err != nil {
				return nil, err
			}
			at.RoomID = m.RoomID
			memberships[i] = at
		}
		if memberships[i].Membership == "join" {
			joined = append(joined, m.RoomID)
		}
	}
	b.receipts = map[string][]receipts.Receipt{}
	if len(joined) > 0 {
		rs, err := s.receipts.Since(ctx, joined, from.Receipts, now.Receipts)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			b.receipts[r.RoomID] = append(b.receipts[r.RoomID], r)
		}
	}
	for _, m := range memberships {
		if m.Membership == "" || (f.Room != nil && !f.Room.IncludesRoom(m.RoomID)) {
			continue
		}
		if err := b.room(ctx, m); err != nil {
			return nil, err
		}
	}
	if err := b.presence(ctx, memberships); err != nil {
		return nil, err
	}
	if err := b.e2ee(ctx, memberships); err != nil {
		return nil, err
	}
	resp.NextBatch = b.next.String()
	return resp, nil
}

type builder struct {
	s    *Service
	req  Request
	f    *filter.Filter
	resp *Response
	from Token
	now  Token
	// next is the token the answer hands out: now, but for the to-device
	// position when more messages wait than one answer carries.
	next    Token
	initial bool
	limit   int
	opts    rooms.FormatOptions

	timelineF, stateF, ephemeralF, roomDataF *filter.RoomEventFilter

	changed, typingChanged map[string]bool
	// ignored are the users the syncing user ignores, read when first
	// needed (nil until then).
	ignored map[string]bool
	// notified are the rooms whose unread counts changed.
	notified map[string]bool
	roomData map[string][]accountdata.Item
	receipts map[string][]receipts.Receipt
	// changes are memberChanges' answer, once changesRead.
	changes     []rooms.MemberChange
	changesRead bool
}

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func (b *builder) format(ctx context.Context, evs []rooms.Stored) ([]json.RawMessage, error) {
	out, err := b.s.rooms.ClientEvents(ctx, evs, b.opts)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = filter.ApplyEventFields(out[i], b.f.EventFields)
	}
	return out, nil
}

func (b *builder) room(ctx context.Context, m rooms.Stored) error {
	newSince := !b.initial && m.Pos > b.from.Events
	switch m.Membership {
	case "join":
		return b.joinedRoom(ctx, m)
	case "invite":
		if b.initial || newSince {
			if ignored, err := b.ignores(ctx, m.Sender); err != nil || ignored {
				return err
			}
			st, err := b.s.rooms.StrippedState(ctx, m.RoomID, b.req.UserID)
			if err != nil {
				return err
			}
			b.resp.Rooms.Invite[m.RoomID] = &InvitedRoom{InviteState: Events{Events: st}}
		}
	case "knock":
		if b.initial || newSince {
			st, err := b.s.rooms.StrippedState(ctx, m.RoomID, b.req.UserID)
			if err != nil {
				return err
			}
			b.resp.Rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: Events{Events: st}}
		}
	case "leave", "ban":
		if newSince {
			// The leave is news to a client that had the room.
			return b.leftRoom(ctx, m)
		}
		if (b.initial || b.req.FullState) && b.f.Room != nil && b.f.Room.IncludeLeave {
			// Old leaves are listed, but not the rooms the user forgot.
			forgotten, err := b.s.rooms.Forgotten(ctx, b.req.UserID, m.RoomID)
			if err != nil || forgotten {
				return err
			}
			return b.leftRoom(ctx, m)
		}
	}
	return nil
}

func (b *builder) joinedRoom(ctx context.Context, m rooms.Stored) error {
	roomID := m.RoomID
	full := b.initial || b.req.FullState
	if !full && m.Pos > b.from.Events {
		// Newly joined, or back after leaving: send the room whole.
		stayed, err := b.s.rooms.JoinedThroughout(ctx, roomID, b.req.UserID, b.from.Events, b.now.Events)
		if err != nil {
			return err
		}
		full = !stayed
	}
	jr := &JoinedRoom{State: newEvents(), Ephemeral: newEvents(), AccountData: newEvents(), Timeline: Timeline{Events: []json.RawMessage{}}}
	include := full
	if full || b.changed[roomID] {
		tfrom := b.from.Events
		if full {
			tfrom = 0
		}
		evs, limited, err := b.s.rooms.TimelineJoined(ctx, b.req.UserID, roomID, m.Pos, tfrom, b.now.Events, b.limit, b.timelineF)
		if err != nil {
			return err
		}
		state, membersChanged, err := b.stateFor(ctx, roomID, evs, limited, full, b.now.Events, &m)
		if err != nil {
			return err
		}
		if jr.Timeline.Events, err = b.format(ctx, evs); err != nil {
			return err
		}
		if jr.State.Events, err = b.format(ctx, state); err != nil {
			return err
		}
		jr.Timeline.Limited = limited
		start := b.now.Events
		if len(evs) > 0 {
			start = evs[0].Pos - 1
		}
		jr.Timeline.PrevBatch = rooms.FormatToken(start)
		if membersChanged || hasMember(evs) {
			sum, err := b.s.rooms.RoomSummary(ctx, roomID, b.req.UserID)
			if err != nil {
				return err
			}
			jr.Summary = &sum
		}
		// A limited timeline, even an empty one, says there is a gap.
		include = include || len(evs) > 0 || len(state) > 0 || limited
	}
	if users := b.s.typing.Typing(roomID); (full && len(users) > 0) || (!full && b.typingChanged[roomID]) {
		if b.ephemeralF.Match(roomID, "m.typing", "", nil) {
			if users == nil {
				users = []string{}
			}
			ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	if rs := b.receipts[roomID]; len(rs) > 0 && b.ephemeralF.Match(roomID, "m.receipt", "", nil) {
		if content, ok := receipts.Event(rs, b.req.UserID); ok {
			ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	for _, it := range b.roomData[roomID] {
		if b.roomDataF.Match(roomID, it.Type, "", nil) {
			jr.AccountData.Events = append(jr.AccountData.Events, accountDataEvent(it))
		}
	}
	if include || len(jr.Ephemeral.Events) > 0 || len(jr.AccountData.Events) > 0 || b.notified[roomID] {
		if b.s.push != nil {
			threads := b.timelineF != nil && b.timelineF.UnreadThreadNotifications
			main, byThread, err := b.s.push.Unread(ctx, b.req.UserID, roomID, threads)
			if err != nil {
				return err
			}
			jr.UnreadNotifications = &main
			if threads {
				jr.UnreadThreadNotifications = byThread
			}
		}
		b.resp.Rooms.Join[roomID] = jr
	}
	return nil
}

func (b *builder) leftRoom(ctx context.Context, m rooms.Stored) error {
	tfrom := b.from.Events
	full := b.initial || b.req.FullState
	if full {
		tfrom = 0
	}
	evs, limited, err := b.s.rooms.Timeline(ctx, b.req.UserID, m.RoomID, tfrom, m.Pos, b.limit, b.timelineF)
	if err != nil {
		return err
	}
	state, _, err := b.stateFor(ctx, m.RoomID, evs, limited, full, m.Pos, nil)
	if err != nil {
		return err
	}
	lr := &LeftRoom{State: newEvents(), AccountData: newEvents(), Timeline: Timeline{Events: []json.RawMessage{}, Limited: limited}}
	if lr.Timeline.Events, err = b.format(ctx, evs); err != nil {
		return err
	}
	if lr.State.Events, err = b.format(ctx, state); err != nil {
		return err
	}
	start := m.Pos
	if len(evs) > 0 {
		start = evs[0].Pos - 1
	}
	lr.Timeline.PrevBatch = rooms.FormatToken(start)
	for _, it := range b.roomData[m.RoomID] {
		if b.roomDataF.Match(m.RoomID, it.Type, "", nil) {
			lr.AccountData.Events = append(lr.AccountData.Events, accountDataEvent(it))
		}
	}
	b.resp.Rooms.Leave[m.RoomID] = lr
	return nil
}

// stateFor returns the state section of a room whose timeline (of events
// up to position end) is given: the whole state at the start of the
// timeline for a full room, the changes between since and the timeline's
// start when the timeline was cut short or thinned by the filter, nothing
// otherwise. When the filter (or, in a room the user came back to, history
// visibility) kept state events of the timeline's span out of it, their
// latest versions are added, lest the client never learn of them. Then it
// is filtered and, with lazy loading, reduced to the members the timeline
// needs. It also reports whether memberships changed in what it covers (the
// summary is sent then), which the members added for lazy loading do not
// count as. joined is the user's membership in a room they are joined to
// (nil for a room they left).
func (b *builder) stateFor(ctx context.Context, roomID string, timeline []rooms.Stored, limited, full bool, end int64, joined *rooms.Stored) ([]rooms.Stored, bool, error) {
	left := joined == nil
	start := end
	if len(timeline) > 0 {
		start = timeline[0].Pos - 1
	}
	lazy := b.stateF != nil && b.stateF.LazyLoadMembers
	thinned := restricts(b.timelineF)
	senders := map[string]bool{b.req.UserID: true}
	inTimeline := map[string]bool{}
	for _, e := range timeline {
		senders[e.Sender] = true
		inTimeline[e.EventID] = true
	}
	var state []rooms.Stored
	var err error
	switch {
	case full && lazy:
		// Only the members needed are read: the room may have thousands.
		state, err = b.s.rooms.StateAfterFunc(ctx, roomID, start, func(eventType, stateKey string) bool {
			return eventType != "m.room.member" || senders[stateKey]
		})
	case full:
		state, err = b.s.rooms.StateAfter(ctx, roomID, start)
	case limited || thinned:
		state, err = b.s.rooms.StateDelta(ctx, roomID, b.from.Events, start+1)
	}
	if err != nil {
		return nil, false, err
	}
	if start < end && (thinned || (full && !left)) {
		later, err := b.s.rooms.StateDelta(ctx, roomID, start, end+1)
		if err != nil {
			return nil, false, err
		}
		at := map[pdu.StateKey]int{}
		for i, e := range state {
			at[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = i
		}
		for _, e := range later {
			if inTimeline[e.EventID] {
				continue
			}
			if i, ok := at[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}]; ok {
				state[i] = e
			} else {
				state = append(state, e)
			}
		}
	}
	membersChanged := full || hasMember(state)
	// Unless the filter asks for them, a lazy-loading incremental sync
	// leaves out the members this device was already sent unchanged.
	skipKnown := lazy && !full && !b.stateF.IncludeRedundantMembers
	var out []rooms.Stored
	have := map[string]bool{}
	for _, e := range state {
		if lazy && e.Type == "m.room.member" && !senders[*e.StateKey] {
			continue
		}
		if !b.stateF.Match(roomID, e.Type, e.Sender, nil) {
			continue
		}
		if e.Type == "m.room.member" {
			have[*e.StateKey] = true
			if skipKnown && b.s.lazy.known(b.req.UserID, b.req.DeviceID, roomID, *e.StateKey, e.EventID, b.from.Events) {
				continue
			}
		}
		out = append(out, e)
	}
	if lazy && !full && len(timeline) > 0 {
		// The client may never have seen these senders' memberships: read
		// theirs, and only theirs, from the state at the timeline's start.
		var keys []pdu.StateKey
		for u := range senders {
			if have[u] {
				continue
			}
			// The user's own membership at the timeline's start is the
			// one they hold now when it is no later: not read again when
			// the device has it.
			if u == b.req.UserID && joined != nil && joined.EventID != "" && joined.Pos <= start && skipKnown &&
				b.s.lazy.known(b.req.UserID, b.req.DeviceID, roomID, u, joined.EventID, b.from.Events) {
				continue
			}
			keys = append(keys, pdu.StateKey{Type: "m.room.member", StateKey: u})
		}
		slices.SortFunc(keys, func(x, y pdu.StateKey) int { return strings.Compare(x.StateKey, y.StateKey) })
		members, err := b.s.rooms.StateAfterKeys(ctx, roomID, start, keys)
		if err != nil {
			return nil, false, err
		}
		for _, e := range members {
			if inTimeline[e.EventID] || !b.stateF.Match(roomID, e.Type, e.Sender, nil) ||
				(skipKnown && b.s.lazy.known(b.req.UserID, b.req.DeviceID, roomID, *e.StateKey, e.EventID, b.from.Events)) {
				continue
			}
			out = append(out, e)
		}
	}
	if lazy && !b.stateF.IncludeRedundantMembers {
		sent := map[string]string{}
		for _, e := range out {
			if e.Type == "m.room.member" {
				sent[*e.StateKey] = e.EventID
			}
		}
		for _, e := range timeline {
			if e.Type == "m.room.member" && e.StateKey != nil {
				sent[*e.StateKey] = e.EventID
			}
		}
		b.s.lazy.record(b.req.UserID, b.req.DeviceID, roomID, sent, b.now.Events)
	}
	return out, membersChanged, nil
}

// restricts reports whether a timeline filter may leave out events of a
// room it does not exclude (its limit aside).
func restricts(f *filter.RoomEventFilter) bool {
	return f != nil && (f.Types != nil || len(f.NotTypes) > 0 || f.Senders != nil || len(f.NotSenders) > 0 ||
		f.Rooms != nil || len(f.NotRooms) > 0 || f.ContainsURL != nil)
}

func hasMember(evs []rooms.Stored) bool {
	for _, e := range evs {
		if e.Type == "m.room.member" {
			return true
		}
	}
	return false
}

// pushRules adds the user's push rules to an initial sync's account data,
// as Synapse does: m.push_rules is stored only once the user changes a
// rule, and clients read the defaults from it too.
func (b *builder) pushRules(ctx context.Context, items []accountdata.Item) error {
	if b.s.push == nil || !b.f.AccountData.Match("m.push_rules", "") ||
		slices.ContainsFunc(items, func(it accountdata.Item) bool { return it.RoomID == "" && it.Type == "m.push_rules" }) {
		return nil
	}
	rs, err := b.s.push.Rules(ctx, b.req.UserID)
	if err != nil {
		return err
	}
	b.resp.AccountData.Events = append(b.resp.AccountData.Events,
		accountDataEvent(accountdata.Item{Type: "m.push_rules", Content: push.MarshalRuleset(rs)}))
	return nil
}

// ignores reports whether the syncing user ignores sender
// (m.ignored_user_list): their invites are not shown.
func (b *builder) ignores(ctx context.Context, sender string) (bool, error) {
	if b.ignored == nil {
		b.ignored = map[string]bool{}
		data, err := b.s.account.Get(ctx, b.req.UserID, "", "m.ignored_user_list")
		if err != nil {
			var merr *mxhttp.Error
			if errors.As(err, &merr) && merr.Code == "M_NOT_FOUND" {
				return false, nil
			}
			return false, err
		}
		var c struct {
			IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
		}
		_ = json.Unmarshal(data, &c)
		for u := range c.IgnoredUsers {
			b.ignored[u] = true
		}
	}
	return b.ignored[sender], nil
}

func accountDataEvent(it accountdata.Item) json.RawMessage {
	ev, _ := json.Marshal(map[string]any{"type": it.Type, "content": it.Content})
	return ev
}

func (b *builder) presence(ctx context.Context, memberships []rooms.Stored) error {
	if b.f.Presence.MatchesNothing() {
		return nil
	}
	var sts []presence.Status
	if b.initial || b.now.Presence > b.from.Presence {
		var err error
		if sts, err = b.s.presence.Changed(ctx, b.from.Presence, b.now.Presence); err != nil {
			return err
		}
	}
	sent := map[string]bool{}
	for _, st := range sts {
		if !b.f.Presence.Match("m.presence", st.UserID) {
			continue
		}
		shares, err := b.s.rooms.SharesRoom(ctx, b.req.UserID, st.UserID)
		if err != nil {
			return err
		}
		if shares {
			b.resp.Presence.Events = append(b.resp.Presence.Events, b.s.presence.Event(st))
			sent[st.UserID] = true
		}
	}
	if b.initial {
		return nil
	}
	// Those who came to share a room with the user since their last sync
	// are news with their current presence, however old, as in Synapse.
	users, err := b.newlyShared(ctx, memberships)
	if err != nil {
		return err
	}
	var want []string
	for _, u := range users {
		if !sent[u] && b.f.Presence.Match("m.presence", u) {
			want = append(want, u)
		}
	}
	// One who joined and left again in the span shares nothing now.
	if want, err = b.s.rooms.UsersSharingRoom(ctx, b.req.UserID, want); err != nil {
		return err
	}
	current, err := b.s.presence.Since(ctx, want, 0, b.now.Presence)
	if err != nil {
		return err
	}
	for _, st := range current {
		b.resp.Presence.Events = append(b.resp.Presence.Events, b.s.presence.Event(st))
	}
	return nil
}

// newlyShared returns the users, the syncing one aside, who joined a room
// with them in (from, now]: the other joiners of their rooms and, in the
// rooms they joined, every member. Only rooms with events in the span are
// read.
func (b *builder) newlyShared(ctx context.Context, memberships []rooms.Stored) ([]string, error) {
	joined := map[string]bool{}
	for _, m := range memberships {
		if m.Membership == "join" {
			joined[m.RoomID] = true
		}
	}
	changes, err := b.memberChanges(ctx, memberships)
	if err != nil {
		return nil, err
	}
	users := map[string]bool{}
	for _, c := range changes {
		if !joined[c.RoomID] || c.Membership != "join" || c.Previous == "join" {
			continue
		}
		if c.UserID != b.req.UserID {
			users[c.UserID] = true
			continue
		}
		members, err := b.s.rooms.JoinedUserIDs(ctx, c.RoomID)
		if err != nil {
			return nil, err
		}
		for _, u := range members {
			users[u] = true
		}
	}
	delete(users, b.req.UserID)
	return slices.Sorted(maps.Keys(users)), nil
}

// memberChanges returns, read once per answer, the membership events in
// (from, now] of the rooms with events in the span that the user is in or
// left in it: presence and device lists both follow them.
func (b *builder) memberChanges(ctx context.Context, memberships []rooms.Stored) ([]rooms.MemberChange, error) {
	if b.changesRead {
		return b.changes, nil
	}
	changes, err := b.s.rooms.MemberChangesBetween(ctx, concernedRooms(memberships, b.changed, b.from.Events), b.from.Events, b.now.Events)
	if err != nil {
		return nil, err
	}
	b.changes, b.changesRead = changes, true
	return changes, nil
}
