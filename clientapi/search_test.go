package clientapi_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const searchPath = "/_matrix/client/v3/search"

// roomEventsSearch posts a room_events search (criteria merged into the
// default) and returns search_categories.room_events.
func roomEventsSearch(t *testing.T, s *testserver.Server, u testserver.User, criteria map[string]any, nextBatch string) map[string]any {
	t.Helper()
	path := searchPath
	if nextBatch != "" {
		path += "?next_batch=" + nextBatch
	}
	r := s.MustDo(http.StatusOK, "POST", path, u.Token, map[string]any{"search_categories": map[string]any{"room_events": criteria}})
	cats, _ := r.JSON["search_categories"].(map[string]any)
	re, ok := cats["room_events"].(map[string]any)
	if !ok {
		t.Fatalf("no room_events in %s", r.Body)
	}
	return re
}

// resultIDs returns the event IDs of the results, in order.
func resultIDs(re map[string]any) []string {
	var ids []string
	results, _ := re["results"].([]any)
	for _, x := range results {
		m, _ := x.(map[string]any)
		ev, _ := m["result"].(map[string]any)
		id, _ := ev["event_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

func searchIDs(t *testing.T, s *testserver.Server, u testserver.User, criteria map[string]any) []string {
	t.Helper()
	return resultIDs(roomEventsSearch(t, s, u, criteria, ""))
}

// waitSearchFound waits for the search index to catch up until searching
// term as u finds (or, want false, no longer finds) eventID.
func waitSearchFound(t *testing.T, s *testserver.Server, u testserver.User, term, eventID string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids := searchIDs(t, s, u, map[string]any{"search_term": term, "filter": map[string]any{"limit": 50}})
		if slices.Contains(ids, eventID) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("searching %q as %s: found %v; want %s found=%v", term, u.ID, ids, eventID, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestSearchRoomEvents(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-1")
	bob := s.Register("bob", "pw-bob-1")
	carol := s.Register("carol", "pw-carol-1")

	room := s.CreateRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{bob.ID}})
	s.Join(bob, room)
	fox := s.SendText(alice, room, "The quick brown fox")
	lazy := s.SendText(alice, room, "lazy dogs sleep")
	quickBob := s.SendText(bob, room, "Quick thinking")
	nameID := s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.name/"), alice.Token, map[string]any{"name": "Foxes den"}).String("event_id")
	topicID := s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.topic/"), alice.Token, map[string]any{"topic": "All about foxes"}).String("event_id")
	// A room alice is not in.
	other := s.CreateRoom(carol, map[string]any{"preset": "private_chat"})
	carolFox := s.SendText(carol, other, "fox in carol's room")
	sentinel := s.SendText(alice, room, "sentinelword")
	waitSearchFound(t, s, alice, "sentinelword", sentinel, true)
	waitSearchFound(t, s, carol, "fox", carolFox, true)

	t.Run("body name topic", func(t *testing.T) {
		got := searchIDs(t, s, alice, map[string]any{"search_term": "foxes"})
		if !slices.Contains(got, nameID) || !slices.Contains(got, topicID) {
			t.Errorf("foxes: %v, want name %s and topic %s", got, nameID, topicID)
		}
		got = searchIDs(t, s, alice, map[string]any{"search_term": "quick"})
		if !sameSet(got, []string{fox, quickBob}) {
			t.Errorf("quick: %v, want %v", got, []string{fox, quickBob})
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "fox"}); slices.Contains(got, carolFox) || !slices.Contains(got, fox) {
			t.Errorf("fox as alice: %v: want %s and not carol's %s", got, fox, carolFox)
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "nothingmatchesthis"}); len(got) != 0 {
			t.Errorf("no match: %v", got)
		}
	})

	t.Run("keys", func(t *testing.T) {
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "foxes", "keys": []string{"content.name"}}); !slices.Equal(got, []string{nameID}) {
			t.Errorf("keys content.name: %v, want [%s]", got, nameID)
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "foxes", "keys": []string{"content.topic"}}); !slices.Equal(got, []string{topicID}) {
			t.Errorf("keys content.topic: %v, want [%s]", got, topicID)
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "quick", "keys": []string{"content.name"}}); len(got) != 0 {
			t.Errorf("quick in names: %v", got)
		}
		// Types in the filter bound the keys too.
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "foxes", "filter": map[string]any{"types": []string{"m.room.topic"}}}); !slices.Equal(got, []string{topicID}) {
			t.Errorf("types m.room.topic: %v", got)
		}
	})

	t.Run("filter", func(t *testing.T) {
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "quick", "filter": map[string]any{"senders": []string{bob.ID}}}); !slices.Equal(got, []string{quickBob}) {
			t.Errorf("senders bob: %v", got)
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "quick", "filter": map[string]any{"not_senders": []string{bob.ID}}}); !slices.Equal(got, []string{fox}) {
			t.Errorf("not_senders bob: %v", got)
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "quick", "filter": map[string]any{"not_rooms": []string{room}}}); len(got) != 0 {
			t.Errorf("not_rooms: %v", got)
		}
		// Naming a room one is not in searches nothing of it.
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "fox", "filter": map[string]any{"rooms": []string{other}}}); len(got) != 0 {
			t.Errorf("rooms [carol's]: %v", got)
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "lazy", "filter": map[string]any{"rooms": []string{room}}}); !slices.Equal(got, []string{lazy}) {
			t.Errorf("rooms [room]: %v", got)
		}
	})

	t.Run("highlights and count", func(t *testing.T) {
		re := roomEventsSearch(t, s, alice, map[string]any{"search_term": "Quick  BROWN"}, "")
		hl, _ := re["highlights"].([]any)
		if len(hl) != 2 || hl[0] != "quick" || hl[1] != "brown" {
			t.Errorf("highlights %v", re["highlights"])
		}
		if re["count"] != float64(1) {
			t.Errorf("count %v, want 1", re["count"])
		}
		res, _ := re["results"].([]any)
		if len(res) != 1 {
			t.Fatalf("results %v", res)
		}
		if r, _ := res[0].(map[string]any)["rank"].(float64); r <= 0 {
			t.Errorf("rank %v, want > 0", res[0].(map[string]any)["rank"])
		}
	})

	t.Run("other prefixes", func(t *testing.T) {
		for _, v := range []string{"/_matrix/client/r0/search", "/_matrix/client/api/v1/search"} {
			s.MustDo(http.StatusOK, "POST", v, alice.Token, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "fox"}}})
		}
	})

	t.Run("fts syntax", func(t *testing.T) {
		for _, term := range []string{`"`, `*`, `(`, `)`, `NEAR`, `-`, `fox"`, `"fox`, `fox*`, `NEAR(fox quick)`, `fox AND`, `OR`, `NOT fox`,
			`a:b`, `'`, `\`, `!`, `&`, `|`, `fox:*`, `-fox`, `^fox`, `{fox}`, `fox & | !`, `""""`, `*fox*`, `é`, `日本語`, "\u0301", "\u02b0", "a\u0301", "\u00ad", "\u200b", "x\u0301\u0301*"} {
			r := s.Do("POST", searchPath, alice.Token, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": term}}})
			if r.Status != http.StatusOK {
				t.Errorf("term %q: %d %s", term, r.Status, r.Body)
			}
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": `"brown*" -(fox)`}); !slices.Equal(got, []string{fox}) {
			t.Errorf(`"brown*" -(fox): %v, want [%s]`, got, fox)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			body    any
			errcode string
		}{
			{map[string]any{}, "M_MISSING_PARAM"},
			{map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}, "M_MISSING_PARAM"},
			{map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "bogus"}}}, "M_INVALID_PARAM"},
			{map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "keys": []string{"content.x"}}}}, "M_INVALID_PARAM"},
			{map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []any{map[string]any{"key": "type"}}}}}}, "M_INVALID_PARAM"},
			{map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 3}}}, "M_BAD_JSON"},
			{map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "filter": map[string]any{"senders": []string{"bob"}}}}}, "M_BAD_JSON"},
		} {
			r := s.Do("POST", searchPath, alice.Token, c.body)
			if r.Status != http.StatusBadRequest || r.Errcode() != c.errcode {
				t.Errorf("%v: %d %s, want 400 %s", c.body, r.Status, r.Body, c.errcode)
			}
		}
		for _, nb := range []string{"garbage!", "czEKcmFuawoKCjEK", "YWxsCgpOb25lLDM1ODcwOA"} {
			r := s.Do("POST", searchPath+"?next_batch="+nb, alice.Token, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "fox"}}})
			if r.Status != http.StatusBadRequest || r.Errcode() != "M_INVALID_PARAM" {
				t.Errorf("next_batch %q: %d %s", nb, r.Status, r.Body)
			}
		}
		r := s.MustDo(http.StatusOK, "POST", searchPath, alice.Token, map[string]any{"search_categories": map[string]any{}})
		if string(r.Body) != `{"search_categories":{}}` {
			t.Errorf("empty categories: %s", r.Body)
		}
	})

	t.Run("redaction", func(t *testing.T) {
		id := s.SendText(alice, room, "redactme please")
		waitSearchFound(t, s, alice, "redactme", id, true)
		s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/redact/"+id+"/"+testserver.NextTxn()), alice.Token, map[string]any{})
		// Not found at once (the query skips redacted events), and the
		// index forgets it.
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "redactme"}); len(got) != 0 {
			t.Errorf("redacted event found: %v", got)
		}
		later := s.SendText(alice, room, "afterredaction")
		waitSearchFound(t, s, alice, "afterredaction", later, true)
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "redactme"}); len(got) != 0 {
			t.Errorf("redacted event found: %v", got)
		}
	})

	t.Run("context and groups", func(t *testing.T) {
		s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.member/"+alice.ID), alice.Token,
			map[string]any{"membership": "join", "displayname": "Alice In Room"})
		before := s.SendText(bob, room, "before the target")
		target := s.SendText(alice, room, "contexttarget here")
		after := s.SendText(bob, room, "after the target")
		waitSearchFound(t, s, alice, "contexttarget", target, true)
		re := roomEventsSearch(t, s, alice, map[string]any{
			"search_term":   "contexttarget",
			"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true},
			"groupings":     map[string]any{"group_by": []any{map[string]any{"key": "room_id"}, map[string]any{"key": "sender"}}},
			"include_state": true,
		}, "")
		res := re["results"].([]any)
		if len(res) != 1 {
			t.Fatalf("results %v", res)
		}
		c, _ := res[0].(map[string]any)["context"].(map[string]any)
		eb, _ := c["events_before"].([]any)
		ea, _ := c["events_after"].([]any)
		if len(eb) != 1 || eb[0].(map[string]any)["event_id"] != before || len(ea) != 1 || ea[0].(map[string]any)["event_id"] != after {
			t.Errorf("context %v", c)
		}
		if c["start"] == nil || c["end"] == nil {
			t.Errorf("no start/end in %v", c)
		}
		pi, _ := c["profile_info"].(map[string]any)
		ap, _ := pi[alice.ID].(map[string]any)
		if ap["displayname"] != "Alice In Room" {
			t.Errorf("profile_info %v", pi)
		}
		if _, ok := pi[bob.ID]; !ok {
			t.Errorf("profile_info lacks bob: %v", pi)
		}
		groups, _ := re["groups"].(map[string]any)
		byRoom, _ := groups["room_id"].(map[string]any)
		g, _ := byRoom[room].(map[string]any)
		if rs, _ := g["results"].([]any); len(rs) != 1 || rs[0] != target || g["order"] == nil {
			t.Errorf("room group %v", groups)
		}
		bySender, _ := groups["sender"].(map[string]any)
		if _, ok := bySender[alice.ID]; !ok {
			t.Errorf("sender group %v", groups)
		}
		state, _ := re["state"].(map[string]any)
		if st, _ := state[room].([]any); len(st) == 0 {
			t.Errorf("state %v", re["state"])
		}
	})

	t.Run("rank and recent", func(t *testing.T) {
		dense := s.SendText(alice, room, "rankword rankword rankword rankword")
		sparse := s.SendText(alice, room, "rankword among a great many other words that dilute its weight in the text")
		waitSearchFound(t, s, alice, "rankword", sparse, true)
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "rankword"}); !slices.Equal(got, []string{dense, sparse}) {
			t.Errorf("rank: %v, want %v", got, []string{dense, sparse})
		}
		if got := searchIDs(t, s, alice, map[string]any{"search_term": "rankword", "order_by": "recent"}); !slices.Equal(got, []string{sparse, dense}) {
			t.Errorf("recent: %v, want %v", got, []string{sparse, dense})
		}
	})

	t.Run("pagination", func(t *testing.T) {
		var want []string
		for i := range 25 {
			body := "pageword"
			for range i % 4 {
				body += " filler"
			}
			want = append(want, s.SendText(alice, room, body))
		}
		waitSearchFound(t, s, alice, "pageword", want[len(want)-1], true)
		for _, order := range []string{"rank", "recent"} {
			var got []string
			next := ""
			for page := 0; ; page++ {
				re := roomEventsSearch(t, s, alice, map[string]any{"search_term": "pageword", "order_by": order}, next)
				ids := resultIDs(re)
				got = append(got, ids...)
				next, _ = re["next_batch"].(string)
				if next == "" {
					break
				}
				if len(ids) != 10 || page > 5 {
					t.Fatalf("%s page %d: %d results, next_batch %q", order, page, len(ids), next)
				}
			}
			if len(got) != 25 || !sameSet(got, want) {
				t.Errorf("%s: %d results %v, want each of %v once", order, len(got), got, want)
			}
			reversed := slices.Clone(want)
			slices.Reverse(reversed)
			if order == "recent" && !slices.Equal(got, reversed) {
				t.Errorf("recent order %v", got)
			}
			// A token of one order is refused for the other.
			re := roomEventsSearch(t, s, alice, map[string]any{"search_term": "pageword", "order_by": order}, "")
			other := map[string]string{"rank": "recent", "recent": "rank"}[order]
			r := s.Do("POST", searchPath+"?next_batch="+re["next_batch"].(string), alice.Token,
				map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "pageword", "order_by": other}}})
			if r.Status != http.StatusBadRequest {
				t.Errorf("token of %s used for %s: %d", order, other, r.Status)
			}
		}
		// A group's next_batch continues within the group.
		re := roomEventsSearch(t, s, alice, map[string]any{"search_term": "pageword", "order_by": "recent",
			"groupings": map[string]any{"group_by": []any{map[string]any{"key": "room_id"}}}}, "")
		g := re["groups"].(map[string]any)["room_id"].(map[string]any)[room].(map[string]any)
		nb, _ := g["next_batch"].(string)
		if nb == "" {
			t.Fatalf("no group next_batch: %v", g)
		}
		if ids := resultIDs(roomEventsSearch(t, s, alice, map[string]any{"search_term": "pageword", "order_by": "recent"}, nb)); len(ids) != 10 {
			t.Errorf("group page: %v", ids)
		}
	})

	t.Run("left room", func(t *testing.T) {
		shared := s.CreateRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{carol.ID}})
		s.Join(carol, shared)
		seen := s.SendText(alice, shared, "leftword before leaving")
		s.MustDo(http.StatusOK, "POST", testserver.RoomPath(shared, "/leave"), carol.Token, map[string]any{})
		unseen := s.SendText(alice, shared, "leftword after leaving")
		waitSearchFound(t, s, alice, "leftword", unseen, true)
		if got := searchIDs(t, s, carol, map[string]any{"search_term": "leftword"}); !slices.Equal(got, []string{seen}) {
			t.Errorf("carol after leaving: %v, want [%s]", got, seen)
		}
	})
}

// With history_visibility joined, a user does not find what was said
// before they joined.
func TestSearchHistoryVisibility(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-1")
	bob := s.Register("bob", "pw-bob-1")
	room := s.CreateRoom(alice, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}},
	}})
	early := s.SendText(alice, room, "secretword early")
	// More hidden matches than one batch of the scan holds.
	for range 60 {
		s.SendText(alice, room, "hiddenword before bob")
	}
	s.Join(bob, room)
	late := s.SendText(alice, room, "secretword late")
	var shown []string
	for range 3 {
		shown = append(shown, s.SendText(alice, room, "hiddenword after bob"))
	}
	waitSearchFound(t, s, alice, "hiddenword", shown[2], true)
	for _, order := range []string{"rank", "recent"} {
		re := roomEventsSearch(t, s, bob, map[string]any{"search_term": "hiddenword", "order_by": order}, "")
		if got := resultIDs(re); !sameSet(got, shown) || re["next_batch"] != nil {
			t.Errorf("bob, %s: %v next_batch %v; want %v and no next_batch", order, got, re["next_batch"], shown)
		}
	}
	waitSearchFound(t, s, alice, "secretword", late, true)
	if got := searchIDs(t, s, alice, map[string]any{"search_term": "secretword"}); !sameSet(got, []string{early, late}) {
		t.Errorf("alice: %v", got)
	}
	if got := searchIDs(t, s, bob, map[string]any{"search_term": "secretword"}); !slices.Equal(got, []string{late}) {
		t.Errorf("bob: %v, want [%s]", got, late)
	}
	// A world-readable room one never joined is not searched.
	carol := s.Register("carol", "pw-carol-1")
	open := s.CreateRoom(carol, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	readable := s.SendText(carol, open, "secretword readable")
	waitSearchFound(t, s, carol, "secretword", readable, true)
	if got := searchIDs(t, s, bob, map[string]any{"search_term": "secretword"}); !slices.Equal(got, []string{late}) {
		t.Errorf("bob with a world-readable room: %v, want [%s]", got, late)
	}
}

// Searching an upgraded room searches its predecessor too.
func TestSearchUpgradedRoom(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-1")
	old := s.CreateRoom(alice, nil)
	ancient := s.SendText(alice, old, "ancientword in the old room")
	r := s.MustDo(http.StatusOK, "POST", testserver.RoomPath(old, "/upgrade"), alice.Token, map[string]any{"new_version": "10"})
	room := r.String("replacement_room")
	fresh := s.SendText(alice, room, "ancientword in the new room")
	waitSearchFound(t, s, alice, "ancientword", fresh, true)
	got := searchIDs(t, s, alice, map[string]any{"search_term": "ancientword", "filter": map[string]any{"rooms": []string{room}}})
	if !sameSet(got, []string{ancient, fresh}) {
		t.Errorf("rooms [new]: %v, want %v", got, []string{ancient, fresh})
	}
}

// Guests may not search.
func TestSearchGuestForbidden(t *testing.T) {
	s := testserver.Start(t, "allow_guest_access: true\n")
	r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/register?kind=guest", "", map[string]any{})
	res := s.Do("POST", searchPath, r.String("access_token"), map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}})
	if res.Status != http.StatusForbidden || res.Errcode() != "M_GUEST_ACCESS_FORBIDDEN" {
		t.Errorf("guest search: %d %s", res.Status, res.Body)
	}
}
