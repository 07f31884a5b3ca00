package syncapi

import (
	"bytes"
	"context"
	"encoding/json"

	"homeserver/pdu"
	"homeserver/rooms"
)

// room builds a room's part of the answer, nil when the client has it all
// already, and records what the client will then have.
func (b *slidingBuilder) room(ctx context.Context, c candidate, cfg *roomConfig, changed bool) (*SlidingRoom, error) {
	id, m := c.m.RoomID, c.m
	prev, had := b.prev[id]
	var old *roomConfig
	if had {
		old = decodeRoomConfig(prev.Config)
	}
	since := b.from().Events
	if had && prev.SentTo != liveRoom {
		// It changed while outside the lists: sent from where it was left.
		since, changed = prev.SentTo, true
	}
	initial := !had || old == nil
	record := func() { b.changes[id] = SlidingRoomState{SentTo: liveRoom, Config: cfg.encode()} }
	switch m.Membership {
	case "invite", "knock":
		if !initial && m.Pos <= since {
			return nil, nil
		}
		if m.Membership == "invite" {
			if ignored, err := b.ignores(ctx, m.Sender); err != nil || ignored {
				return nil, err
			}
		}
		st, err := b.s.rooms.StrippedState(ctx, id, b.req.UserID)
		if err != nil {
			return nil, err
		}
		record()
		b.initialRooms[id] = true
		bump := m.Pos
		return &SlidingRoom{Initial: true, InviteState: st, StrippedState: st, Membership: m.Membership, BumpStamp: &bump}, nil
	case "join":
		if !initial && m.Pos > since {
			// Joined since: unless it never left, the client gets it whole.
			stayed, err := b.s.rooms.JoinedThroughout(ctx, id, b.req.UserID, since, b.now.Events)
			if err != nil {
				return nil, err
			}
			initial = !stayed
		}
		expanded := !initial && cfg.Limit > old.Limit
		stateChanged := !initial && !sameState(old, cfg)
		if !initial && !changed && !expanded && !stateChanged {
			return nil, nil
		}
		r, err := b.joined(ctx, c, cfg, old, since, initial, changed, expanded, stateChanged)
		if err != nil {
			return nil, err
		}
		record()
		return r, nil
	case "leave", "ban":
		if !initial && m.Pos <= since {
			return nil, nil
		}
		r, err := b.left(ctx, c, cfg, since, initial)
		if err != nil {
			return nil, err
		}
		record()
		return r, nil
	}
	return nil, nil
}

func sameState(a, b *roomConfig) bool {
	x, _ := json.Marshal(a.State)
	y, _ := json.Marshal(b.State)
	return bytes.Equal(x, y)
}

func (b *slidingBuilder) joined(ctx context.Context, c candidate, cfg *roomConfig, old *roomConfig, since int64, initial, changed, expanded, stateChanged bool) (*SlidingRoom, error) {
	s, id, user := b.s, c.m.RoomID, b.req.UserID
	r := &SlidingRoom{Initial: initial, Membership: "join"}
	var evs []rooms.Stored
	var limited bool
	var err error
	switch {
	case initial || expanded:
		if evs, limited, err = s.rooms.Timeline(ctx, user, id, 0, b.now.Events, cfg.Limit, nil); err != nil {
			return nil, err
		}
		if expanded && len(evs) > 0 && evs[0].Pos <= since {
			r.ExpandedTimeline, r.UnstableExpandedTimeline = true, true
		}
	case changed:
		if evs, limited, err = s.rooms.Timeline(ctx, user, id, since, b.now.Events, cfg.Limit, nil); err != nil {
			return nil, err
		}
	}
	needed := map[string]bool{}
	for _, e := range evs {
		needed[e.Sender] = true
		if e.Type == "m.room.member" && e.StateKey != nil {
			needed[*e.StateKey] = true
		}
	}
	lazy := cfg.lazy()
	var state, delta []rooms.Stored
	if initial {
		state, err = s.rooms.StateAfterFunc(ctx, id, b.now.Events, func(t, k string) bool {
			return cfg.match(t, k, user) || (lazy && t == "m.room.member" && needed[k])
		})
		if err != nil {
			return nil, err
		}
	} else {
		if changed {
			if delta, err = s.rooms.StateDelta(ctx, id, since, b.now.Events+1); err != nil {
				return nil, err
			}
		}
		have := map[pdu.StateKey]bool{}
		for _, e := range delta {
			// Lazy loading sends every membership change of a gapless
			// span, so that the client's member list stays whole, and
			// only the members it needs after a gap.
			member := lazy && e.Type == "m.room.member" && (!limited || needed[*e.StateKey])
			if cfg.match(e.Type, *e.StateKey, user) || member {
				state = append(state, e)
				have[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = true
			}
		}
		var keys []pdu.StateKey
		if lazy {
			for u := range needed {
				if k := (pdu.StateKey{Type: "m.room.member", StateKey: u}); !have[k] {
					keys = append(keys, k)
					have[k] = true
				}
			}
		}
		if len(keys) > 0 {
			members, err := s.rooms.StateAfterKeys(ctx, id, b.now.Events, keys)
			if err != nil {
				return nil, err
			}
			state = append(state, members...)
		}
		if stateChanged {
			// The state the new config asks for and the old did not.
			more, err := s.rooms.StateAfterFunc(ctx, id, b.now.Events, func(t, k string) bool {
				return cfg.match(t, k, user) && !old.match(t, k, user) && !have[pdu.StateKey{Type: t, StateKey: k}]
			})
			if err != nil {
				return nil, err
			}
			state = append(state, more...)
		}
	}
	if !initial && len(evs) == 0 && len(state) == 0 && !changed {
		// Only the config changed, and it adds nothing to send.
		return nil, nil
	}
	opts := rooms.FormatOptions{Txn: &rooms.TxnRef{UserID: user, Scope: b.req.Scope}, WithoutRoomID: true}
	if r.Timeline, err = s.rooms.ClientEvents(ctx, evs, opts); err != nil {
		return nil, err
	}
	if r.RequiredState, err = s.rooms.ClientEvents(ctx, state, opts); err != nil {
		return nil, err
	}
	b.timelines[id] = evs
	r.Limited = limited
	start := b.now.Events
	if len(evs) > 0 {
		start = evs[0].Pos - 1
	}
	r.PrevBatch = rooms.FormatToken(start)
	live := 0
	if b.since != nil {
		for _, e := range evs {
			if e.Pos > b.since.Events {
				live++
			}
		}
	}
	r.NumLive = &live
	bump := c.recency
	r.BumpStamp = &bump
	if initial {
		b.initialRooms[id] = true
		if b.direct[id] {
			r.IsDM = ptr(true)
		}
	} else {
		r.IsDM = ptr(b.direct[id])
	}
	// The room's name, avatar, heroes and counts: all of them the first
	// time, then what changed.
	nameChanged, avatarChanged, membersChanged := initial, initial, initial
	for _, e := range append(delta, evs...) {
		switch e.Type {
		case "m.room.name":
			nameChanged = true
		case "m.room.avatar":
			avatarChanged = true
		case "m.room.member":
			membersChanged = true
		}
	}
	if nameChanged || avatarChanged || membersChanged {
		meta, err := s.rooms.StateAfterKeys(ctx, id, b.now.Events, []pdu.StateKey{{Type: "m.room.name"}, {Type: "m.room.avatar"}})
		if err != nil {
			return nil, err
		}
		var name, avatar string
		for _, e := range meta {
			var content struct {
				Name string `json:"name"`
				URL  string `json:"url"`
			}
			_ = json.Unmarshal(contentOf(e), &content)
			if e.Type == "m.room.name" {
				name = content.Name
			} else {
				avatar = content.URL
			}
		}
		if nameChanged {
			r.Name = nullable(name, initial)
		}
		if avatarChanged {
			r.Avatar = nullable(avatar, initial)
		}
		if membersChanged {
			sum, err := s.rooms.RoomSummary(ctx, id, user)
			if err != nil {
				return nil, err
			}
			r.JoinedCount, r.InvitedCount = ptr(sum.JoinedCount), ptr(sum.InvitedCount)
			if name == "" {
				if r.Heroes, err = b.heroes(ctx, id, sum.Heroes); err != nil {
					return nil, err
				}
			}
		}
	}
	if s.push != nil {
		counts, _, err := s.push.Unread(ctx, user, id, false)
		if err != nil {
			return nil, err
		}
		r.NotificationCount, r.HighlightCount = ptr(counts.Notifications), ptr(counts.Highlights)
	}
	return r, nil
}

// left builds a room the user left or was removed from, up to the
// membership change: what followed is not theirs to see.
func (b *slidingBuilder) left(ctx context.Context, c candidate, cfg *roomConfig, since int64, initial bool) (*SlidingRoom, error) {
	s, id, user, end := b.s, c.m.RoomID, b.req.UserID, c.m.Pos
	from := since
	if initial {
		from = 0
	}
	evs, limited, err := s.rooms.Timeline(ctx, user, id, from, end, cfg.Limit, nil)
	if err != nil {
		return nil, err
	}
	var state []rooms.Stored
	if initial {
		state, err = s.rooms.StateAfterFunc(ctx, id, end, func(t, k string) bool { return cfg.match(t, k, user) })
	} else {
		var delta []rooms.Stored
		delta, err = s.rooms.StateDelta(ctx, id, since, end+1)
		for _, e := range delta {
			if cfg.match(e.Type, *e.StateKey, user) {
				state = append(state, e)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	opts := rooms.FormatOptions{Txn: &rooms.TxnRef{UserID: user, Scope: b.req.Scope}, WithoutRoomID: true}
	r := &SlidingRoom{Initial: initial, Membership: c.m.Membership, Limited: limited}
	if r.Timeline, err = s.rooms.ClientEvents(ctx, evs, opts); err != nil {
		return nil, err
	}
	if r.RequiredState, err = s.rooms.ClientEvents(ctx, state, opts); err != nil {
		return nil, err
	}
	start := end
	if len(evs) > 0 {
		start = evs[0].Pos - 1
	}
	r.PrevBatch = rooms.FormatToken(start)
	bump := end
	r.BumpStamp = &bump
	if initial {
		b.initialRooms[id] = true
	}
	return r, nil
}

// heroes gives the summary's heroes their names and avatars from their
// membership events.
func (b *slidingBuilder) heroes(ctx context.Context, roomID string, ids []string) ([]Hero, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]pdu.StateKey, len(ids))
	for i, u := range ids {
		keys[i] = pdu.StateKey{Type: "m.room.member", StateKey: u}
	}
	members, err := b.s.rooms.StateAfterKeys(ctx, roomID, b.now.Events, keys)
	if err != nil {
		return nil, err
	}
	byUser := map[string]Hero{}
	for _, e := range members {
		var content struct {
			DisplayName string `json:"displayname"`
			AvatarURL   string `json:"avatar_url"`
		}
		_ = json.Unmarshal(contentOf(e), &content)
		byUser[*e.StateKey] = Hero{UserID: *e.StateKey, DisplayName: content.DisplayName, AvatarURL: content.AvatarURL}
	}
	out := make([]Hero, 0, len(ids))
	for _, u := range ids {
		h, ok := byUser[u]
		if !ok {
			h = Hero{UserID: u}
		}
		out = append(out, h)
	}
	return out, nil
}

func (b *slidingBuilder) ignores(ctx context.Context, sender string) (bool, error) {
	if b.ignorer == nil {
		b.ignorer = &builder{s: b.s, req: Request{UserID: b.req.UserID}}
	}
	return b.ignorer.ignores(ctx, sender)
}

func contentOf(e rooms.Stored) json.RawMessage {
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(e.JSON, &ev)
	return ev.Content
}

// nullable is a string field of a room: absent when unset the first time,
// null when removed later.
func nullable(v string, initial bool) json.RawMessage {
	if v == "" {
		if initial {
			return nil
		}
		return json.RawMessage("null")
	}
	b, _ := json.Marshal(v)
	return b
}

func ptr[T any](v T) *T { return &v }

// listFilter applies lists' filters, reading what they need once.
type listFilter struct {
	b        *slidingBuilder
	tags     map[string]map[string]bool
	children map[string]map[string]bool
}

func (f *listFilter) keep(ctx context.Context, fl *SlidingFilters, c candidate) (bool, error) {
	if fl == nil {
		return true, nil
	}
	id := c.m.RoomID
	if fl.IsDM != nil && f.b.direct[id] != *fl.IsDM {
		return false, nil
	}
	if fl.IsEncrypted != nil && c.info.Encrypted != *fl.IsEncrypted {
		return false, nil
	}
	invite := fl.IsInvite
	if invite == nil {
		invite = fl.IsInvited
	}
	if invite != nil && (c.m.Membership == "invite") != *invite {
		return false, nil
	}
	if fl.RoomTypes != nil && !typeIn(c.info.Type, fl.RoomTypes) {
		return false, nil
	}
	if fl.NotRoomTypes != nil && typeIn(c.info.Type, fl.NotRoomTypes) {
		return false, nil
	}
	if len(fl.Spaces) > 0 {
		ok, err := f.inSpaces(ctx, fl.Spaces, id)
		if err != nil || !ok {
			return false, err
		}
	}
	if len(fl.Tags) > 0 || len(fl.NotTags) > 0 {
		if f.tags == nil {
			if err := f.readTags(ctx); err != nil {
				return false, err
			}
		}
		tags := f.tags[id]
		for _, t := range fl.NotTags {
			if tags[t] {
				return false, nil
			}
		}
		if len(fl.Tags) > 0 {
			any := false
			for _, t := range fl.Tags {
				any = any || tags[t]
			}
			if !any {
				return false, nil
			}
		}
	}
	return true, nil
}

func typeIn(t string, types []*string) bool {
	for _, x := range types {
		if (x == nil && t == "") || (x != nil && *x == t) {
			return true
		}
	}
	return false
}

func (f *listFilter) readTags(ctx context.Context) error {
	f.tags = map[string]map[string]bool{}
	items, err := f.b.s.account.Since(ctx, f.b.req.UserID, 0, f.b.now.AccountData)
	if err != nil {
		return err
	}
	for _, it := range items {
		if it.RoomID == "" || it.Type != "m.tag" {
			continue
		}
		var c struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		_ = json.Unmarshal(it.Content, &c)
		f.tags[it.RoomID] = map[string]bool{}
		for t := range c.Tags {
			f.tags[it.RoomID][t] = true
		}
	}
	return nil
}

// inSpaces reports whether a room is a child (m.space.child with a via)
// of one of the spaces the user is joined to; subspaces are not followed.
func (f *listFilter) inSpaces(ctx context.Context, spaces []string, roomID string) (bool, error) {
	if f.children == nil {
		f.children = map[string]map[string]bool{}
	}
	for _, space := range spaces {
		kids, ok := f.children[space]
		if !ok {
			kids = map[string]bool{}
			f.children[space] = kids
			m, err := f.b.s.rooms.MembershipAt(ctx, space, f.b.req.UserID, f.b.now.Events)
			if err != nil {
				return false, err
			}
			if m.Membership == "join" {
				evs, err := f.b.s.rooms.StateAfterFunc(ctx, space, f.b.now.Events, func(t, _ string) bool { return t == "m.space.child" })
				if err != nil {
					return false, err
				}
				for _, e := range evs {
					var c struct {
						Via []string `json:"via"`
					}
					if json.Unmarshal(contentOf(e), &c) == nil && len(c.Via) > 0 {
						kids[*e.StateKey] = true
					}
				}
			}
		}
		if kids[roomID] {
			return true, nil
		}
	}
	return false, nil
}
