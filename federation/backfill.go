package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"

	"homeserver/pdu"
)

// maxAuthFetches bounds the /event_auth requests one backfilled batch may
// cause.
const maxAuthFetches = 10

// Backfill asks the room's other servers, in turn, for up to limit events
// before from, and returns the first non-empty answer's events with their
// hashes and signatures checked and the auth chains they need stored here.
func (s *Service) Backfill(ctx context.Context, roomID string, from []string, limit int) ([]*pdu.Event, error) {
	version, err := s.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	q := url.Values{"v": from, "limit": {strconv.Itoa(min(limit, maxBackfill))}}
	path := "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID) + "?" + q.Encode()
	var errs []error
	for _, server := range servers {
		if server == s.cfg.ServerName {
			continue
		}
		var resp struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := s.client.Do(ctx, "GET", server, path, nil, &resp); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		var evs []*pdu.Event
		for _, raw := range resp.PDUs[:min(len(resp.PDUs), maxBackfill)] {
			ev, err := s.parsePDU(ctx, version, raw)
			if err != nil || ev.RoomID() != roomID {
				s.log.Info("dropping a backfilled event", "room_id", roomID, "origin", server, "err", err)
				continue
			}
			evs = append(evs, ev)
		}
		if len(evs) == 0 {
			continue
		}
		s.fetchMissingAuth(ctx, server, evs)
		return evs, nil
	}
	return nil, errors.Join(errs...)
}

// fetchMissingAuth takes from origin the auth chains of those of evs whose
// auth events are neither among evs nor known here.
func (s *Service) fetchMissingAuth(ctx context.Context, origin string, evs []*pdu.Event) {
	inBatch := make(map[string]bool, len(evs))
	for _, ev := range evs {
		inBatch[ev.ID()] = true
	}
	fetches := 0
	for _, ev := range evs {
		auth := slices.DeleteFunc(slices.Clone(ev.AuthEventIDs()), func(id string) bool { return inBatch[id] })
		unknown, err := s.rooms.UnknownEvents(ctx, auth)
		if err != nil || len(unknown) == 0 {
			continue
		}
		if fetches == maxAuthFetches {
			return
		}
		fetches++
		if err := s.fetchAuthChain(ctx, origin, ev); err != nil {
			s.log.Info("fetching the auth chain of a backfilled event", "event_id", ev.ID(), "origin", origin, "err", err)
		}
	}
}
