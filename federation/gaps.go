package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

// Limits of get_missing_events: what one request may ask for (served) and
// what one received event may pull in (fetched).
const (
	maxMissingServed  = 100
	maxMissingFetched = 50
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
	version, err := s.rooms.RoomVersion(ctx, roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		s.fail(w, r, mxhttp.NotFound("Unknown room"))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.requireInRoom(ctx, roomID); err != nil {
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
		data, inRoom, err := s.rooms.EventPDU(ctx, id)
		if err != nil || inRoom != roomID {
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
// of the room and ev, whose prev_events are unknown here, and stores them
// oldest first, so that ev lands after its history rather than beside a
// hole. It is bounded (one request, maxMissingFetched events); what it
// cannot fill stays a gap.
func (s *Service) fillGap(ctx context.Context, origin string, ev *pdu.Event) {
	missing, err := s.rooms.UnknownEvents(ctx, ev.PrevEventIDs())
	if err != nil || len(missing) == 0 {
		return
	}
	earliest, err := s.rooms.ForwardExtremities(ctx, ev.RoomID())
	if err != nil {
		return
	}
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	req := missingRequest{Limit: maxMissingFetched, EarliestEvents: earliest, LatestEvents: []string{ev.ID()}}
	if err := s.client.Do(ctx, "POST", origin, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(ev.RoomID()), req, &resp); err != nil {
		s.log.Info("fetching missing events", "room_id", ev.RoomID(), "origin", origin, "err", err)
		return
	}
	var got []*pdu.Event
	for _, raw := range resp.Events {
		if len(got) == maxMissingFetched {
			break
		}
		m, err := s.parsePDU(ctx, ev.Version(), raw)
		if err != nil || m.RoomID() != ev.RoomID() {
			s.log.Info("dropping a missing event", "room_id", ev.RoomID(), "origin", origin, "err", err)
			continue
		}
		got = append(got, m)
	}
	slices.SortStableFunc(got, func(a, b *pdu.Event) int { return int(a.Depth() - b.Depth()) })
	for _, m := range got {
		if err := s.rooms.ReceiveEvent(ctx, m); err != nil && !errors.Is(err, rooms.ErrSoftFailed) {
			s.log.Info("missing event rejected", "event_id", m.ID(), "origin", origin, "err", err)
		}
	}
}
