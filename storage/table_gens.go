package storage

import (
	"strings"
	"sync"
)

// With SQLite this process is the database's one writer, and every write
// goes through the writer pool: a cache of rows that every request reads
// (what an access token resolves to, a device's key counts, the user's
// presence and memberships, which each /sync reads) can then be kept
// exactly. Each cached group of tables has a generation, which every
// statement of the writer that may write one of its tables (any statement
// but a plain SELECT that names it) moves when it starts and again once
// its transaction is committed or rolled back. A read is kept only when no
// such write was under way and none began or ended while it ran, and is
// used only while the generation stays the same: a statement the check
// misjudges costs a cache miss, never a stale answer. PostgreSQL, with
// several processes, keeps no such cache.
type tableGroup int

const (
	authTables       tableGroup = iota // what an access token resolves to
	keyCountTables                     // a device's one-time and fallback key counts
	presenceTables                     // users' presence
	membershipTables                   // a user's memberships, from the rooms' current state
	numTableGroups
)

var groupTables = [numTableGroups][]string{
	authTables:       {"access_tokens", "users", "devices", "refresh_tokens", "ratelimit_override"},
	keyCountTables:   {"one_time_keys", "fallback_keys", "devices", "users"},
	presenceTables:   {"presence"},
	membershipTables: {"current_state"},
}

type groupMask uint8

// groupsWritten returns the groups one of whose tables a statement that
// may write names (as a whole identifier): any statement but a plain
// SELECT.
func groupsWritten(query string) groupMask {
	q := strings.TrimLeft(query, " \t\r\n(")
	if len(q) >= 6 && strings.EqualFold(q[:6], "SELECT") {
		return 0
	}
	return groupsNamed(query)
}

// groupsNamed returns the groups one of whose tables the statement names
// (as a whole identifier).
func groupsNamed(query string) groupMask {
	var m groupMask
	for g, tables := range groupTables {
		for _, name := range tables {
			if namesTable(query, name) {
				m |= 1 << g
				break
			}
		}
	}
	return m
}

func namesTable(query, name string) bool {
	for i := 0; ; {
		j := strings.Index(query[i:], name)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		if (start == 0 || !identChar(query[start-1])) && (end == len(query) || !identChar(query[end])) {
			return true
		}
		i = end
	}
}

func identChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

type tableGens struct {
	mu       sync.Mutex
	gen      [numTableGroups]uint64
	inflight [numTableGroups]int
	// uncached are groups written by a query of the pool itself, outside
	// a transaction (a DELETE ... RETURNING): its rows are read after it
	// returns, so its end is not seen, and the group is kept no more.
	// (Write those through db.tx.)
	uncached groupMask
}

// begin and end bracket a write to the groups.
func (g *tableGens) begin(m groupMask) { g.move(m, 1) }
func (g *tableGens) end(m groupMask)   { g.move(m, -1) }

func (g *tableGens) move(m groupMask, inflight int) {
	if m == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range numTableGroups {
		if m&(1<<i) != 0 {
			g.inflight[i] += inflight
			g.gen[i]++
		}
	}
}

func (g *tableGens) stopCaching(m groupMask) {
	if m == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.uncached |= m
}

// current returns the group's generation, and false while a write to it
// is under way.
func (g *tableGens) current(group tableGroup) (uint64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen[group], g.inflight[group] == 0 && g.uncached&(1<<group) == 0
}

// genCache keeps values by key, each valid for the generation of the
// group it was read at.
type genCache[V any] struct {
	mu sync.Mutex
	m  map[string]genEntry[V]
}

type genEntry[V any] struct {
	gen uint64
	v   V
}

// maxGenCached bounds each cache; it is emptied when full.
const maxGenCached = 100_000

func (c *genCache[V]) get(key string, gen uint64) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || e.gen != gen {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *genCache[V]) put(key string, gen uint64, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxGenCached {
		c.m = map[string]genEntry[V]{}
	}
	c.m[key] = genEntry[V]{gen, v}
}

// cachedRead answers key from the cache when the group has not been
// written since it was kept, or runs read and keeps its answer when no
// write to the group overlapped it. Without generations (PostgreSQL) read
// simply runs.
func cachedRead[V any](gens *tableGens, group tableGroup, c *genCache[V], key string, clone func(V) V, read func() (V, error)) (V, error) {
	if gens == nil {
		return read()
	}
	gen, quiet := gens.current(group)
	if quiet {
		if v, ok := c.get(key, gen); ok {
			return clone(v), nil
		}
	}
	v, err := read()
	if err != nil || !quiet {
		return v, err
	}
	if after, still := gens.current(group); still && after == gen {
		c.put(key, gen, v)
	}
	return clone(v), nil
}
