package clientapi_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// Sliding sync (MSC4186) driven as matrix-rust-sdk drives it: an "all
// rooms" list with a growing range, room subscriptions and extensions.

const ssPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

type ssRoom struct {
	Name              *string           `json:"name"`
	Avatar            *string           `json:"avatar"`
	Heroes            []map[string]any  `json:"heroes"`
	IsDM              *bool             `json:"is_dm"`
	Initial           bool              `json:"initial"`
	ExpandedTimeline  bool              `json:"expanded_timeline"`
	RequiredState     []syEvent         `json:"required_state"`
	Timeline          []syEvent         `json:"timeline"`
	PrevBatch         string            `json:"prev_batch"`
	Limited           bool              `json:"limited"`
	NumLive           *int              `json:"num_live"`
	JoinedCount       *int              `json:"joined_count"`
	InvitedCount      *int              `json:"invited_count"`
	NotificationCount *int              `json:"notification_count"`
	HighlightCount    *int              `json:"highlight_count"`
	BumpStamp         *int64            `json:"bump_stamp"`
	InviteState       []json.RawMessage `json:"invite_state"`
	Membership        string            `json:"membership"`
	Lists             []string          `json:"lists"`
}

type ssResp struct {
	Pos   string `json:"pos"`
	TxnID string `json:"txn_id"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms      map[string]ssRoom `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string    `json:"next_batch"`
			Events    []syEvent `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			DeviceLists struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			} `json:"device_lists"`
			OTKCount map[string]int `json:"device_one_time_keys_count"`
			Fallback []string       `json:"device_unused_fallback_key_types"`
		} `json:"e2ee"`
		AccountData *struct {
			Global []syEvent            `json:"global"`
			Rooms  map[string][]syEvent `json:"rooms"`
		} `json:"account_data"`
		Receipts *struct {
			Rooms map[string]syEvent `json:"rooms"`
		} `json:"receipts"`
		Typing *struct {
			Rooms map[string]syEvent `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
}

func ssSync(t *testing.T, s *testserver.Server, u testserver.User, pos string, timeoutMS int, body map[string]any) ssResp {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	q.Set("timeout", itoa(timeoutMS))
	r := s.MustDo(200, "POST", ssPath+"?"+q.Encode(), u.Token, body)
	var out ssResp
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Pos == "" {
		t.Fatalf("no pos: %s", r.Body)
	}
	return out
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func allRooms(end int, limit int, state ...[]string) map[string]any {
	if state == nil {
		state = [][]string{{"m.room.name", ""}}
	}
	return map[string]any{"all_rooms": map[string]any{
		"ranges": [][]int{{0, end}}, "timeline_limit": limit, "required_state": state,
	}}
}

func (r ssRoom) bodies() []string {
	var out []string
	for _, e := range r.Timeline {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}

func TestSlidingSyncAdvertised(t *testing.T) {
	s := testserver.Start(t, "")
	r := s.MustDo(200, "GET", "/_matrix/client/versions", "", nil)
	feats, _ := r.JSON["unstable_features"].(map[string]any)
	if feats["org.matrix.simplified_msc3575"] != true {
		t.Fatalf("unstable_features = %v", feats)
	}
}

func TestSlidingSyncListOrderingAndDeltas(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	var ids []string
	for i, name := range []string{"one", "two", "three"} {
		id := s.CreateRoom(alice, map[string]any{"name": name})
		s.SendText(alice, id, "hello "+name)
		ids = append(ids, id)
		_ = i
	}
	body := map[string]any{"conn_id": "room-list", "lists": allRooms(1, 1)}
	first := ssSync(t, s, alice, "", 0, body)
	if first.Lists["all_rooms"].Count != 3 {
		t.Fatalf("count = %d", first.Lists["all_rooms"].Count)
	}
	// The two most recent rooms, whole.
	if len(first.Rooms) != 2 || first.Rooms[ids[2]].Name == nil || first.Rooms[ids[1]].Name == nil {
		t.Fatalf("rooms = %v", first.Rooms)
	}
	three := first.Rooms[ids[2]]
	if !three.Initial || *three.Name != "three" || three.Membership != "join" || !slices.Equal(three.bodies(), []string{"hello three"}) ||
		len(three.Timeline) != 1 || !three.Limited || three.JoinedCount == nil || *three.JoinedCount != 1 ||
		three.BumpStamp == nil || *first.Rooms[ids[1]].BumpStamp >= *three.BumpStamp || !slices.Equal(three.Lists, []string{"all_rooms"}) {
		t.Fatalf("room three = %+v", three)
	}
	if len(three.RequiredState) != 1 || three.RequiredState[0].Type != "m.room.name" {
		t.Fatalf("required_state = %+v", three.RequiredState)
	}

	// Growing the range sends only the room not yet sent.
	body["lists"] = allRooms(9, 1)
	second := ssSync(t, s, alice, first.Pos, 0, body)
	if len(second.Rooms) != 1 || !second.Rooms[ids[0]].Initial {
		t.Fatalf("second = %+v", second.Rooms)
	}

	// A new message: only that room, only the new event, as a delta.
	s.SendText(alice, ids[1], "news")
	third := ssSync(t, s, alice, second.Pos, 0, body)
	r, ok := third.Rooms[ids[1]]
	if len(third.Rooms) != 1 || !ok || r.Initial || !slices.Equal(r.bodies(), []string{"news"}) || r.Name != nil ||
		r.NumLive == nil || *r.NumLive != 1 || r.Limited {
		t.Fatalf("third = %+v", third.Rooms)
	}
	// Nothing new: an empty answer after the timeout.
	fourth := ssSync(t, s, alice, third.Pos, 0, body)
	if len(fourth.Rooms) != 0 {
		t.Fatalf("fourth = %+v", fourth.Rooms)
	}
	// The room moved up: with a range of one, it is the one in it.
	body["lists"] = allRooms(0, 1)
	top := ssSync(t, s, alice, "", 0, map[string]any{"conn_id": "other", "lists": allRooms(0, 1)})
	if _, ok := top.Rooms[ids[1]]; !ok || len(top.Rooms) != 1 {
		t.Fatalf("top = %+v", top.Rooms)
	}

	// A retried position gets the same answer again (its first answer
	// was never processed).
	s.SendText(alice, ids[1], "more news")
	body["lists"] = allRooms(9, 1)
	fifth := ssSync(t, s, alice, fourth.Pos, 0, body)
	again := ssSync(t, s, alice, fourth.Pos, 0, body)
	for _, r := range []ssResp{fifth, again} {
		if !slices.Equal(r.Rooms[ids[1]].bodies(), []string{"more news"}) {
			t.Fatalf("retry = %+v", r.Rooms)
		}
	}
	// The position of the lost answer is gone.
	if r := s.Do("POST", ssPath+"?pos="+url.QueryEscape(fifth.Pos), alice.Token, body); r.Errcode() != "M_UNKNOWN_POS" {
		t.Fatalf("lost answer's pos: %s", r.Body)
	}
	// A name change is sent as such.
	s.MustDo(200, "PUT", testserver.RoomPath(ids[0], "/state/m.room.name/"), alice.Token, map[string]any{"name": "uno"})
	named := ssSync(t, s, alice, again.Pos, 0, body)
	if r := named.Rooms[ids[0]]; r.Name == nil || *r.Name != "uno" || r.Initial {
		t.Fatalf("renamed = %+v", named.Rooms)
	}
}

func TestSlidingSyncUnknownPosAndRestart(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	id := s.CreateRoom(alice, map[string]any{"name": "r"})
	body := map[string]any{"lists": allRooms(9, 5)}
	first := ssSync(t, s, alice, "", 0, body)
	for _, bad := range []string{"nonsense", "1.999", first.Pos + "0"} {
		r := s.Do("POST", ssPath+"?pos="+url.QueryEscape(bad), alice.Token, body)
		if r.Status != 400 || r.Errcode() != "M_UNKNOWN_POS" {
			t.Fatalf("pos %q: %d %s", bad, r.Status, r.Body)
		}
	}
	// The connection lives in the database: a restart continues it.
	s.Restart()
	s.SendText(alice, id, "after restart")
	next := ssSync(t, s, alice, first.Pos, 0, body)
	r := next.Rooms[id]
	if r.Initial || !slices.Equal(r.bodies(), []string{"after restart"}) {
		t.Fatalf("after restart = %+v", next.Rooms)
	}
	// A retry of the position the client came back with works; the
	// older ones are gone once a newer one is used.
	retry := ssSync(t, s, alice, first.Pos, 0, body)
	if !slices.Equal(retry.Rooms[id].bodies(), []string{"after restart"}) {
		t.Fatalf("retry = %+v", retry.Rooms)
	}
	third := ssSync(t, s, alice, retry.Pos, 0, body)
	for _, old := range []string{first.Pos, next.Pos} {
		if r := s.Do("POST", ssPath+"?pos="+url.QueryEscape(old), alice.Token, body); r.Status != 400 || r.Errcode() != "M_UNKNOWN_POS" {
			t.Fatalf("superseded pos %s: %d %s", old, r.Status, r.Body)
		}
	}
	// A new connection of another conn_id does not disturb this one.
	ssSync(t, s, alice, "", 0, map[string]any{"conn_id": "encryption", "extensions": map[string]any{"to_device": map[string]any{"enabled": true}}})
	ssSync(t, s, alice, third.Pos, 0, body)
	// Malformed requests.
	for _, bad := range []any{
		map[string]any{"lists": map[string]any{"a": map[string]any{"ranges": [][]int{{5, 1}}, "timeline_limit": 1}}},
		map[string]any{"lists": map[string]any{"a": map[string]any{"timeline_limit": -1}}},
		map[string]any{"room_subscriptions": map[string]any{"not-a-room": map[string]any{"timeline_limit": 1}}},
		map[string]any{"lists": map[string]any{"a": map[string]any{"required_state": "nope"}}},
	} {
		r := s.Do("POST", ssPath, alice.Token, bad)
		if r.Status != 400 {
			t.Fatalf("%v: %d %s", bad, r.Status, r.Body)
		}
	}
	if r := s.Do("POST", ssPath, "", body); r.Status != 401 {
		t.Fatalf("no token: %d", r.Status)
	}
}

func TestSlidingSyncLongPoll(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	id := s.CreateRoom(alice, nil)
	body := map[string]any{"lists": allRooms(9, 5)}
	first := ssSync(t, s, alice, "", 0, body)
	done := make(chan ssResp, 1)
	go func() { done <- ssSync(t, s, alice, first.Pos, 20000, body) }()
	time.Sleep(200 * time.Millisecond)
	s.SendText(alice, id, "wake up")
	select {
	case r := <-done:
		if !slices.Equal(r.Rooms[id].bodies(), []string{"wake up"}) {
			t.Fatalf("woken with %+v", r.Rooms)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the long-poll was not woken")
	}
}

func TestSlidingSyncLazyMembersAndSubscriptions(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	bob := s.Register("bob", "pw-bob-12345")
	carol := s.Register("carol", "pw-carol-123")
	id := s.CreatePublicRoom(alice)
	s.Join(bob, id)
	s.Join(carol, id)
	s.SendText(bob, id, "from bob")
	s.SendText(carol, id, "from carol")
	other := s.CreateRoom(alice, map[string]any{"name": "quiet"})
	s.SendText(alice, other, "old")
	// Make the busy room the most recent.
	s.SendText(carol, id, "again carol")

	lazy := [][]string{{"m.room.create", ""}, {"m.room.member", "$LAZY"}}
	body := map[string]any{
		"lists":              allRooms(0, 1, lazy...),
		"room_subscriptions": map[string]any{other: map[string]any{"timeline_limit": 5, "required_state": [][]string{{"*", "*"}}}},
	}
	resp := ssSync(t, s, alice, "", 0, body)
	busy := resp.Rooms[id]
	var members []string
	for _, e := range busy.RequiredState {
		if e.Type == "m.room.member" {
			members = append(members, *e.StateKey)
		}
	}
	if !slices.Equal(members, []string{carol.ID}) {
		t.Fatalf("lazy members = %v", members)
	}
	// The subscribed room is outside the range, and comes whole, without
	// a list.
	sub, ok := resp.Rooms[other]
	if !ok || !sub.Initial || len(sub.Lists) != 0 || !slices.Contains(sub.bodies(), "old") || len(sub.RequiredState) < 5 {
		t.Fatalf("subscription = %+v", sub)
	}
	// A new sender's membership comes with their message.
	s.SendText(bob, id, "bob again")
	next := ssSync(t, s, alice, resp.Pos, 0, body)
	members = nil
	for _, e := range next.Rooms[id].RequiredState {
		if e.Type == "m.room.member" {
			members = append(members, *e.StateKey)
		}
	}
	if !slices.Contains(members, bob.ID) {
		t.Fatalf("incremental lazy members = %v", members)
	}
	// A larger timeline limit re-sends the room with earlier events.
	body["lists"] = allRooms(0, 4, lazy...)
	wider := ssSync(t, s, alice, next.Pos, 0, body)
	if r := wider.Rooms[id]; !r.ExpandedTimeline || len(r.Timeline) != 4 {
		t.Fatalf("expanded = %+v", r)
	}
	// Subscribing to a room the user is not in shows nothing.
	stranger := s.CreateRoom(bob, nil)
	body["room_subscriptions"] = map[string]any{stranger: map[string]any{"timeline_limit": 5}}
	none := ssSync(t, s, alice, wider.Pos, 0, body)
	if _, ok := none.Rooms[stranger]; ok {
		t.Fatal("a room the user is not in was sent")
	}
}

func TestSlidingSyncFilters(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	bob := s.Register("bob", "pw-bob-12345")
	plain := s.CreateRoom(alice, map[string]any{"name": "plain"})
	space := s.CreateRoom(alice, map[string]any{"name": "space", "creation_content": map[string]any{"type": "m.space"}})
	enc := s.CreateRoom(alice, map[string]any{"name": "enc", "initial_state": []map[string]any{{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
	dm := s.CreateRoom(bob, map[string]any{"invite": []string{alice.ID}, "is_direct": true})
	s.MustDo(200, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.ID)+"/account_data/m.direct", alice.Token, map[string]any{bob.ID: []string{plain}})
	s.MustDo(200, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(space)+"/state/m.space.child/"+url.PathEscape(enc), alice.Token, map[string]any{"via": []string{"localhost"}})

	list := func(filters map[string]any) map[string]any {
		return map[string]any{"l": map[string]any{"ranges": [][]int{{0, 99}}, "timeline_limit": 0, "required_state": [][]string{}, "filters": filters}}
	}
	check := func(name string, filters map[string]any, want ...string) {
		t.Helper()
		r := ssSync(t, s, alice, "", 0, map[string]any{"conn_id": name, "lists": list(filters)})
		var got []string
		for id := range r.Rooms {
			got = append(got, id)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) || r.Lists["l"].Count != len(want) {
			t.Fatalf("%s: got %v (count %d), want %v", name, got, r.Lists["l"].Count, want)
		}
	}
	check("all", nil, plain, space, enc, dm)
	check("not-spaces", map[string]any{"not_room_types": []string{"m.space"}}, plain, enc, dm)
	check("spaces", map[string]any{"room_types": []string{"m.space"}}, space)
	check("untyped", map[string]any{"room_types": []any{nil}}, plain, enc, dm)
	check("encrypted", map[string]any{"is_encrypted": true}, enc)
	check("invites", map[string]any{"is_invite": true}, dm)
	check("no-invites", map[string]any{"is_invited": false}, plain, space, enc)
	check("dm", map[string]any{"is_dm": true}, plain)
	check("in-space", map[string]any{"spaces": []string{space}}, enc)

	r := ssSync(t, s, alice, "", 0, map[string]any{"conn_id": "invite", "lists": list(map[string]any{"is_invite": true})})
	inv := r.Rooms[dm]
	if inv.Membership != "invite" || len(inv.InviteState) == 0 || !inv.Initial {
		t.Fatalf("invite = %+v", inv)
	}
}

func TestSlidingSyncExtensions(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	bob := s.Register("bob", "pw-bob-12345")
	id := s.CreatePublicRoom(alice)
	s.Join(bob, id)
	ev := s.SendText(bob, id, "read me")
	body := map[string]any{
		"lists": allRooms(9, 1),
		"extensions": map[string]any{
			"to_device":    map[string]any{"enabled": true},
			"e2ee":         map[string]any{"enabled": true},
			"account_data": map[string]any{"enabled": true},
			"receipts":     map[string]any{"enabled": true},
			"typing":       map[string]any{"enabled": true},
		},
	}
	s.MustDo(200, "POST", testserver.RoomPath(id, "/receipt/m.read/"+url.PathEscape(ev)), bob.Token, map[string]any{})
	s.MustDo(200, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+syNextTxn(), bob.Token,
		map[string]any{"messages": map[string]any{alice.ID: map[string]any{alice.DeviceID: map[string]any{"n": 1}}}})
	first := ssSync(t, s, alice, "", 0, body)
	ext := first.Extensions
	if ext.ToDevice == nil || len(ext.ToDevice.Events) != 1 || ext.ToDevice.Events[0].Type != "m.test" {
		t.Fatalf("to_device = %+v", ext.ToDevice)
	}
	if ext.E2EE == nil || ext.E2EE.OTKCount == nil {
		t.Fatalf("e2ee = %+v", ext.E2EE)
	}
	if ext.AccountData == nil || !slices.ContainsFunc(ext.AccountData.Global, func(e syEvent) bool { return e.Type == "m.push_rules" }) {
		t.Fatalf("account_data = %+v", ext.AccountData)
	}
	if rc, ok := ext.Receipts.Rooms[id]; !ok || rc.Type != "m.receipt" || rc.Content[ev] == nil {
		t.Fatalf("receipts = %+v", ext.Receipts)
	}

	// Incremental: each extension brings what changed.
	s.MustDo(200, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.ID)+"/account_data/org.example", alice.Token, map[string]any{"x": 1})
	s.MustDo(200, "PUT", testserver.RoomPath(id, "/typing/"+url.PathEscape(bob.ID)), bob.Token, map[string]any{"typing": true, "timeout": 30000})
	s.MustDo(200, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+syNextTxn(), bob.Token,
		map[string]any{"messages": map[string]any{alice.ID: map[string]any{alice.DeviceID: map[string]any{"n": 2}}}})
	bd := ksNewDevice(t, bob)
	ksUpload(t, s, bd, map[string]any{"device_keys": bd.deviceKeys(t)})
	body["extensions"].(map[string]any)["to_device"] = map[string]any{"enabled": true, "since": ext.ToDevice.NextBatch}
	next := ssSync(t, s, alice, first.Pos, 0, body)
	ext = next.Extensions
	if len(ext.ToDevice.Events) != 1 || ext.ToDevice.Events[0].Content["n"] != float64(2) {
		t.Fatalf("to_device = %+v", ext.ToDevice)
	}
	if !slices.ContainsFunc(ext.AccountData.Global, func(e syEvent) bool { return e.Type == "org.example" }) {
		t.Fatalf("account_data = %+v", ext.AccountData)
	}
	if ty, ok := ext.Typing.Rooms[id]; !ok || !slices.Contains(toStrings(ty.Content["user_ids"]), bob.ID) {
		t.Fatalf("typing = %+v", ext.Typing)
	}
	if !slices.Contains(ext.E2EE.DeviceLists.Changed, bob.ID) {
		t.Fatalf("device_lists = %+v", ext.E2EE.DeviceLists)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// A room the user is kicked from stays in the list, up to the kick; a
// room they leave themselves goes once sent as left.
func TestSlidingSyncKickedAndLeft(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	bob := s.Register("bob", "pw-bob-12345")
	kick := s.CreatePublicRoom(bob)
	s.Join(alice, kick)
	left := s.CreatePublicRoom(bob)
	s.Join(alice, left)
	body := map[string]any{"lists": allRooms(9, 5)}
	first := ssSync(t, s, alice, "", 0, body)
	if first.Lists["all_rooms"].Count != 2 {
		t.Fatalf("count = %d", first.Lists["all_rooms"].Count)
	}
	s.MustDo(200, "POST", testserver.RoomPath(kick, "/kick"), bob.Token, map[string]any{"user_id": alice.ID, "reason": "bye"})
	s.MustDo(200, "POST", testserver.RoomPath(left, "/leave"), alice.Token, map[string]any{})
	s.SendText(bob, kick, "after the kick")
	next := ssSync(t, s, alice, first.Pos, 0, body)
	k, ok := next.Rooms[kick]
	if !ok || k.Membership != "leave" || slices.Contains(k.bodies(), "after the kick") {
		t.Fatalf("kicked room = %+v", k)
	}
	if l, ok := next.Rooms[left]; !ok || l.Membership != "leave" {
		t.Fatalf("left room = %+v", next.Rooms)
	}
	// A new connection lists the room the user was kicked from, not the
	// one they left.
	fresh := ssSync(t, s, alice, "", 0, map[string]any{"conn_id": "fresh", "lists": allRooms(9, 5)})
	if _, ok := fresh.Rooms[kick]; !ok || fresh.Lists["all_rooms"].Count != 1 {
		t.Fatalf("fresh = %+v", fresh)
	}
	// What happens in the room afterwards is not theirs to see.
	s.SendText(bob, kick, "later still")
	later := ssSync(t, s, alice, next.Pos, 0, body)
	if _, ok := later.Rooms[kick]; ok {
		t.Fatalf("later = %+v", later.Rooms)
	}
}

// Extensions cover the rooms of the lists and subscriptions they name.
func TestSlidingSyncExtensionScope(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	bob := s.Register("bob", "pw-bob-12345")
	a := s.CreatePublicRoom(alice)
	b := s.CreatePublicRoom(alice)
	s.Join(bob, a)
	s.Join(bob, b)
	body := map[string]any{
		"lists": map[string]any{
			"one": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1, "required_state": [][]string{}},
		},
		"room_subscriptions": map[string]any{a: map[string]any{"timeline_limit": 1}},
		"extensions": map[string]any{
			"typing":   map[string]any{"enabled": true, "lists": []string{}, "rooms": []string{a}},
			"presence": map[string]any{"enabled": true},
		},
	}
	first := ssSync(t, s, alice, "", 0, body)
	for _, id := range []string{a, b} {
		s.MustDo(200, "PUT", testserver.RoomPath(id, "/typing/"+url.PathEscape(bob.ID)), bob.Token, map[string]any{"typing": true, "timeout": 30000})
	}
	s.MustDo(200, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.ID)+"/status", bob.Token, map[string]any{"presence": "online", "status_msg": "here"})
	next := ssSync(t, s, alice, first.Pos, 0, body)
	if _, ok := next.Extensions.Typing.Rooms[a]; !ok || len(next.Extensions.Typing.Rooms) != 1 {
		t.Fatalf("typing = %+v", next.Extensions.Typing)
	}
	var raw map[string]any
	r := s.MustDo(200, "POST", ssPath+"?timeout=0&pos="+url.QueryEscape(first.Pos), alice.Token, body)
	_ = json.Unmarshal(r.Body, &raw)
	pres, _ := raw["extensions"].(map[string]any)["presence"].(map[string]any)
	evs, _ := pres["events"].([]any)
	found := false
	for _, e := range evs {
		if e.(map[string]any)["sender"] == bob.ID {
			found = true
		}
	}
	if !found {
		t.Fatalf("presence = %v", pres)
	}
}
