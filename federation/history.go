package federation

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

// maxBackfill bounds one /backfill answer.
const maxBackfill = 100

// roomForServer reads {roomId} and checks that the requesting server is in
// the room; it returns the room's version.
func (s *Service) roomForServer(r *http.Request) (string, string, error) {
	roomID := mxhttp.PathParam(r, "roomId")
	version, err := s.rooms.RoomVersion(r.Context(), roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		return "", "", mxhttp.NotFound("Unknown room")
	}
	if err != nil {
		return "", "", err
	}
	if err := s.requireInRoom(r.Context(), roomID); err != nil {
		return "", "", err
	}
	return roomID, version, nil
}

// stateAt answers /state and /state_ids: the state before event_id and
// its auth chain.
func (s *Service) stateAt(r *http.Request) (roomID string, state []string, chain []json.RawMessage, err error) {
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return "", nil, nil, mxhttp.MissingParam("event_id is required")
	}
	roomID, _, err = s.roomForServer(r)
	if err != nil {
		return "", nil, nil, err
	}
	state, err = s.rooms.StateBefore(r.Context(), roomID, eventID)
	switch {
	case errors.Is(err, rooms.ErrNotFound):
		return "", nil, nil, mxhttp.NotFound("Unknown event")
	case errors.Is(err, rooms.ErrStateUnknown):
		return "", nil, nil, mxhttp.NotFound("The state at this event is not known here")
	case err != nil:
		return "", nil, nil, err
	}
	chain, err = s.rooms.AuthChainPDUs(r.Context(), roomID, state)
	return roomID, state, chain, err
}

func (s *Service) stateIDs(w http.ResponseWriter, r *http.Request) {
	roomID, state, chain, err := s.stateAt(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	version, err := s.rooms.RoomVersion(r.Context(), roomID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	chainIDs := make([]string, 0, len(chain))
	for _, raw := range chain {
		if ev, err := pdu.Parse(version, raw); err == nil {
			chainIDs = append(chainIDs, ev.ID())
		}
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"pdu_ids": state, "auth_chain_ids": chainIDs})
}

func (s *Service) state(w http.ResponseWriter, r *http.Request) {
	roomID, state, chain, err := s.stateAt(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pdus, err := s.rooms.EventPDUs(r.Context(), roomID, state)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"pdus": pdus, "auth_chain": chain})
}

// eventAuth answers /event_auth: the auth chain of one event.
func (s *Service) eventAuth(w http.ResponseWriter, r *http.Request) {
	roomID, _, err := s.roomForServer(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	eventID := mxhttp.PathParam(r, "eventId")
	if _, inRoom, err := s.rooms.EventPDU(r.Context(), eventID); errors.Is(err, rooms.ErrNotFound) || (err == nil && inRoom != roomID) {
		s.fail(w, r, mxhttp.NotFound("Unknown event"))
		return
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	chain, err := s.rooms.AuthChainPDUs(r.Context(), roomID, []string{eventID})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": chain})
}

// backfill answers /backfill: the events of v and those before them,
// breadth first along prev_events, up to limit.
func (s *Service) backfill(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, version, err := s.roomForServer(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	from := r.URL.Query()["v"]
	if len(from) == 0 {
		s.fail(w, r, mxhttp.MissingParam("v is required"))
		return
	}
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit < 1 {
		s.fail(w, r, mxhttp.InvalidParam("limit must be a positive integer"))
		return
	}
	limit = min(limit, maxBackfill)
	view, err := s.rooms.ViewForServer(ctx, roomID, transport.Origin(ctx))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	seen := map[string]bool{}
	frontier := append([]string(nil), from...)
	var out []json.RawMessage
	for len(frontier) > 0 && len(out) < limit {
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
		if err != nil {
			continue
		}
		out = append(out, data)
		frontier = append(frontier, ev.PrevEventIDs()...)
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": s.now().UnixMilli(), "pdus": out})
}

// timestampToEvent answers /timestamp_to_event: the event of the room
// closest to ts in the direction dir ("f" or "b").
func (s *Service) timestampToEvent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if !q.Has("ts") {
		s.fail(w, r, mxhttp.MissingParam("ts is required"))
		return
	}
	if err != nil {
		s.fail(w, r, mxhttp.InvalidParam("ts must be an integer"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		s.fail(w, r, mxhttp.InvalidParam("dir must be f or b"))
		return
	}
	roomID, _, err := s.roomForServer(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, originTS, err := s.rooms.TimestampToEventForServer(r.Context(), roomID, ts, dir == "f")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event_id": id, "origin_server_ts": originTS})
}
