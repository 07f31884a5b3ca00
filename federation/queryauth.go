package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"

	"homeserver/mxhttp"
	"homeserver/pdu"
	"homeserver/rooms"
)

// maxAuthChain bounds an auth chain taken from another server.
const maxAuthChain = 10000

type queryAuthBody struct {
	AuthChain []json.RawMessage          `json:"auth_chain"`
	Missing   []string                   `json:"missing"`
	Rejects   map[string]json.RawMessage `json:"rejects"`
}

type rejection struct {
	Reason string `json:"reason"`
}

// queryAuth is the 2015 API's auth comparison: the requesting server sends
// its auth chain of an event; this server takes the events of it it lacks
// (each checked against its own auth events, the failures recorded as
// rejected), and answers with its own chain, the events of it the
// requester lacks (missing), and the requester's events it rejects, so
// that both servers can end with the same decision.
func (s *Service) queryAuth(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req queryAuthBody
	if err := body(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.AuthChain == nil {
		s.fail(w, r, mxhttp.BadJSON("auth_chain is required"))
		return
	}
	if len(req.AuthChain) > maxAuthChain {
		s.fail(w, r, mxhttp.TooLarge("The auth chain has more than %d events", maxAuthChain))
		return
	}
	roomID, version, err := s.roomForServer(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	eventID := mxhttp.PathParam(r, "eventId")
	if _, inRoom, err := s.rooms.EventPDU(ctx, eventID); errors.Is(err, rooms.ErrNotFound) || (err == nil && inRoom != roomID) {
		s.fail(w, r, mxhttp.NotFound("Unknown event"))
		return
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	rejects := map[string]rejection{}
	var theirs []*pdu.Event
	remoteIDs := map[string]bool{}
	for _, raw := range req.AuthChain {
		ev, err := s.parsePDU(ctx, version, raw)
		if err != nil {
			if id := pduIDForError(version, raw); id != "" {
				rejects[id] = rejection{Reason: "auth_error"}
				remoteIDs[id] = true
			}
			continue
		}
		remoteIDs[ev.ID()] = true
		theirs = append(theirs, ev)
	}
	rejected, err := s.rooms.ReceiveOutliers(ctx, roomID, theirs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for id := range rejected {
		rejects[id] = rejection{Reason: "auth_error"}
	}
	ours, err := s.rooms.AuthChainPDUs(ctx, roomID, []string{eventID})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	missing := []string{}
	for _, raw := range ours {
		if ev, err := pdu.Parse(version, raw); err == nil && !remoteIDs[ev.ID()] {
			missing = append(missing, ev.ID())
		}
	}
	slices.Sort(missing)
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": ours, "missing": missing, "rejects": rejects})
}

// fetchAuthChain takes from origin the auth chain of an event whose auth
// events are unknown here (/event_auth) and stores what it lacks, so that
// the event can be decided like the origin decided it.
func (s *Service) fetchAuthChain(ctx context.Context, origin string, ev *pdu.Event) error {
	var resp struct {
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	path := "/_matrix/federation/v1/event_auth/" + url.PathEscape(ev.RoomID()) + "/" + url.PathEscape(ev.ID())
	if err := s.client.Do(ctx, "GET", origin, path, nil, &resp); err != nil {
		return err
	}
	var chain []*pdu.Event
	for _, raw := range resp.AuthChain[:min(len(resp.AuthChain), maxAuthChain)] {
		if a, err := s.parsePDU(ctx, ev.Version(), raw); err == nil {
			chain = append(chain, a)
		}
	}
	_, err := s.rooms.ReceiveOutliers(ctx, ev.RoomID(), chain)
	return err
}
