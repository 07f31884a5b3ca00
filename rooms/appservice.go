package rooms

import (
	"context"
	"strings"

	"homeserver/mxhttp"
)

// SetAliasGuard installs the check that keeps room aliases reserved by
// application services: it gets the alias and the requesting service's ID
// ("" for anyone else) and returns the error to answer. Call it before
// serving.
func (s *Service) SetAliasGuard(guard func(alias, appServiceID string) error) { s.aliasGuard = guard }

func (s *Service) checkAliasGuard(alias, appServiceID string) error {
	if s.aliasGuard == nil {
		return nil
	}
	return s.aliasGuard(alias, appServiceID)
}

// NetworkDirectoryStore keeps the room lists that application services
// publish for their third-party networks; Store embeds it.
type NetworkDirectoryStore interface {
	// SetNetworkPublished adds a room to, or removes it from, the list of
	// one network of one application service.
	SetNetworkPublished(ctx context.Context, appServiceID, networkID, roomID string, published bool) error
	// NetworkDirectoryRooms returns the rooms of the networks' lists with
	// their joined member counts, in no particular order: those of one
	// network ID, or of every network when networkID is "".
	NetworkDirectoryRooms(ctx context.Context, appServiceID, networkID string) ([]DirectoryRoom, error)
}

// SetNetworkVisibility publishes a room in, or withdraws it from, the room
// list an application service keeps for one of its networks
// (PUT /directory/list/appservice/{networkId}/{roomId}).
func (s *Service) SetNetworkVisibility(ctx context.Context, appServiceID, networkID, roomID, visibility string) error {
	if visibility != VisibilityPublic && visibility != VisibilityPrivate {
		return mxhttp.InvalidParam("Invalid visibility %q: must be public or private", visibility)
	}
	if networkID == "" || len(networkID) > MaxIDLength {
		return mxhttp.InvalidParam("Invalid network ID %q", networkID)
	}
	if _, err := s.knownRoom(ctx, roomID); err != nil {
		return err
	}
	if err := s.store.SetNetworkPublished(ctx, appServiceID, networkID, roomID, visibility == VisibilityPublic); err != nil {
		return err
	}
	s.log.Info("set room network directory visibility", "room_id", roomID, "network_id", networkID,
		"appservice_id", appServiceID, "visibility", visibility)
	return nil
}

// directoryListing gathers the rooms a directory query covers: the
// server's own list, one network's (third_party_instance_id, given as the
// network ID or as "appServiceID|networkID"), or all of them.
func (s *Service) directoryListing(ctx context.Context, q PublicRoomsQuery) ([]DirectoryRoom, error) {
	if q.ThirdPartyInstanceID != "" && !q.IncludeAllNetworks {
		asID, network, found := strings.Cut(q.ThirdPartyInstanceID, "|")
		if !found {
			asID, network = "", q.ThirdPartyInstanceID
		}
		return s.store.NetworkDirectoryRooms(ctx, asID, network)
	}
	listed, err := s.store.DirectoryRooms(ctx)
	if err != nil || !q.IncludeAllNetworks {
		return listed, err
	}
	more, err := s.store.NetworkDirectoryRooms(ctx, "", "")
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(listed))
	for _, d := range listed {
		seen[d.RoomID] = true
	}
	for _, d := range more {
		if !seen[d.RoomID] {
			seen[d.RoomID] = true
			listed = append(listed, d)
		}
	}
	return listed, nil
}
