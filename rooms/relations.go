package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
	"slices"
)

// Relation types the server aggregates.
const (
	RelThread    = "m.thread"
	RelReplace   = "m.replace"
	RelReference = "m.reference"
)

// maxRecursion is how many levels of relations /relations follows with
// recurse=true (the spec asks for at least 3).
const maxRecursion = 3

// RelationQuery selects the children of an event for RelatedEvents.
type RelationQuery struct {
	RoomID, Parent string
	// RelType and EventType, when set, must match at every level.
	RelType, EventType string
	// Depth is how many levels of relations to follow: 1 is the direct
	// children only.
	Depth int
	// After and Before bound the stream positions, exclusive.
	After, Before int64
	Forward       bool
	Limit         int
}

// ThreadRoot is a thread's root with the position of its latest event.
type ThreadRoot struct {
	RootID    string
	LatestPos int64
}

// ThreadSummary aggregates a thread's events.
type ThreadSummary struct {
	Count int64
	// Participated reports whether the user sent a reply in the thread.
	Participated bool
	Latest       Stored
}

// RelatedEvent is an event with the parent it relates to.
type RelatedEvent struct {
	Parent, RelType string
	Event           Stored
}

// RelationsStore is the relations index's part of Store.
type RelationsStore interface {
	// RelatedEvents pages through the children of an event (see
	// RelationQuery), leaving out redacted ones, whose relation is gone.
	RelatedEvents(ctx context.Context, q RelationQuery) ([]Stored, error)
	// ThreadRoots lists the room's thread roots by the position of their
	// latest unredacted m.thread event, newest first, taking those whose
	// latest event is before the position before; with participant set,
	// only threads it started or replied in.
	ThreadRoots(ctx context.Context, roomID string, before int64, participant string, limit int) ([]ThreadRoot, error)
	// ThreadSummaries aggregates the unredacted m.thread children of each of
	// roots that has any.
	ThreadSummaries(ctx context.Context, roomID string, roots []string, user string) (map[string]ThreadSummary, error)
	// RelationChildren returns the unredacted children in the room of any of
	// parents with one of relTypes, in stream order.
	RelationChildren(ctx context.Context, roomID string, parents, relTypes []string) ([]RelatedEvent, error)
	// EventsByTime pages through a room's events ordered by
	// (origin_server_ts, stream position), starting after (ts, pos)
	// exclusive: ascending when forward, else descending.
	EventsByTime(ctx context.Context, roomID string, ts, pos int64, forward bool, limit int) ([]Stored, error)
}

// RelationsQuery is /relations' parameters.
type RelationsQuery struct {
	RelType, EventType string
	From, To           string
	Forward            bool
	Limit              int
	// Recurse is nil when the client did not say.
	Recurse *bool
}

// RelationsResult is /relations' answer.
type RelationsResult struct {
	Chunk          []json.RawMessage `json:"chunk"`
	NextBatch      string            `json:"next_batch,omitempty"`
	PrevBatch      string            `json:"prev_batch,omitempty"`
	RecursionDepth *int              `json:"recursion_depth,omitempty"`
}

// maxRelationsLimit bounds the page size of /relations and /threads.
const maxRelationsLimit = 100

// Relations pages through the children of an event the user can see,
// newest first unless Forward, with the same tokens as /messages: from
// "p<N>" backward yields children at or before position N, forward those
// after it; to stops the walk at the same point from the other side.
// Children the user cannot see are left out; each returned event carries
// its bundled aggregations.
func (s *Service) Relations(ctx context.Context, user, roomID, eventID string, q RelationsQuery) (*RelationsResult, error) {
	v, _, err := s.visibleEvent(ctx, user, roomID, eventID)
	if err != nil {
		return nil, err
	}
	depth := 1
	res := &RelationsResult{Chunk: []json.RawMessage{}}
	if q.Recurse != nil {
		if *q.Recurse {
			depth = maxRecursion
		}
		res.RecursionDepth = &depth
	}
	// The walk runs from cursor to bound, both in the tokens' convention.
	var cursor, bound int64
	if q.Forward {
		bound = math.MaxInt64
	} else {
		if cursor, err = s.store.MaxPos(ctx); err != nil {
			return nil, err
		}
	}
	if q.From != "" {
		if cursor, err = ParseToken(q.From); err != nil {
			return nil, err
		}
		res.PrevBatch = q.From
	}
	if q.To != "" {
		to, err := ParseToken(q.To)
		if err != nil {
			return nil, err
		}
		bound = to
		if q.Forward && to < math.MaxInt64 {
			bound = to + 1
		}
	}
	rq := RelationQuery{RoomID: roomID, Parent: eventID, RelType: q.RelType, EventType: q.EventType, Depth: depth, Forward: q.Forward}
	fetch := func(cursor int64, n int) ([]Stored, error) {
		rq.Limit = n
		if q.Forward {
			rq.After, rq.Before = cursor, bound
		} else {
			rq.After, rq.Before = bound, cursor+1
		}
		return s.store.RelatedEvents(ctx, rq)
	}
	step := func(e Stored) int64 { return e.Pos - 1 }
	if q.Forward {
		step = func(e Stored) int64 { return e.Pos }
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 10
	}
	picked, end, more, err := collect(cursor, min(limit, maxRelationsLimit), fetch, step, v.canSee)
	if err != nil {
		return nil, err
	}
	if more {
		res.NextBatch = FormatToken(end)
	}
	if res.Chunk, err = s.withAggregations(ctx, v, roomID, picked); err != nil {
		return nil, err
	}
	return res, nil
}

// ThreadsQuery is /threads' parameters.
type ThreadsQuery struct {
	// Participated restricts the list to threads the user started or
	// replied in.
	Participated bool
	From         string
	Limit        int
}

// ThreadsResult is /threads' answer.
type ThreadsResult struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

// Threads lists the thread roots of a room the user can see, the most
// recently active first, each with its bundled aggregations. A token
// "p<N>" continues with the threads whose latest event is at or before
// position N.
func (s *Service) Threads(ctx context.Context, user, roomID string, q ThreadsQuery) (*ThreadsResult, error) {
	v, err := s.roomReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	var cursor int64
	if q.From != "" {
		if cursor, err = ParseToken(q.From); err != nil {
			return nil, err
		}
	} else if cursor, err = s.store.MaxPos(ctx); err != nil {
		return nil, err
	}
	participant := ""
	if q.Participated {
		participant = user
	}
	type thread struct {
		ThreadRoot
		root Stored
	}
	fetch := func(cursor int64, n int) ([]thread, error) {
		roots, err := s.store.ThreadRoots(ctx, roomID, cursor+1, participant, n)
		if err != nil || len(roots) == 0 {
			return nil, err
		}
		ids := make([]string, len(roots))
		for i, r := range roots {
			ids[i] = r.RootID
		}
		evs, err := s.store.GetEvents(ctx, ids)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]Stored, len(evs))
		for _, e := range evs {
			byID[e.EventID] = e
		}
		out := make([]thread, len(roots))
		for i, r := range roots {
			out[i] = thread{ThreadRoot: r, root: byID[r.RootID]}
		}
		return out, nil
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 10
	}
	picked, end, more, err := collect(cursor, min(limit, maxRelationsLimit), fetch,
		func(t thread) int64 { return t.LatestPos - 1 },
		func(t thread) bool { return t.root.EventID != "" && v.canSee(t.root) })
	if err != nil {
		return nil, err
	}
	res := &ThreadsResult{}
	if more {
		res.NextBatch = FormatToken(end)
	}
	roots := make([]Stored, len(picked))
	for i, t := range picked {
		roots[i] = t.root
	}
	if res.Chunk, err = s.withAggregations(ctx, v, roomID, roots); err != nil {
		return nil, err
	}
	return res, nil
}

// withAggregations renders events for the viewer with their bundled
// aggregations under unsigned."m.relations": the m.thread summary, the
// latest valid m.replace edit and the m.reference chunk, built from the
// children the viewer can see. It costs a few queries per call whatever the
// number of events, and is used by the endpoints that list relations and
// threads; the hot paths (/sync, /messages) do without.
func (s *Service) withAggregations(ctx context.Context, v *viewer, roomID string, evs []Stored) ([]json.RawMessage, error) {
	var ids []string
	for _, e := range evs {
		if e.StateKey == nil { // state events get no bundles
			ids = append(ids, e.EventID)
		}
	}
	if len(ids) == 0 {
		return s.ClientEvents(ctx, evs, FormatOptions{})
	}
	threads, err := s.store.ThreadSummaries(ctx, roomID, ids, v.user)
	if err != nil {
		return nil, err
	}
	// latest_event must be one the viewer can see: walk back from the
	// latest in the rare case it is not.
	latest := map[string]Stored{}
	for root, t := range threads {
		if t.Latest.EventID != "" && v.canSee(t.Latest) {
			latest[root] = t.Latest
			continue
		}
		rq := RelationQuery{RoomID: roomID, Parent: root, RelType: RelThread, Depth: 1, Before: t.Latest.Pos}
		found, _, _, err := collect(t.Latest.Pos-1, 1, func(cursor int64, n int) ([]Stored, error) {
			rq.Before, rq.Limit = cursor+1, n
			return s.store.RelatedEvents(ctx, rq)
		}, func(e Stored) int64 { return e.Pos - 1 }, v.canSee)
		if err != nil {
			return nil, err
		}
		if len(found) > 0 {
			latest[root] = found[0]
		}
	}
	latestEvs := make([]Stored, 0, len(latest))
	parents := slices.Clone(ids)
	for _, e := range latest {
		latestEvs = append(latestEvs, e)
		parents = append(parents, e.EventID)
	}
	slices.SortFunc(latestEvs, func(a, b Stored) int { return cmp.Compare(a.Pos, b.Pos) })

	children, err := s.store.RelationChildren(ctx, roomID, parents, []string{RelReplace, RelReference})
	if err != nil {
		return nil, err
	}
	byParent := map[string][]RelatedEvent{}
	for _, c := range children {
		if v.canSee(c.Event) {
			byParent[c.Parent] = append(byParent[c.Parent], c)
		}
	}
	// The latest edit of each event, rendered in one go.
	edits := map[string]Stored{}
	var editEvs []Stored
	for _, e := range append(slices.Clone(evs), latestEvs...) {
		if ed, ok := latestEdit(e, byParent[e.EventID]); ok {
			edits[e.EventID] = ed
			editEvs = append(editEvs, ed)
		}
	}
	rendered := map[string]json.RawMessage{}
	editJSON, err := s.ClientEvents(ctx, editEvs, FormatOptions{})
	if err != nil {
		return nil, err
	}
	for i, e := range editEvs {
		rendered[e.EventID] = editJSON[i]
	}

	// relations builds an event's m.relations; thread summaries only for
	// the events asked about, since a thread's events cannot be roots.
	relations := func(e Stored, withThread bool) map[string]any {
		rel := map[string]any{}
		if ed, ok := edits[e.EventID]; ok {
			rel[RelReplace] = rendered[ed.EventID]
		}
		var refs []map[string]string
		for _, c := range byParent[e.EventID] {
			if c.RelType == RelReference {
				refs = append(refs, map[string]string{"event_id": c.Event.EventID})
			}
		}
		if refs != nil {
			rel[RelReference] = map[string]any{"chunk": refs}
		}
		if t, ok := threads[e.EventID]; ok && withThread {
			if l, ok := latest[e.EventID]; ok {
				rel[RelThread] = map[string]any{
					"latest_event":              rendered[l.EventID],
					"count":                     t.Count,
					"current_user_participated": t.Participated || e.Sender == v.user,
				}
			}
		}
		return rel
	}

	latestJSON, err := s.ClientEvents(ctx, latestEvs, FormatOptions{})
	if err != nil {
		return nil, err
	}
	for i, e := range latestEvs {
		if rendered[e.EventID], err = addRelations(latestJSON[i], relations(e, false)); err != nil {
			return nil, err
		}
	}
	out, err := s.ClientEvents(ctx, evs, FormatOptions{})
	if err != nil {
		return nil, err
	}
	for i, e := range evs {
		if e.StateKey != nil {
			continue
		}
		if out[i], err = addRelations(out[i], relations(e, true)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// latestEdit picks the most recent valid replacement of orig among its
// children: by origin_server_ts, then the greatest event ID. A redacted
// original gets none.
func latestEdit(orig Stored, children []RelatedEvent) (Stored, bool) {
	if orig.RedactedBy != "" || orig.StateKey != nil {
		return Stored{}, false
	}
	if r := relationOf(contentOf(orig.JSON)); r != nil && r.RelType == RelReplace {
		return Stored{}, false // an edit cannot be edited
	}
	var best Stored
	found := false
	for _, c := range children {
		ed := c.Event
		if c.RelType != RelReplace || !validEdit(orig, ed) {
			continue
		}
		if !found || ed.TS > best.TS || (ed.TS == best.TS && ed.EventID > best.EventID) {
			best, found = ed, true
		}
	}
	return best, found
}

// validEdit applies the spec's rules for a replacement of orig (other than
// the original's own, checked by latestEdit).
func validEdit(orig, ed Stored) bool {
	if ed.StateKey != nil || ed.Sender != orig.Sender || ed.Type != orig.Type {
		return false
	}
	if ed.Type == "m.room.encrypted" {
		return true // m.new_content is in the ciphertext
	}
	var c struct {
		NewContent map[string]json.RawMessage `json:"m.new_content"`
	}
	return json.Unmarshal(contentOf(ed.JSON), &c) == nil && c.NewContent != nil
}

// addRelations sets unsigned."m.relations" of a rendered event when rel has
// anything.
func addRelations(ev json.RawMessage, rel map[string]any) (json.RawMessage, error) {
	if len(rel) == 0 {
		return ev, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(ev, &obj); err != nil {
		return nil, err
	}
	unsigned := map[string]json.RawMessage{}
	if raw, ok := obj["unsigned"]; ok {
		if err := json.Unmarshal(raw, &unsigned); err != nil {
			return nil, err
		}
	}
	var err error
	if unsigned["m.relations"], err = json.Marshal(rel); err != nil {
		return nil, err
	}
	if obj["unsigned"], err = json.Marshal(unsigned); err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}
