package search_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/server"
	"homeserver/storage"
)

// benchEvents is the size of the log searched.
const benchEvents = 100_000

var syllables = []string{"ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "pe", "do", "gu"}

// word is the vocabulary's i-th word: three or four syllables.
func word(i int) string {
	var b strings.Builder
	for range 3 {
		b.WriteString(syllables[i%len(syllables)])
		i /= len(syllables)
	}
	if i > 0 {
		b.WriteString(syllables[i%len(syllables)])
	}
	return b.String()
}

// BenchmarkSearch measures POST /search over HTTP on a log of 100,000
// m.room.message events in 20 rooms (8 to 15 words each, drawn from a
// vocabulary of 5,000 with a Zipf distribution), the searcher joined to
// 10 of the rooms. The events go straight into the events table (building
// 100,000 signed events would measure the rooms package); the search
// reader then indexes the whole log from the start, as on a deployment's
// first start with search, and its time is logged. Each case reports the
// p50 and p99 latency of its iterations. PostgreSQL when
// HOMESERVER_TEST_POSTGRES is set, as for every test server.
func BenchmarkSearch(b *testing.B) {
	s := testserver.Start(b, "")
	searcher := s.Register("searcher", "pw-searcher-1")
	var users []testserver.User
	for i := range 4 {
		users = append(users, s.Register(fmt.Sprintf("user%d", i), "pw-user-1"))
	}
	var roomIDs []string
	for i := range 20 {
		owner := users[i%len(users)]
		room := s.CreateRoom(owner, map[string]any{"preset": "public_chat"})
		for _, u := range users {
			if u.ID != owner.ID {
				s.Join(u, room)
			}
		}
		if i < 10 {
			s.Join(searcher, room)
		}
		roomIDs = append(roomIDs, room)
	}
	s.Stop()
	fill(b, s, roomIDs, users)
	start := time.Now()
	s.Restart()
	last := word(0) + " lastevent"
	for {
		r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/search", users[0].Token, searchBody("lastevent", "recent"))
		if strings.Contains(string(r.Body), last) {
			break
		}
		if time.Since(start) > 30*time.Minute {
			b.Fatal("index not caught up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Logf("engine %s: indexed %d events in %v", s.Config.Database.Name, benchEvents, time.Since(start).Round(time.Millisecond))

	for _, c := range []struct{ name, term, order string }{
		{"common word/rank", word(0), "rank"},
		{"common word/recent", word(0), "recent"},
		{"medium word/rank", word(50), "rank"},
		{"rare word/rank", word(4000), "rank"},
		{"two words/rank", word(1) + " " + word(10), "rank"},
		{"prefix/rank", word(100)[:4], "rank"},
		{"no match/rank", "zzzzqqq", "rank"},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := searchBody(c.term, c.order)
			var took []time.Duration
			var count float64
			for b.Loop() {
				t0 := time.Now()
				r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/search", searcher.Token, body)
				took = append(took, time.Since(t0))
				count, _ = r.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)["count"].(float64)
			}
			slices.Sort(took)
			pct := func(p float64) float64 {
				return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(count, "count")
		})
	}
}

func searchBody(term, order string) map[string]any {
	return map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
		"search_term": term, "order_by": order}}}
}

// fill writes benchEvents messages into the stopped server's database,
// after its last event, and moves every other reader of the log past
// them: only search's reader is to read them.
func fill(b *testing.B, s *testserver.Server, roomIDs []string, users []testserver.User) {
	opts := server.StorageOptions(s.Config.Database)
	driver, dsn := "sqlite", opts.Path
	if opts.Engine == storage.Postgres {
		driver, dsn = "pgx", opts.DSN
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	type roomAt struct{ group, depth int64 }
	at := map[string]*roomAt{}
	for _, room := range roomIDs {
		var r roomAt
		if err := db.QueryRow(`SELECT state_group, depth FROM events WHERE room_id = $1 ORDER BY stream_pos DESC LIMIT 1`, room).Scan(&r.group, &r.depth); err != nil {
			b.Fatal(err)
		}
		at[room] = &r
	}
	var pos int64
	if err := db.QueryRow(`SELECT MAX(stream_pos) FROM events`).Scan(&pos); err != nil {
		b.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	stmt, err := tx.Prepare(`INSERT INTO events (stream_pos, event_id, room_id, type, sender, depth, origin_server_ts, state_group, json)
		VALUES ($1, $2, $3, 'm.room.message', $4, $5, $6, $7, $8)`)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.1, 1, 4999)
	ts := time.Now().Add(-30 * 24 * time.Hour).UnixMilli()
	for i := range benchEvents {
		room := roomIDs[i%len(roomIDs)]
		r := at[room]
		r.depth++
		pos++
		ts += 20
		words := make([]string, 8+rng.IntN(8))
		for j := range words {
			words[j] = word(int(zipf.Uint64()))
		}
		body := strings.Join(words, " ")
		if i == benchEvents-1 {
			body = word(0) + " lastevent"
		}
		sender := users[rng.IntN(len(users))].ID
		js, _ := json.Marshal(map[string]any{
			"type": "m.room.message", "room_id": room, "sender": sender, "depth": r.depth, "origin_server_ts": ts,
			"content":     map[string]any{"msgtype": "m.text", "body": body},
			"auth_events": []string{}, "prev_events": []string{}, "hashes": map[string]string{"sha256": "x"}, "signatures": map[string]any{},
		})
		if _, err := stmt.Exec(pos, fmt.Sprintf("$bench%d", i), room, sender, r.depth, ts, r.group, string(js)); err != nil {
			b.Fatal(err)
		}
	}
	for _, q := range []string{
		`UPDATE stream_counters SET pos = $1 WHERE name = 'events'`,
		`UPDATE reader_cursors SET pos = $1 WHERE stream = 'events' AND reader <> 'search'`,
	} {
		if _, err := tx.Exec(q, pos); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := tx.Exec(`DELETE FROM reader_cursors WHERE reader = 'search'`); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}
