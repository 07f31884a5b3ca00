package storage

import "testing"

func TestGroupsNamed(t *testing.T) {
	for _, c := range []struct {
		query string
		want  groupMask
	}{
		{`DELETE FROM access_tokens WHERE token_hash = $1`, 1 << authTables},
		{`UPDATE devices SET last_seen_ts = $1 WHERE user_id = $2`, 1<<authTables | 1<<keyCountTables},
		{`UPDATE users SET deactivated = TRUE WHERE user_id = $1`, 1<<authTables | 1<<keyCountTables},
		{`INSERT INTO one_time_keys (user_id, device_id) VALUES ($1, $2)`, 1 << keyCountTables},
		{`UPDATE fallback_keys SET used = TRUE`, 1 << keyCountTables},
		{`INSERT INTO ratelimit_override (user_id) VALUES ($1)`, 1 << authTables},
		// Other tables, whatever their columns or names hold.
		{`INSERT INTO events (event_id, user_id) VALUES ($1, $2)`, 0},
		{`INSERT INTO user_directory_users (x) VALUES ($1)`, 0},
		{`DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id`, 0},
		{`SELECT devices_count FROM stats`, 0},
		{`DELETE FROM room_devices_x`, 0},
		{`devices`, 1<<authTables | 1<<keyCountTables},
		{`WITH x AS (SELECT 1) DELETE FROM devices WHERE 1 = 0`, 1<<authTables | 1<<keyCountTables},
		// A plain read writes nothing.
		{`SELECT user_id FROM users WHERE user_id = $1`, 0},
		{`  (SELECT 1 FROM access_tokens)`, 0},
	} {
		if got := groupsWritten(c.query); got != c.want {
			t.Errorf("%q: %b, want %b", c.query, got, c.want)
		}
	}
}

// A read is kept only when no write to its tables overlapped it, and used
// only until the next one.
func TestCachedReadGenerations(t *testing.T) {
	g := &tableGens{}
	c := &genCache[int]{}
	reads := 0
	read := func(v int) func() (int, error) {
		return func() (int, error) { reads++; return v, nil }
	}
	id := func(v int) int { return v }
	if v, _ := cachedRead(g, authTables, c, "k", id, read(1)); v != 1 || reads != 1 {
		t.Fatalf("first read: %d after %d reads", v, reads)
	}
	if v, _ := cachedRead(g, authTables, c, "k", id, read(2)); v != 1 || reads != 1 {
		t.Fatalf("kept read: %d after %d reads", v, reads)
	}
	// Another group's write leaves it.
	g.begin(1 << keyCountTables)
	g.end(1 << keyCountTables)
	if v, _ := cachedRead(g, authTables, c, "k", id, read(2)); v != 1 {
		t.Fatalf("after another group's write: %d", v)
	}
	// A write under way: read afresh, and not kept.
	g.begin(1 << authTables)
	if v, _ := cachedRead(g, authTables, c, "k", id, read(3)); v != 3 {
		t.Fatalf("during a write: %d", v)
	}
	g.end(1 << authTables)
	if v, _ := cachedRead(g, authTables, c, "k", id, read(4)); v != 4 {
		t.Fatalf("after the write: %d", v)
	}
	// A write that begins and ends while the read runs: not kept.
	overlapped := func() (int, error) {
		g.begin(1 << authTables)
		g.end(1 << authTables)
		return 5, nil
	}
	if v, _ := cachedRead(g, authTables, c, "k2", id, overlapped); v != 5 {
		t.Fatalf("overlapped read: %d", v)
	}
	if v, _ := cachedRead(g, authTables, c, "k2", id, read(6)); v != 6 {
		t.Fatalf("an overlapped read was kept: %d", v)
	}
	// A query of the pool itself writing the group stops caching it.
	g.stopCaching(1 << authTables)
	if v, _ := cachedRead(g, authTables, c, "k2", id, read(7)); v != 7 {
		t.Fatalf("after caching stopped: %d", v)
	}
	if v, _ := cachedRead(g, authTables, c, "k2", id, read(8)); v != 8 {
		t.Fatalf("kept after caching stopped: %d", v)
	}
}
