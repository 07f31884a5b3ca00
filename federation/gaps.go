package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

// Bounds of gaps: what one get_missing_events request may ask for
// (served) and ask (fetched), how many events one received event may pull
// in through it before the rest of the gap is left to backfill, and how
// many unknown state events are fetched one by one (/event) before the
// whole state is asked for (/state).
const (
	maxMissingServed  = 100
	missingPerRequest = 50
	maxGapFetched     = 500
	maxStateByID      = 50
)

type missingRequest struct {
	Limit          int      `json:"limit"`
	MinDepth       int64    `json:"min_depth"`
	EarliestEvents []string `json:"earliest_events"`
	LatestEvents   []string `json:"latest_events"`
}

// getMissingEvents walks prev_events back from latest_events, breadth
// first, stopping at earliest_events and the limit, and answers oldest
// first: the events another server in the room lacks.
func (s *Service) getMissingEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := mxhttp.PathParam(r, "roomId")
	var req missingRequest
	if err := body(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.EarliestEvents == nil || req.LatestEvents == nil {
		s.fail(w, r, mxhttp.BadJSON("earliest_events and latest_events are required"))
		return
	}
	if req.Limit <= 0 {
		req.Limit = 10
	}
	req.Limit = min(req.Limit, maxMissingServed)
	_, version, err := s.roomForServer(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	view, err := s.rooms.ViewForServer(ctx, roomID, transport.Origin(ctx))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	seen := map[string]bool{}
	for _, id := range append(slices.Clone(req.EarliestEvents), req.LatestEvents...) {
		seen[id] = true
	}
	var frontier []string
	for _, id := range req.LatestEvents {
		if ev, err := s.storedEvent(ctx, roomID, version, id); err == nil && ev != nil {
			frontier = append(frontier, ev.PrevEventIDs()...)
		}
	}
	var found []*pdu.Event
	raw := map[string]json.RawMessage{}
	for len(frontier) > 0 && len(found) < req.Limit {
		id := frontier[0]
		frontier = frontier[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		data, err := view.PDU(ctx, id)
		if err != nil {
			continue
		}
		ev, err := pdu.Parse(version, data)
		if err != nil || ev.Depth() < req.MinDepth {
			continue
		}
		found = append(found, ev)
		raw[ev.ID()] = data
		frontier = append(frontier, ev.PrevEventIDs()...)
	}
	slices.SortStableFunc(found, func(a, b *pdu.Event) int { return int(a.Depth() - b.Depth()) })
	out := make([]json.RawMessage, 0, len(found))
	for _, ev := range found {
		out = append(out, raw[ev.ID()])
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"events": out})
}

// storedEvent parses a stored event of the room (nil when it is not one).
func (s *Service) storedEvent(ctx context.Context, roomID, version, id string) (*pdu.Event, error) {
	data, inRoom, err := s.rooms.EventPDU(ctx, id)
	if err != nil || inRoom != roomID {
		return nil, err
	}
	return pdu.Parse(version, data)
}

// requireInRoom refuses a requesting server with no joined member in the
// room: it has no business with the room's events.
func (s *Service) requireInRoom(ctx context.Context, roomID string) error {
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	if !slices.Contains(servers, transport.Origin(ctx)) {
		return mxhttp.Forbidden("Your server is not in the room")
	}
	return s.checkACL(ctx, roomID)
}

// fillGap fetches from origin the events between what this server holds
// of the room and ev, whose prev_events are unknown here: get_missing_events
// in rounds, each asking for the events before the oldest it has, up to
// maxGapFetched. They are stored oldest first, so that ev lands after its
// history rather than beside a hole; the oldest of them, when the gap is
// wider than that, starts a branch at the state origin reports before it
// (see receiveFrom), and the rest of the gap is left to backfill.
func (s *Service) fillGap(ctx context.Context, origin string, ev *pdu.Event) {
	missing, err := s.rooms.UnknownEvents(ctx, ev.PrevEventIDs())
	if err != nil || len(missing) == 0 {
		return
	}
	earliest, err := s.rooms.ForwardExtremities(ctx, ev.RoomID())
	if err != nil {
		return
	}
	got := map[string]*pdu.Event{}
	latest := []string{ev.ID()}
	for len(got) < maxGapFetched {
		batch, err := s.missingEvents(ctx, origin, ev, earliest, latest)
		if err != nil {
			s.log.Info("fetching missing events", "room_id", ev.RoomID(), "origin", origin, "err", err)
			break
		}
		added := 0
		for _, m := range batch {
			if got[m.ID()] == nil && m.ID() != ev.ID() && len(got) < maxGapFetched {
				got[m.ID()] = m
				added++
			}
		}
		if added == 0 {
			break
		}
		if latest, err = s.openEnds(ctx, got); err != nil || len(latest) == 0 {
			break
		}
	}
	sorted := make([]*pdu.Event, 0, len(got))
	for _, m := range got {
		sorted = append(sorted, m)
	}
	slices.SortStableFunc(sorted, func(a, b *pdu.Event) int {
		if a.Depth() != b.Depth() {
			return int(a.Depth() - b.Depth())
		}
		return strings.Compare(a.ID(), b.ID())
	})
	for _, m := range sorted {
		if err := s.receiveFrom(ctx, origin, m); err != nil && !errors.Is(err, rooms.ErrSoftFailed) {
			s.log.Info("missing event rejected", "event_id", m.ID(), "origin", origin, "err", err)
		}
	}
}

// missingEvents asks origin for the events before latest back to earliest
// (one get_missing_events request) and returns those it could check.
func (s *Service) missingEvents(ctx context.Context, origin string, ev *pdu.Event, earliest, latest []string) ([]*pdu.Event, error) {
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	req := missingRequest{Limit: missingPerRequest, EarliestEvents: earliest, LatestEvents: latest}
	if err := s.client.Do(ctx, "POST", origin, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(ev.RoomID()), req, &resp); err != nil {
		return nil, err
	}
	var out []*pdu.Event
	for _, raw := range resp.Events[:min(len(resp.Events), missingPerRequest)] {
		m, err := s.parsePDU(ctx, ev.Version(), raw)
		if err != nil || m.RoomID() != ev.RoomID() {
			s.log.Info("dropping a missing event", "room_id", ev.RoomID(), "origin", origin, "err", err)
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// openEnds returns the events of got whose prev_events are neither in got
// nor known here: where the gap goes on.
func (s *Service) openEnds(ctx context.Context, got map[string]*pdu.Event) ([]string, error) {
	var prevs []string
	for _, m := range got {
		for _, p := range m.PrevEventIDs() {
			if got[p] == nil {
				prevs = append(prevs, p)
			}
		}
	}
	unknown, err := s.rooms.UnknownEvents(ctx, prevs)
	if err != nil {
		return nil, err
	}
	var ends []string
	for id, m := range got {
		if slices.ContainsFunc(m.PrevEventIDs(), func(p string) bool { return slices.Contains(unknown, p) }) {
			ends = append(ends, id)
		}
	}
	slices.Sort(ends)
	return ends, nil
}

// receiveFrom stores an event origin sent or returned. When its
// prev_events are still unknown here, it is checked against and stored
// with the state origin reports before it (/state_ids, and the state
// events this server lacks); when its auth events are unknown, the
// origin's auth chain is taken first (each event checked on its own).
func (s *Service) receiveFrom(ctx context.Context, origin string, ev *pdu.Event) error {
	receive := func() error { return s.rooms.ReceiveEvent(ctx, ev) }
	if unknown, err := s.rooms.UnknownEvents(ctx, ev.PrevEventIDs()); err != nil {
		return err
	} else if len(unknown) > 0 {
		state, err := s.stateBefore(ctx, origin, ev)
		if err != nil {
			s.log.Info("fetching the state before an event", "event_id", ev.ID(), "origin", origin, "err", err)
		} else {
			receive = func() error { return s.rooms.ReceiveEventAfterState(ctx, ev, state) }
		}
	}
	err := receive()
	if errors.Is(err, rooms.ErrMissingAuthEvents) {
		if ferr := s.fetchAuthChain(ctx, origin, ev); ferr != nil {
			s.log.Info("fetching an auth chain", "event_id", ev.ID(), "err", ferr)
			return err
		}
		err = receive()
	}
	return err
}

// stateBefore asks origin for the room's state before ev (/state_ids),
// fetches and stores (as outliers, each checked against its own auth
// events) the state and auth chain events this server lacks, and returns
// the state's event IDs that are stored here.
func (s *Service) stateBefore(ctx context.Context, origin string, ev *pdu.Event) ([]string, error) {
	var ids struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}
	q := "?event_id=" + url.QueryEscape(ev.ID())
	room := url.PathEscape(ev.RoomID())
	if err := s.client.Do(ctx, "GET", origin, "/_matrix/federation/v1/state_ids/"+room+q, nil, &ids); err != nil {
		return nil, err
	}
	if len(ids.PDUIDs) > maxAuthChain || len(ids.AuthChainIDs) > maxAuthChain {
		return nil, errors.New("the state is larger than this server takes")
	}
	unknown, err := s.rooms.UnknownEvents(ctx, append(slices.Clone(ids.PDUIDs), ids.AuthChainIDs...))
	if err != nil {
		return nil, err
	}
	var raws []json.RawMessage
	if len(unknown) > maxStateByID {
		var st struct {
			PDUs      []json.RawMessage `json:"pdus"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		if err := s.client.Do(ctx, "GET", origin, "/_matrix/federation/v1/state/"+room+q, nil, &st); err != nil {
			return nil, err
		}
		raws = append(st.PDUs, st.AuthChain...)
	} else {
		for _, id := range unknown {
			var one struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			if err := s.client.Do(ctx, "GET", origin, "/_matrix/federation/v1/event/"+url.PathEscape(id), nil, &one); err != nil {
				return nil, fmt.Errorf("fetching state event %s: %w", id, err)
			}
			raws = append(raws, one.PDUs...)
		}
	}
	want := map[string]bool{}
	for _, id := range unknown {
		want[id] = true
	}
	var fetched []*pdu.Event
	for _, raw := range raws[:min(len(raws), 2*maxAuthChain)] {
		m, err := s.parsePDU(ctx, ev.Version(), raw)
		if err != nil || m.RoomID() != ev.RoomID() || !want[m.ID()] {
			continue
		}
		want[m.ID()] = false
		fetched = append(fetched, m)
	}
	rejected, err := s.rooms.ReceiveOutliers(ctx, ev.RoomID(), fetched)
	if err != nil {
		return nil, err
	}
	still, err := s.rooms.UnknownEvents(ctx, ids.PDUIDs)
	if err != nil {
		return nil, err
	}
	if len(still) > 0 {
		return nil, fmt.Errorf("%d state events could not be fetched", len(still))
	}
	// A state event rejected here (now or before) is no part of the state.
	old, err := s.rooms.RejectedEvents(ctx, ids.PDUIDs)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(ids.PDUIDs), func(id string) bool {
		_, now := rejected[id]
		_, before := old[id]
		return now || before
	}), nil
}
