package syncapi

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"

	"homeserver/filter"
	"homeserver/receipts"
	"homeserver/rooms"
	"homeserver/todevice"
)

// SlidingExtensions are the extensions' answers.
type SlidingExtensions struct {
	ToDevice    *ToDeviceExtension    `json:"to_device,omitempty"`
	E2EE        *E2EEExtension        `json:"e2ee,omitempty"`
	AccountData *AccountDataExtension `json:"account_data,omitempty"`
	Receipts    *RoomsExtension       `json:"receipts,omitempty"`
	Typing      *RoomsExtension       `json:"typing,omitempty"`
	Presence    *Events               `json:"presence,omitempty"`
}

// ToDeviceExtension is the device's to-device messages; next_batch is the
// since of the next request, which acknowledges (deletes) these.
type ToDeviceExtension struct {
	NextBatch string            `json:"next_batch"`
	Events    []json.RawMessage `json:"events"`
}

// E2EEExtension is /sync's end-to-end encryption sections.
type E2EEExtension struct {
	DeviceLists                  DeviceLists    `json:"device_lists"`
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	DeviceUnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// AccountDataExtension is the account data changed: global and per room.
type AccountDataExtension struct {
	Global []json.RawMessage            `json:"global"`
	Rooms  map[string][]json.RawMessage `json:"rooms"`
}

// RoomsExtension is an ephemeral event per room (receipts, typing).
type RoomsExtension struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

func (e SlidingExtensions) empty() bool {
	return (e.ToDevice == nil || len(e.ToDevice.Events) == 0) &&
		(e.E2EE == nil || (len(e.E2EE.DeviceLists.Changed) == 0 && len(e.E2EE.DeviceLists.Left) == 0)) &&
		(e.AccountData == nil || (len(e.AccountData.Global) == 0 && len(e.AccountData.Rooms) == 0)) &&
		(e.Receipts == nil || len(e.Receipts.Rooms) == 0) &&
		(e.Typing == nil || len(e.Typing.Rooms) == 0) &&
		(e.Presence == nil || len(e.Presence.Events) == 0)
}

func (b *slidingBuilder) extensions(ctx context.Context, memberships []rooms.Stored) error {
	ext := b.req.Extensions
	out := &b.resp.Extensions
	if td := ext.ToDevice; td != nil && td.on() && b.s.toDevice != nil {
		var since int64
		if td.Since != "" {
			v, err := strconv.ParseInt(td.Since, 10, 64)
			if err != nil || v < 0 || v > b.now.ToDevice {
				return unknownPos()
			}
			since = v
		}
		msgs, next, err := b.s.toDevice.Deliver(ctx, b.req.UserID, b.req.DeviceID, since, b.now.ToDevice)
		if err != nil {
			return err
		}
		res := &ToDeviceExtension{NextBatch: strconv.FormatInt(next, 10), Events: []json.RawMessage{}}
		for _, m := range msgs {
			res.Events = append(res.Events, todevice.Event(m))
		}
		out.ToDevice = res
	}
	if ext.E2EE.on() && b.s.keys != nil {
		res := &E2EEExtension{DeviceLists: DeviceLists{Changed: []string{}, Left: []string{}}, DeviceOneTimeKeysCount: map[string]int{}, DeviceUnusedFallbackKeyTypes: []string{}}
		if b.since != nil {
			changes, err := b.s.rooms.MemberChangesBetween(ctx, concernedRooms(memberships, b.changed, b.since.Events), b.since.Events, b.now.Events)
			if err != nil {
				return err
			}
			dl, err := b.s.deviceLists(ctx, b.req.UserID, changes, *b.since, b.now)
			if err != nil {
				return err
			}
			res.DeviceLists = dl
		}
		if b.req.DeviceID != "" {
			c, err := b.s.keys.Counts(ctx, b.req.UserID, b.req.DeviceID)
			if err != nil {
				return err
			}
			res.DeviceOneTimeKeysCount, res.DeviceUnusedFallbackKeyTypes = c.OneTimeKeys, c.FallbackKeys
		}
		out.E2EE = res
	}
	if ext.AccountData.on() {
		if err := b.accountData(ctx); err != nil {
			return err
		}
	}
	if ext.Receipts.on() {
		if err := b.receipts(ctx); err != nil {
			return err
		}
	}
	if ext.Typing.on() {
		res := &RoomsExtension{Rooms: map[string]json.RawMessage{}}
		changed := set(b.s.typing.ChangedSince(b.from().Typing))
		for _, id := range b.relevant(ext.Typing, true) {
			users := b.s.typing.Typing(id)
			if (b.initialRooms[id] && len(users) > 0) || (!b.initialRooms[id] && b.since != nil && changed[id]) {
				if users == nil {
					users = []string{}
				}
				ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
				res.Rooms[id] = ev
			}
		}
		out.Typing = res
	}
	if ext.Presence.on() {
		pb := &builder{s: b.s, req: Request{UserID: b.req.UserID}, f: &filter.Filter{}, resp: newResponse(),
			from: b.from(), now: b.now, initial: b.since == nil, changed: b.changed}
		if err := pb.presence(ctx, memberships); err != nil {
			return err
		}
		out.Presence = &pb.resp.Presence
	}
	return nil
}

// relevant are the rooms an extension covers: those of its lists' ranges
// and its subscribed rooms (all of both when it names neither), only
// joined ones when joinedOnly.
func (b *slidingBuilder) relevant(e *ExtensionConfig, joinedOnly bool) []string {
	lists, subs := e.Lists, e.Rooms
	if lists == nil && subs == nil {
		lists, subs = []string{"*"}, []string{"*"}
	}
	seen := map[string]bool{}
	var out []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, name := range lists {
		for _, l := range slices.Sorted(maps.Keys(b.inLists)) {
			if name == "*" || name == l {
				for _, id := range b.inLists[l] {
					add(id)
				}
			}
		}
	}
	for _, id := range subs {
		for _, s := range b.subscribed {
			if id == "*" || id == s {
				add(s)
			}
		}
	}
	if joinedOnly {
		out = slices.DeleteFunc(out, func(id string) bool { return !b.joinedNow(id) })
	}
	return out
}

func (b *slidingBuilder) joinedNow(roomID string) bool { return b.membership[roomID] == "join" }

func (b *slidingBuilder) accountData(ctx context.Context) error {
	res := &AccountDataExtension{Global: []json.RawMessage{}, Rooms: map[string][]json.RawMessage{}}
	from := b.from().AccountData
	items, err := b.s.account.Since(ctx, b.req.UserID, from, b.now.AccountData)
	if err != nil {
		return err
	}
	relevant := set(b.relevant(b.req.Extensions.AccountData, false))
	sent := map[string]bool{}
	for _, it := range items {
		if it.RoomID == "" {
			res.Global = append(res.Global, accountDataEvent(it))
			continue
		}
		if relevant[it.RoomID] {
			res.Rooms[it.RoomID] = append(res.Rooms[it.RoomID], accountDataEvent(it))
			sent[it.RoomID+"\x00"+it.Type] = true
		}
	}
	if b.since == nil {
		// As /sync's first answer: the push rules, defaults included.
		pb := &builder{s: b.s, req: Request{UserID: b.req.UserID}, f: &filter.Filter{}, resp: newResponse()}
		if err := pb.pushRules(ctx, items); err != nil {
			return err
		}
		res.Global = append(res.Global, pb.resp.AccountData.Events...)
	} else {
		// Rooms sent whole come with all their account data.
		var whole []string
		for id := range b.initialRooms {
			if relevant[id] {
				whole = append(whole, id)
			}
		}
		if len(whole) > 0 {
			all, err := b.s.account.Since(ctx, b.req.UserID, 0, b.now.AccountData)
			if err != nil {
				return err
			}
			wanted := set(whole)
			for _, it := range all {
				if wanted[it.RoomID] && !sent[it.RoomID+"\x00"+it.Type] {
					res.Rooms[it.RoomID] = append(res.Rooms[it.RoomID], accountDataEvent(it))
				}
			}
		}
	}
	b.resp.Extensions.AccountData = res
	return nil
}

// receipts sends the receipts that arrived since the connection's token
// and, for rooms sent whole, those of their timeline events and the
// user's own.
func (b *slidingBuilder) receipts(ctx context.Context) error {
	res := &RoomsExtension{Rooms: map[string]json.RawMessage{}}
	var whole, incremental []string
	for _, id := range b.relevant(b.req.Extensions.Receipts, true) {
		if b.initialRooms[id] || b.since == nil {
			whole = append(whole, id)
		} else {
			incremental = append(incremental, id)
		}
	}
	byRoom := map[string][]receipts.Receipt{}
	if len(incremental) > 0 {
		rs, err := b.s.receipts.Since(ctx, incremental, b.since.Receipts, b.now.Receipts)
		if err != nil {
			return err
		}
		for _, r := range rs {
			byRoom[r.RoomID] = append(byRoom[r.RoomID], r)
		}
	}
	if len(whole) > 0 {
		rs, err := b.s.receipts.Since(ctx, whole, 0, b.now.Receipts)
		if err != nil {
			return err
		}
		shown := map[string]map[string]bool{}
		for id, evs := range b.timelines {
			shown[id] = map[string]bool{}
			for _, e := range evs {
				shown[id][e.EventID] = true
			}
		}
		for _, r := range rs {
			if r.UserID == b.req.UserID || shown[r.RoomID][r.EventID] {
				byRoom[r.RoomID] = append(byRoom[r.RoomID], r)
			}
		}
	}
	for id, rs := range byRoom {
		if content, ok := receipts.Event(rs, b.req.UserID); ok {
			ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
			res.Rooms[id] = ev
		}
	}
	b.resp.Extensions.Receipts = res
	return nil
}
