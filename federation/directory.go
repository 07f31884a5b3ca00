package federation

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/rooms"
)

// The published room directory over federation: other servers list this
// server's directory, and clients here list other servers' through
// PublicRooms.

// publicRoomsGet serves GET /publicRooms: limit, since,
// include_all_networks and third_party_instance_id as query parameters.
func (s *Service) publicRoomsGet(w http.ResponseWriter, r *http.Request) {
	q, err := publicRoomsParams(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.servePublicRooms(w, r, q)
}

// publicRoomsPost serves POST /publicRooms, whose body is that of the
// client API's, filter included.
func (s *Service) publicRoomsPost(w http.ResponseWriter, r *http.Request) {
	var b rooms.PublicRoomsBody
	if err := body(r, &b); err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := b.Query()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.servePublicRooms(w, r, q)
}

// servePublicRooms answers with a page of this server's directory only:
// q.Server stays empty, so that no server makes this one ask a third.
func (s *Service) servePublicRooms(w http.ResponseWriter, r *http.Request, q rooms.PublicRoomsQuery) {
	if !s.cfg.PublicRoomsOverFederation {
		s.fail(w, r, mxhttp.Forbidden("This server does not list its rooms to other servers"))
		return
	}
	q.Server = ""
	page, err := s.rooms.PublicRooms(r.Context(), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, page)
}

// publicRoomsParams reads the query parameters of GET /publicRooms, as
// Synapse does: a limit of 0 (the default) means no limit; a boolean is
// "true" or "false".
func publicRoomsParams(v url.Values) (rooms.PublicRoomsQuery, error) {
	q := rooms.PublicRoomsQuery{Since: v.Get("since"), ThirdPartyInstanceID: v.Get("third_party_instance_id")}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, mxhttp.InvalidParam("Invalid limit %q", s)
		}
		q.Limit = n
	}
	switch s := v.Get("include_all_networks"); s {
	case "", "false":
	case "true":
		q.IncludeAllNetworks = true
	default:
		return q, mxhttp.InvalidParam("include_all_networks must be true or false, not %q", s)
	}
	return q, nil
}

// PublicRooms asks server for a page of its directory. A filtered query
// goes as a POST; should the server not know that form (a 404, 405 or
// M_UNRECOGNIZED), the unfiltered page is fetched and filtered here, as
// Synapse falls back.
func (s *Service) PublicRooms(ctx context.Context, server string, q rooms.PublicRoomsQuery) (*rooms.PublicRooms, error) {
	if !transport.ValidServerName(server) {
		return nil, mxhttp.InvalidParam("Invalid server name %q", server)
	}
	const path = "/_matrix/federation/v1/publicRooms"
	var page rooms.PublicRooms
	if q.SearchTerm != "" || len(q.RoomTypes) > 0 {
		b := rooms.PublicRoomsBody{Since: q.Since, IncludeAllNetworks: q.IncludeAllNetworks, ThirdPartyInstanceID: q.ThirdPartyInstanceID}
		if q.Limit > 0 {
			b.Limit = &q.Limit
		}
		b.Filter.GenericSearchTerm, b.Filter.RoomTypes = q.SearchTerm, q.RoomTypes
		err := s.client.Do(ctx, http.MethodPost, server, path, b, &page)
		if err == nil {
			return checkedPage(&page), nil
		}
		var he *transport.HTTPError
		if !errors.As(err, &he) || (he.Status != 404 && he.Status != 405 && he.Code != "M_UNRECOGNIZED") {
			return nil, remoteError(err, "The room directory of "+server+" is not available")
		}
		s.log.Debug("filtering another server's room directory here", "server", server, "err", err)
		page = rooms.PublicRooms{}
	}
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.IncludeAllNetworks {
		v.Set("include_all_networks", "true")
	} else if q.ThirdPartyInstanceID != "" {
		v.Set("third_party_instance_id", q.ThirdPartyInstanceID)
	}
	uri := path
	if len(v) > 0 {
		uri += "?" + v.Encode()
	}
	if err := s.client.Do(ctx, http.MethodGet, server, uri, nil, &page); err != nil {
		return nil, remoteError(err, "The room directory of "+server+" is not available")
	}
	if q.SearchTerm != "" || len(q.RoomTypes) > 0 {
		kept := page.Chunk[:0]
		for _, e := range page.Chunk {
			if e.Matches(q) {
				kept = append(kept, e)
			}
		}
		page.Chunk = kept
	}
	return checkedPage(&page), nil
}

// checkedPage drops the entries of another server's directory page that
// name no room, and never answers a null chunk.
func checkedPage(page *rooms.PublicRooms) *rooms.PublicRooms {
	kept := make([]rooms.PublicRoom, 0, len(page.Chunk))
	for _, e := range page.Chunk {
		if e.RoomID != "" {
			kept = append(kept, e)
		}
	}
	page.Chunk = kept
	return page
}
