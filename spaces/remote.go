package spaces

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Bounds of asking other servers about a room.
const (
	// serverTimeout bounds one server's answer, and roomTimeout all the
	// tries for one room, so that dead servers in via slow a page down by
	// a bounded time.
	serverTimeout = 5 * time.Second
	roomTimeout   = 15 * time.Second
	// answerTTL is how long another server's answer is reused, as the
	// spec suggests: paging walks the tree again, and needs the same
	// answers. A failure is remembered for less.
	answerTTL  = 5 * time.Minute
	failureTTL = 30 * time.Second
	maxCached  = 1024
)

// fetch asks the servers in via, in turn, for the room's hierarchy and
// returns the first answer about that room; nil when there is no remote,
// no server answers, or the request is cancelled.
func (s *Service) fetch(ctx context.Context, roomID string, via []string, suggestedOnly bool) *FederationHierarchy {
	if s.remote == nil {
		return nil
	}
	key := cacheKey{roomID: roomID, suggestedOnly: suggestedOnly}
	if ans, ok := s.cache.get(key); ok {
		return ans
	}
	roomCtx, cancel := context.WithTimeout(ctx, roomTimeout)
	defer cancel()
	var tried []string
	for _, server := range via {
		if server == s.rooms.ServerName() || slices.Contains(tried, server) {
			continue
		}
		tried = append(tried, server)
		serverCtx, cancelServer := context.WithTimeout(roomCtx, serverTimeout)
		ans, err := s.remote.Hierarchy(serverCtx, server, roomID, suggestedOnly)
		cancelServer()
		if err == nil && ans.Room.RoomID == roomID {
			s.cache.put(key, ans, answerTTL)
			return ans
		}
		s.log.Debug("no space hierarchy from a server", "room_id", roomID, "server", server, "err", err)
		if roomCtx.Err() != nil {
			break
		}
	}
	if ctx.Err() == nil && len(tried) > 0 {
		s.cache.put(key, nil, failureTTL)
	}
	return nil
}

type cacheKey struct {
	roomID        string
	suggestedOnly bool
}

type cached struct {
	ans     *FederationHierarchy // nil: no server answered
	expires time.Time
}

// answerCache keeps other servers' answers for a while. Cached answers are
// shared and never modified.
type answerCache struct {
	now     func() time.Time
	mu      sync.Mutex
	entries map[cacheKey]cached
}

func newAnswerCache(now func() time.Time) *answerCache {
	return &answerCache{now: now, entries: map[cacheKey]cached{}}
}

func (c *answerCache) get(k cacheKey) (*FederationHierarchy, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || !c.now().Before(e.expires) {
		return nil, false
	}
	return e.ans, true
}

func (c *answerCache) put(k cacheKey, ans *FederationHierarchy, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.entries) >= maxCached {
		for key, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, key)
			}
		}
		// Still full: any entry makes room, the cache being a shortcut.
		for key := range c.entries {
			if len(c.entries) < maxCached {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = cached{ans: ans, expires: now.Add(ttl)}
}
