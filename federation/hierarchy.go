package federation

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/spaces"
)

// Spaces' hierarchies over federation: other servers ask this one about
// the spaces it holds, and walks here ask other servers about rooms this
// server is not in.

// SpaceHierarchy answers other servers' hierarchy requests (package
// spaces).
type SpaceHierarchy interface {
	ServerHierarchy(ctx context.Context, origin, roomID string, suggestedOnly bool) (*spaces.FederationHierarchy, error)
}

var _ spaces.Remote = (*Service)(nil)

// hierarchy serves GET /hierarchy/{roomId}: the space and its children the
// requesting server may see, unless the space's server ACL denies it.
func (s *Service) hierarchy(w http.ResponseWriter, r *http.Request) {
	if s.spaces == nil {
		s.fail(w, r, mxhttp.Unrecognized("Unrecognized request"))
		return
	}
	roomID := mxhttp.PathParam(r, "roomId")
	if !strings.HasPrefix(roomID, "!") {
		s.fail(w, r, mxhttp.InvalidParam("Invalid room ID %q", roomID))
		return
	}
	var suggestedOnly bool
	switch v := r.URL.Query().Get("suggested_only"); v {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		s.fail(w, r, mxhttp.InvalidParam("suggested_only must be true or false, not %q", v))
		return
	}
	if err := s.checkACL(r.Context(), roomID); err != nil {
		s.fail(w, r, err)
		return
	}
	ans, err := s.spaces.ServerHierarchy(r.Context(), transport.Origin(r.Context()), roomID, suggestedOnly)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, ans)
}

// Hierarchy asks server for a space's hierarchy.
func (s *Service) Hierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (*spaces.FederationHierarchy, error) {
	if !transport.ValidServerName(server) {
		return nil, mxhttp.InvalidParam("Invalid server name %q", server)
	}
	uri := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggestedOnly {
		uri += "?suggested_only=true"
	}
	var ans spaces.FederationHierarchy
	if err := s.client.Do(ctx, http.MethodGet, server, uri, nil, &ans); err != nil {
		return nil, remoteError(err, "Room not found")
	}
	return &ans, nil
}
