package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/accounts"
	"homeserver/internal/testserver"
	"homeserver/rooms"
)

// The benchmarks start the real server in-process and build their rooms
// through its services (s.Srv.Rooms(), s.Srv.Accounts()), which is much
// faster than doing the same over HTTP; what they measure goes through the
// HTTP handlers. They only run with -bench.

// sbUser is a user with an access token.
type sbUser struct{ id, token string }

// sbRoom is a room of a test server with its members.
type sbRoom struct {
	s       *testserver.Server
	roomID  string
	creator sbUser
	members []sbUser // members[0] is the creator
}

func sbRegister(b *testing.B, s *testserver.Server, localpart string) sbUser {
	b.Helper()
	// No password: no bcrypt.
	c, err := s.Srv.Accounts().Register(context.Background(), accounts.RegisterRequest{Localpart: localpart})
	if err != nil {
		b.Fatal(err)
	}
	return sbUser{id: c.UserID, token: c.AccessToken}
}

// sbBuild creates a public room with members users (the creator included)
// and fills it with messages until the room holds at least events events.
func sbBuild(b *testing.B, members, events int) *sbRoom {
	b.Helper()
	start := time.Now()
	ctx := context.Background()
	s := testserver.Start(b, "")
	rs := s.Srv.Rooms()
	creator := sbRegister(b, s, "creator")
	roomID, err := rs.CreateRoom(ctx, creator.id, rooms.CreateRoomRequest{Preset: rooms.PresetPublic})
	if err != nil {
		b.Fatal(err)
	}
	r := &sbRoom{s: s, roomID: roomID, creator: creator, members: []sbUser{creator}}
	for i := 1; i < members; i++ {
		u := sbRegister(b, s, fmt.Sprintf("member%05d", i))
		if _, err := rs.Join(ctx, u.id, roomID, ""); err != nil {
			b.Fatal(err)
		}
		r.members = append(r.members, u)
	}
	have, err := rs.MaxPos(ctx) // one room: every event is in it
	if err != nil {
		b.Fatal(err)
	}
	for i := int(have); i < events; i++ {
		sender := r.members[i%len(r.members)]
		r.send(b, sender, fmt.Sprintf("filler %d", i))
	}
	b.Logf("built a room of %d members and %d events in %v", members, max(int(have), events), time.Since(start).Round(time.Millisecond))
	return r
}

func (r *sbRoom) send(b *testing.B, u sbUser, body string) string {
	b.Helper()
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	id, err := r.s.Srv.Rooms().Send(context.Background(), rooms.SendRequest{Sender: u.id, RoomID: r.roomID, Type: "m.room.message", Content: content})
	if err != nil {
		b.Fatal(err)
	}
	return id
}

// sbNextBatch reads next_batch from a /sync answer.
func sbNextBatch(b *testing.B, body []byte) string {
	b.Helper()
	var resp struct {
		NextBatch string `json:"next_batch"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || resp.NextBatch == "" {
		b.Fatalf("/sync answer: %v: %.300s", err, body)
	}
	return resp.NextBatch
}

// ---------------------------------------------------------------------------
// Incremental sync cost

// BenchmarkSyncIncremental measures one incremental /sync (through the HTTP
// handler, without the network) of a member of a room in which exactly one
// new message arrived since the member's token, for rooms of different
// history lengths and member counts. The cost should not grow with either.
func BenchmarkSyncIncremental(b *testing.B) {
	for _, c := range []struct{ members, events int }{
		{10, 100},
		{10, 10_000},
		{1000, 1100},
		{1000, 10_000},
	} {
		b.Run(fmt.Sprintf("members=%d/events=%d", c.members, c.events), func(b *testing.B) {
			r := sbBuild(b, c.members, c.events)
			h := r.s.Srv.Handler(r.s.Config.Listeners[0])
			for _, f := range []struct{ name, filter string }{
				{"default", ""},
				{"lazy", `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":20}}}`},
			} {
				b.Run("filter="+f.name, func(b *testing.B) { sbIncremental(b, r, h, f.filter) })
			}
		})
	}
}

func sbIncremental(b *testing.B, r *sbRoom, h http.Handler, filter string) {
	reader, sender := r.members[len(r.members)-1], r.members[len(r.members)/2]
	if len(r.members) == 1 {
		sender = r.creator
	}
	doSync := func(since string) []byte {
		q := url.Values{"timeout": {"0"}}
		if since != "" {
			q.Set("since", since)
		}
		if filter != "" {
			q.Set("filter", filter)
		}
		req := httptest.NewRequest("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+reader.token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("/sync: %d %s", rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	since := sbNextBatch(b, doSync(""))
	var last []byte
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		n++
		id := r.send(b, sender, fmt.Sprintf("new %d", n))
		b.StartTimer()
		last = doSync(since)
		b.StopTimer()
		if !bytes.Contains(last, []byte(id)) {
			b.Fatalf("incremental sync lacks the new message %s: %.500s", id, last)
		}
		since = sbNextBatch(b, last)
		b.StartTimer()
	}
	b.ReportMetric(float64(len(last)), "resp-bytes")
}

// ---------------------------------------------------------------------------
// Wake-up latency

// BenchmarkSyncWakeup measures how soon long-polling /syncs answer once a
// message is sent: n members of one room wait on /sync over HTTP, one
// sender sends, and each member's latency runs from the send's HTTP answer
// to its own /sync's answer. ns/op is the time until the last member has
// its answer. The members sync with set_presence=offline so that only the
// message wakes them (an online member's presence is written at most once
// a minute, not per message).
func BenchmarkSyncWakeup(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) { sbWakeup(b, n) })
	}
}

func sbWakeup(b *testing.B, n int) {
	r := sbBuild(b, n+1, 0)
	s := r.s
	transport := &http.Transport{MaxIdleConnsPerHost: n + 16, IdleConnTimeout: 5 * time.Minute}
	client := &http.Client{Transport: transport, Timeout: 5 * time.Minute}
	b.Cleanup(transport.CloseIdleConnections)
	do := func(method, path, token string, body []byte) ([]byte, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, s.URL+path, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
		return data, err
	}
	members := r.members[1:]
	// A sync token is a position of the whole server: one member's serves
	// them all.
	first, err := do("GET", "/_matrix/client/v3/sync?timeout=0&set_presence=offline", members[0].token, nil)
	if err != nil {
		b.Fatal(err)
	}
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = sbNextBatch(b, first)
	}
	returned := make([]time.Time, n)
	bodies := make([][]byte, n)
	errs := make([]error, n)
	var lat, fromReq []time.Duration
	round := 0
	sendPath := "/_matrix/client/v3/rooms/" + url.PathEscape(r.roomID) + "/send/m.room.message/"

	for b.Loop() {
		b.StopTimer()
		round++
		var wg sync.WaitGroup
		for i, m := range members {
			wg.Go(func() {
				q := url.Values{"since": {tokens[i]}, "timeout": {"120000"}, "set_presence": {"offline"}}
				bodies[i], errs[i] = do("GET", "/_matrix/client/v3/sync?"+q.Encode(), m.token, nil)
				returned[i] = time.Now()
			})
		}
		sbWaitParked(b, n)
		b.StartTimer()
		body, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("round %d", round)})
		sending := time.Now()
		ans, err := do("PUT", sendPath+fmt.Sprintf("bench%d", round), r.creator.token, body)
		sent := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		b.StopTimer()
		var sendResp struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(ans, &sendResp)
		for i := range members {
			if errs[i] != nil {
				b.Fatal(errs[i])
			}
			if !bytes.Contains(bodies[i], []byte(sendResp.EventID)) {
				b.Fatalf("member %d woke without the message %s: %.300s", i, sendResp.EventID, bodies[i])
			}
			tokens[i] = sbNextBatch(b, bodies[i])
			// A member may have its answer before the sender has its own.
			lat = append(lat, max(returned[i].Sub(sent), 0))
			fromReq = append(fromReq, returned[i].Sub(sending))
		}
		b.StartTimer()
	}
	pct := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		return float64(ds[min(int(p*float64(len(ds))), len(ds)-1)]) / float64(time.Millisecond)
	}
	// From the send's answer, as a sender sees it, ...
	b.ReportMetric(pct(lat, 0.50), "p50-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	b.ReportMetric(pct(lat, 1), "max-ms")
	// ... and from the send's request, which includes writing the event.
	b.ReportMetric(pct(fromReq, 0.50), "p50-from-req-ms")
	b.ReportMetric(pct(fromReq, 0.99), "p99-from-req-ms")
}

// sbWaitParked waits until n /sync requests are parked on the notifier,
// found in the goroutine dump: a wake-up can only be measured for a sync
// that is waiting for one.
func sbWaitParked(b testing.TB, n int) {
	b.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(2 * time.Minute) // a safety net
	for {
		for {
			k := runtime.Stack(buf, true)
			if k < len(buf) {
				buf = buf[:k]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		parked := 0
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(header, "[select") && strings.Contains(g, "homeserver/syncapi.(*Service).Sync(") {
				parked++
			}
		}
		if parked >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d syncs parked", parked, n)
		}
		buf = buf[:cap(buf)]
		time.Sleep(5 * time.Millisecond)
	}
}
