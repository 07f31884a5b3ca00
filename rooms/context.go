package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"math"

	"homeserver/filter"
	"homeserver/mxhttp"
)

// collect pages through items from a cursor, keeping those keep accepts
// until it has limit of them, the source runs dry, or maxScan items have
// been examined. fetch returns up to n items past the cursor and step
// gives the cursor just past an item, so that the cursor returned is
// exactly where a following page must start: no item is skipped or
// repeated. more is false when the source is known to have run dry.
func collect[T any](cursor int64, limit int, fetch func(cursor int64, n int) ([]T, error), step func(T) int64, keep func(T) bool) (picked []T, end int64, more bool, err error) {
	n := max(limit, 50)
	scanned := 0
	for len(picked) < limit && scanned < maxScan {
		batch, err := fetch(cursor, n)
		if err != nil {
			return nil, 0, false, err
		}
		for i, it := range batch {
			scanned++
			cursor = step(it)
			if keep(it) {
				picked = append(picked, it)
				if len(picked) == limit {
					return picked, cursor, i < len(batch)-1 || len(batch) == n, nil
				}
			}
		}
		if len(batch) < n {
			return picked, cursor, false, nil
		}
	}
	return picked, cursor, true, nil
}

// roomEvents returns a fetch for collect over a room's log with the
// cursor convention of pagination tokens (the point just after a
// position): forward, the events after the cursor; backward, those at or
// before it.
func (s *Service) roomEvents(ctx context.Context, roomID string, forward bool) (fetch func(int64, int) ([]Stored, error), step func(Stored) int64) {
	if forward {
		return func(cursor int64, n int) ([]Stored, error) {
			return s.store.RoomEvents(ctx, roomID, cursor, math.MaxInt64, true, n)
		}, func(e Stored) int64 { return e.Pos }
	}
	return func(cursor int64, n int) ([]Stored, error) {
		return s.store.RoomEvents(ctx, roomID, cursor+1, 0, false, n)
	}, func(e Stored) int64 { return e.Pos - 1 }
}

// visibleEvent returns the user's viewer of the room and the event, which
// must be in the room and visible to them: anything else is the same 404,
// so that nothing tells an invisible event from a missing one.
func (s *Service) visibleEvent(ctx context.Context, user, roomID, eventID string) (*viewer, Stored, error) {
	if err := s.checkRoomID(roomID); err != nil {
		return nil, Stored{}, err
	}
	v, err := s.viewer(ctx, roomID, user)
	if err != nil {
		return nil, Stored{}, err
	}
	e, err := s.store.GetEvent(ctx, eventID)
	if errors.Is(err, ErrNotFound) || (err == nil && (e.RoomID != roomID || !v.canSee(e))) {
		return nil, Stored{}, mxhttp.NotFound("Event not found")
	}
	if err != nil {
		return nil, Stored{}, err
	}
	return v, e, nil
}

// roomReader returns the viewer of a user who may read the room's history
// at all (viewer.mayReadHistory). Which events they see is then up to the
// viewer.
// CheckHistoryReader reports whether the user may read the room's history,
// for handlers that must refuse outsiders before looking at the request's
// other parameters (as Synapse does for /messages): an outsider learns
// nothing from which of its parameters are wrong.
func (s *Service) CheckHistoryReader(ctx context.Context, user, roomID string) error {
	_, err := s.roomReader(ctx, user, roomID)
	return err
}

func (s *Service) roomReader(ctx context.Context, user, roomID string) (*viewer, error) {
	v, err := s.roomForReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if !v.mayReadHistory() {
		return nil, mxhttp.Forbidden("You are not allowed to view this room")
	}
	return v, nil
}

// ContextQuery is /context's parameters.
type ContextQuery struct {
	Limit  int
	Filter *filter.RoomEventFilter
}

// ContextResult is /context's answer.
type ContextResult struct {
	Start        string            `json:"start"`
	End          string            `json:"end"`
	Event        json.RawMessage   `json:"event"`
	EventsBefore []json.RawMessage `json:"events_before"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	State        []json.RawMessage `json:"state"`
}

// maxContextLimit bounds /context's limit.
const maxContextLimit = 100

// EventContext returns the events around one the user can see, and the
// room state at the last event returned (as the spec words it). The limit
// is split as Synapse does: limit/2 (rounded down) events before, the rest
// after; a side that runs short does not give its share to the other.
// Start and End are /messages tokens: paginating backwards from Start
// continues just before events_before, forwards from End just after
// events_after. The filter applies to the surrounding events and to the
// state, not to the event itself.
func (s *Service) EventContext(ctx context.Context, user, roomID, eventID string, q ContextQuery) (*ContextResult, error) {
	v, ev, err := s.visibleEvent(ctx, user, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return s.eventContext(ctx, v, roomID, ev, q)
}

// eventContext is EventContext around ev for the viewer v.
func (s *Service) eventContext(ctx context.Context, v *viewer, roomID string, ev Stored, q ContextQuery) (*ContextResult, error) {
	limit := min(max(q.Limit, 0), maxContextLimit)
	nBefore := limit / 2
	nAfter := limit - nBefore
	keep := func(e Stored) bool {
		return v.canSee(e) && q.Filter.Match(e.RoomID, e.Type, e.Sender, contentOf(e.JSON))
	}

	fetch, step := s.roomEvents(ctx, roomID, false)
	before, start, _, err := collect(ev.Pos-1, nBefore, fetch, step, keep)
	if err != nil {
		return nil, err
	}
	fetch, step = s.roomEvents(ctx, roomID, true)
	after, end, _, err := collect(ev.Pos, nAfter, fetch, step, keep)
	if err != nil {
		return nil, err
	}

	res := &ContextResult{Start: FormatToken(start), End: FormatToken(end)}
	v.annotate(before)
	v.annotate(after)
	ev.ViewerMembership = v.membershipAt(ev)
	evs, err := s.ClientEvents(ctx, []Stored{ev}, FormatOptions{})
	if err != nil {
		return nil, err
	}
	res.Event = evs[0]
	if res.EventsBefore, err = s.ClientEvents(ctx, before, FormatOptions{}); err != nil {
		return nil, err
	}
	if res.EventsAfter, err = s.ClientEvents(ctx, after, FormatOptions{}); err != nil {
		return nil, err
	}

	last := ev
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	// The state at an event the user can see is what they would know of the
	// room at that point, so it is not filtered by history visibility: with
	// "joined" visibility, the state at an event after the user joined
	// still names a creator and members from before.
	state, err := s.stateOfGroup(ctx, last.StateGroup, nil)
	if err != nil {
		return nil, err
	}
	var senders map[string]bool
	if q.Filter != nil && q.Filter.LazyLoadMembers {
		senders = map[string]bool{ev.Sender: true}
		for _, e := range before {
			senders[e.Sender] = true
		}
		for _, e := range after {
			senders[e.Sender] = true
		}
	}
	var kept []Stored
	for _, e := range state {
		if senders != nil && e.Type == "m.room.member" && e.StateKey != nil && !senders[*e.StateKey] {
			continue
		}
		if q.Filter.Match(e.RoomID, e.Type, e.Sender, contentOf(e.JSON)) {
			kept = append(kept, e)
		}
	}
	if res.State, err = s.ClientEvents(ctx, kept, FormatOptions{}); err != nil {
		return nil, err
	}
	return res, nil
}

// TimestampToEvent finds the event the user can see closest to ts in the
// direction given: the first at or after ts going forward, the last at or
// before it going backward.
func (s *Service) TimestampToEvent(ctx context.Context, user, roomID string, ts int64, forward bool) (eventID string, originTS int64, err error) {
	v, err := s.roomReader(ctx, user, roomID)
	if err != nil {
		return "", 0, err
	}
	return s.eventByTime(ctx, roomID, ts, forward, v.canSee)
}

// TimestampToEventForServer is TimestampToEvent for another server in the
// room, which sees the room's timeline.
func (s *Service) TimestampToEventForServer(ctx context.Context, roomID string, ts int64, forward bool) (eventID string, originTS int64, err error) {
	return s.eventByTime(ctx, roomID, ts, forward, func(Stored) bool { return true })
}

func (s *Service) eventByTime(ctx context.Context, roomID string, ts int64, forward bool, canSee func(Stored) bool) (eventID string, originTS int64, err error) {
	// Walk by (origin_server_ts, stream position) from ts, inclusive.
	curTS, curPos := ts, int64(math.MaxInt64)
	if forward {
		curPos = -1
	}
	const batch = 50
	var found *Stored
	for scanned := 0; found == nil && scanned < maxScan; {
		evs, err := s.store.EventsByTime(ctx, roomID, curTS, curPos, forward, batch)
		if err != nil {
			return "", 0, err
		}
		for i := range evs {
			if evs[i].Pos > 0 && canSee(evs[i]) {
				found = &evs[i]
				break
			}
		}
		if len(evs) < batch {
			break
		}
		scanned += len(evs)
		curTS, curPos = evs[len(evs)-1].TS, evs[len(evs)-1].Pos
	}
	if found == nil {
		dir := "backward"
		if forward {
			dir = "forward"
		}
		return "", 0, mxhttp.NotFound("Unable to find event from %d in %s direction", ts, dir)
	}
	return found.EventID, found.TS, nil
}
