package rooms

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// History is the store's part of the room's history from other servers:
// topological pagination and the holes backfill fills.
type History interface {
	// RoomEventsTopological pages through a room's timeline in (depth,
	// stream position) order: backward, the events at or before from and
	// after to; forward, those after from and at or before to.
	RoomEventsTopological(ctx context.Context, roomID string, from, to TopoPoint, forward bool, limit int) ([]Stored, error)
	// TopoPointAt is the point just after the room's newest timeline event
	// at or before a stream position.
	TopoPointAt(ctx context.Context, roomID string, pos int64) (TopoPoint, error)
	// BackwardExtremities returns holes named by timeline events of depth
	// at most maxDepth, deepest first.
	BackwardExtremities(ctx context.Context, roomID string, maxDepth int64, limit int) ([]Hole, error)
	// PromoteBackfilled moves stored outliers into the timeline.
	PromoteBackfilled(ctx context.Context, roomID string, events []*pdu.Event) error
}

// Hole is an event named as a prev_event by a timeline event (of Depth)
// that is not in the timeline here.
type Hole struct {
	EventID string
	Depth   int64
}

// TopoPoint is a point of a room's history in topological order: just
// after the event of this depth and stream position.
type TopoPoint struct{ Depth, Pos int64 }

var (
	topoMin = TopoPoint{math.MinInt64, math.MinInt64}
	topoMax = TopoPoint{math.MaxInt64, math.MaxInt64}
)

// format renders a topological pagination token.
func (p TopoPoint) format() string {
	return "t" + strconv.FormatInt(p.Depth, 10) + "_" + strconv.FormatInt(p.Pos, 10)
}

// before is the point just before e, where backward pagination goes on.
func pointBefore(e Stored) TopoPoint { return TopoPoint{e.Depth, e.Pos - 1} }

// pointAfter is the point just after e, where forward pagination goes on.
func pointAfter(e Stored) TopoPoint { return TopoPoint{e.Depth, e.Pos} }

// parseTopoToken reads a token of /messages: a topological one
// ("t<depth>_<pos>", as /messages returns), or a stream one (from /sync,
// /context or an earlier version) placed after the room's newest event at
// that position.
func (s *Service) parseTopoToken(ctx context.Context, roomID, tok string) (TopoPoint, error) {
	if rest, ok := strings.CutPrefix(tok, "t"); ok {
		if d, p, ok := strings.Cut(rest, "_"); ok {
			depth, err1 := strconv.ParseInt(d, 10, 64)
			pos, err2 := strconv.ParseInt(p, 10, 64)
			if err1 != nil || err2 != nil {
				return TopoPoint{}, mxhttp.InvalidParam("Invalid pagination token %q", tok)
			}
			return TopoPoint{depth, pos}, nil
		}
	}
	pos, err := ParseToken(tok)
	if err != nil {
		return TopoPoint{}, err
	}
	return s.store.TopoPointAt(ctx, roomID, pos)
}

// Bounds of backfill inside one /messages request.
const (
	backfillTime   = 10 * time.Second
	backfillRounds = 10
	backfillBatch  = 100
	backfillRetry  = time.Minute
)

// topHoles returns the holes of the room named by the deepest timeline
// events at or above maxDepth, and that depth, leaving out holes no
// server could fill lately.
func (s *Service) topHoles(ctx context.Context, roomID string, maxDepth int64) ([]string, int64, error) {
	holes, err := s.store.BackwardExtremities(ctx, roomID, maxDepth, 50)
	if err != nil {
		return nil, 0, err
	}
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	now := s.now()
	var out []string
	var depth int64
	for _, h := range holes {
		if t, ok := s.backfillFailed[roomID+" "+h.EventID]; ok && now.Sub(t) < backfillRetry {
			continue
		}
		if len(out) > 0 && h.Depth != depth {
			break
		}
		out, depth = append(out, h.EventID), h.Depth
	}
	return out, depth, nil
}

// backfill fetches history before holes from the room's other servers and
// adds what the auth rules allow to the timeline. It returns how many
// events it added.
func (s *Service) backfill(ctx context.Context, roomID string, holes []string, limit int) (int, error) {
	evs, err := s.remote.Backfill(ctx, roomID, holes, limit)
	if err != nil || len(evs) == 0 {
		s.backfillMu.Lock()
		if s.backfillFailed == nil {
			s.backfillFailed = map[string]time.Time{}
		}
		for _, id := range holes {
			s.backfillFailed[roomID+" "+id] = s.now()
		}
		s.backfillMu.Unlock()
		return 0, err
	}
	return s.StoreBackfilled(ctx, roomID, evs)
}

// StoreBackfilled adds events another server returned from /backfill
// (hashes and signatures checked, auth chains stored) to the room's
// timeline, below what this server saw live: each must be allowed by its
// own auth events; those that are not are rejected and remembered.
func (s *Service) StoreBackfilled(ctx context.Context, roomID string, evs []*pdu.Event) (int, error) {
	s.write.Lock()
	defer s.write.Unlock()
	unlock, err := s.store.LockRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	defer unlock()
	rejected, err := s.ReceiveOutliers(ctx, roomID, evs)
	if err != nil {
		return 0, err
	}
	ids := make([]string, 0, len(evs))
	for _, ev := range evs {
		ids = append(ids, ev.ID())
	}
	stored, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return 0, err
	}
	outliers := map[string]bool{}
	for _, e := range stored {
		if e.Pos < 0 {
			outliers[e.EventID] = true
		}
	}
	var accepted []*pdu.Event
	for _, ev := range evs {
		if _, bad := rejected[ev.ID()]; !bad && ev.RoomID() == roomID && outliers[ev.ID()] {
			accepted = append(accepted, ev)
		}
	}
	slices.SortStableFunc(accepted, func(a, b *pdu.Event) int { return int(a.Depth() - b.Depth()) })
	if err := s.store.PromoteBackfilled(ctx, roomID, accepted); err != nil {
		return 0, fmt.Errorf("rooms: storing backfilled events: %w", err)
	}
	return len(accepted), nil
}

// RejectedEvents returns the reasons of those of ids that were rejected.
func (s *Service) RejectedEvents(ctx context.Context, ids []string) (map[string]string, error) {
	return s.store.RejectedEvents(ctx, ids)
}
