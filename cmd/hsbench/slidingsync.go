package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// runSlidingSync: one user in R rooms with E messages each. Times, beside
// /sync for the same account, what Element X does on start: a sliding
// sync (MSC4186) connection's first page of 20 rooms, and an incremental
// update after one new message.
func runSlidingSync(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.SlidingRooms < 1 || o.SlidingEvents < 0 {
		return nil, errors.New("sliding-sync: -sliding-rooms must be positive")
	}
	r := &Result{Params: map[string]string{"R": fmt.Sprint(o.SlidingRooms), "E": fmt.Sprint(o.SlidingEvents)}}
	users, err := b.Users(ctx, "ssync", 1)
	if err != nil {
		return nil, err
	}
	u := users[0]
	rooms, err := b.roomsWithHistory(ctx, u, "sliding-sync", "ssync", o.SlidingRooms, o.SlidingEvents, nil)
	if err != nil {
		return nil, err
	}
	b.measuring(r)

	// Element X's room list: the top 20 rooms, one event each, the state
	// its list shows.
	list := map[string]any{"all_rooms": map[string]any{
		"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
		"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""},
			{"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}, {"m.room.canonical_alias", ""}, {"m.room.create", ""}},
		"filters": map[string]any{"not_room_types": []string{"m.space"}},
	}}
	type answer struct {
		Pos   string `json:"pos"`
		Lists map[string]struct {
			Count int `json:"count"`
		} `json:"lists"`
		Rooms map[string]struct {
			Timeline []map[string]any `json:"timeline"`
		} `json:"rooms"`
	}
	slide := func(conn, pos string) (*answer, int, time.Duration, error) {
		q := url.Values{"timeout": {"0"}}
		if pos != "" {
			q.Set("pos", pos)
		}
		var out answer
		t0 := time.Now()
		n, err := b.C.Do(ctx, "POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?"+q.Encode(), u.Token,
			map[string]any{"conn_id": conn, "lists": list}, &out)
		return &out, n, time.Since(t0), err
	}
	const runs = 5
	var syncInitial, firstPage []time.Duration
	var syncSize, pageSize int
	var pos, since string
	for i := range runs {
		t0 := time.Now()
		resp, n, err := b.C.Sync(ctx, u, "", 0, "")
		if err != nil {
			return nil, err
		}
		syncInitial = append(syncInitial, time.Since(t0))
		syncSize, since = n, resp.NextBatch
		out, n, d, err := slide(fmt.Sprintf("hsbench-%d", i), "")
		if err != nil {
			return nil, err
		}
		if out.Lists["all_rooms"].Count != o.SlidingRooms || len(out.Rooms) != min(20, o.SlidingRooms) {
			return nil, fmt.Errorf("sliding sync listed %d rooms and sent %d, want %d and %d", out.Lists["all_rooms"].Count, len(out.Rooms), o.SlidingRooms, min(20, o.SlidingRooms))
		}
		firstPage = append(firstPage, d)
		pageSize, pos = n, out.Pos
	}
	conn := fmt.Sprintf("hsbench-%d", runs-1)
	const updates = 20
	var slideIncr, syncIncr []time.Duration
	for i := range updates {
		room := rooms[i%len(rooms)]
		if _, err := b.C.Send(ctx, u, room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hsbench update %d", i)}); err != nil {
			return nil, err
		}
		out, _, d, err := slide(conn, pos)
		if err != nil {
			return nil, err
		}
		if len(out.Rooms[room].Timeline) != 1 {
			return nil, fmt.Errorf("sliding sync update %d: the room came with %d events, want 1", i, len(out.Rooms[room].Timeline))
		}
		slideIncr = append(slideIncr, d)
		pos = out.Pos
		t0 := time.Now()
		resp, _, err := b.C.Sync(ctx, u, since, 0, "")
		if err != nil {
			return nil, err
		}
		syncIncr = append(syncIncr, time.Since(t0))
		since = resp.NextBatch
	}
	for _, m := range []struct {
		name string
		ds   []time.Duration
	}{
		{"initial /sync", syncInitial}, {"sliding sync first page (20 rooms)", firstPage},
		{"incremental /sync after one message", syncIncr}, {"sliding sync update after one message", slideIncr},
	} {
		s, err := Summarize(m.ds)
		if err != nil {
			return nil, err
		}
		r.add(m.name+" p50", ms(s.P50), "ms")
		r.add(m.name+" max", ms(s.Max), "ms")
	}
	r.add("initial /sync size", float64(syncSize)/1024, "KiB")
	r.add("sliding sync first page size", float64(pageSize)/1024, "KiB")
	r.Events = updates
	return r, nil
}
