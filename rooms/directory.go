package rooms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// AliasTarget is what a room alias resolves to: the room and servers that
// can be asked to join it.
type AliasTarget struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// aliasServer checks an alias's grammar and returns its server name.
func aliasServer(alias string) (string, error) {
	if !validAlias(alias) {
		return "", mxhttp.InvalidParam("Invalid room alias %q", alias)
	}
	_, server, _ := strings.Cut(alias, ":")
	return server, nil
}

// localAlias checks that alias is a valid alias of this server, the only
// ones this server maintains.
func (s *Service) localAlias(alias string) error {
	server, err := aliasServer(alias)
	if err != nil {
		return err
	}
	if server != s.server {
		return mxhttp.InvalidParam("Room alias %s is not on this server (%s)", alias, s.server)
	}
	return nil
}

func aliasNotFound(alias string) error {
	return mxhttp.NotFound("Room alias %s not found", alias)
}

// ResolveAlias resolves a room alias for clients.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (AliasTarget, error) {
	server, err := aliasServer(alias)
	if err != nil {
		return AliasTarget{}, err
	}
	if server != s.server && s.remote != nil {
		return s.remote.QueryAlias(ctx, alias)
	}
	roomID, err := s.lookupAlias(ctx, alias)
	if errors.Is(err, ErrNotFound) {
		return AliasTarget{}, aliasNotFound(alias)
	}
	if err != nil {
		return AliasTarget{}, err
	}
	servers, err := s.roomServers(ctx, roomID)
	if err != nil {
		return AliasTarget{}, err
	}
	return AliasTarget{RoomID: roomID, Servers: servers}, nil
}

// lookupAlias returns the room a valid alias points to, or ErrNotFound.
// Every lookup of an alias goes through here, so that aliases this server
// does not hold can be asked of application services and, for other
// servers' aliases, over federation in one place.
func (s *Service) lookupAlias(ctx context.Context, alias string) (string, error) {
	if _, server, _ := strings.Cut(alias, ":"); server != s.server {
		return "", ErrNotFound // other servers' aliases need federation
	}
	roomID, _, err := s.store.ResolveAlias(ctx, alias)
	if errors.Is(err, ErrNotFound) && s.queryAlias != nil && s.queryAlias(ctx, alias) {
		// An application service says it exists: it has created it.
		roomID, _, err = s.store.ResolveAlias(ctx, alias)
	}
	return roomID, err
}

// SetAliasQuerier makes lookups of unknown local aliases ask q, which
// reports whether the alias now exists (an application service may create
// the room while answering). Call it before serving.
func (s *Service) SetAliasQuerier(q func(ctx context.Context, alias string) bool) {
	s.queryAlias = q
}

// roomServers lists this server and then the other servers with joined
// members in the room.
func (s *Service) roomServers(ctx context.Context, roomID string) ([]string, error) {
	users, err := s.store.JoinedUserIDs(ctx, roomID)
	if err != nil {
		return nil, err
	}
	servers := []string{s.server}
	for _, u := range users {
		if _, server, ok := strings.Cut(u, ":"); ok && !slices.Contains(servers, server) {
			servers = append(servers, server)
		}
	}
	slices.Sort(servers[1:])
	return servers, nil
}

// knownRoom checks that roomID is a valid ID of a room this server knows.
func (s *Service) knownRoom(ctx context.Context, roomID string) (Room, error) {
	if err := s.checkRoomID(roomID); err != nil {
		return Room{}, err
	}
	room, err := s.store.GetRoom(ctx, roomID)
	if errors.Is(err, ErrNotFound) {
		return Room{}, mxhttp.NotFound("Room not found")
	}
	return room, err
}

// CreateAlias maps a local alias to a room. The user must be in the room,
// unless a server admin.
func (s *Service) CreateAlias(ctx context.Context, user string, admin bool, alias, roomID string) error {
	return s.CreateAliasAs(ctx, user, admin, "", alias, roomID)
}

// CreateAliasAs is CreateAlias for a request made by the application
// service appServiceID ("" for none). The alias guard decides which aliases
// it may create; within its namespace it need not be in the room.
func (s *Service) CreateAliasAs(ctx context.Context, user string, admin bool, appServiceID, alias, roomID string) error {
	if err := s.localAlias(alias); err != nil {
		return err
	}
	if err := s.checkAliasGuard(alias, appServiceID); err != nil {
		return err
	}
	if appServiceID != "" && s.aliasGuard != nil {
		admin = true
	}
	if _, err := s.knownRoom(ctx, roomID); err != nil {
		return err
	}
	if !admin {
		m, err := s.store.Membership(ctx, roomID, user)
		if err != nil {
			return err
		}
		if m != "join" {
			return mxhttp.Forbidden("You must be in the room to create an alias for it")
		}
	}
	err := s.store.CreateAlias(ctx, alias, roomID, user)
	if errors.Is(err, ErrAliasExists) {
		return &mxhttp.Error{Status: http.StatusConflict, Code: "M_UNKNOWN", Message: "Room alias " + alias + " already exists"}
	}
	if err != nil {
		return err
	}
	s.log.Info("created room alias", "alias", alias, "room_id", roomID, "user_id", user)
	return nil
}

// DeleteAlias removes a local alias. Its creator, a server admin, or a
// member who may change the room's canonical alias may do so. The alias is
// then taken out of the room's m.room.canonical_alias where the user may
// change it; the deletion stands either way, as the spec recommends.
func (s *Service) DeleteAlias(ctx context.Context, user string, admin bool, alias string) error {
	return s.DeleteAliasAs(ctx, user, admin, "", alias)
}

// DeleteAliasAs is DeleteAlias for a request made by the application
// service appServiceID ("" for none), under the alias guard as
// CreateAliasAs.
func (s *Service) DeleteAliasAs(ctx context.Context, user string, admin bool, appServiceID, alias string) error {
	if err := s.localAlias(alias); err != nil {
		return err
	}
	if err := s.checkAliasGuard(alias, appServiceID); err != nil {
		return err
	}
	if appServiceID != "" && s.aliasGuard != nil {
		admin = true
	}
	roomID, creator, err := s.store.ResolveAlias(ctx, alias)
	if errors.Is(err, ErrNotFound) {
		return aliasNotFound(alias)
	}
	if err != nil {
		return err
	}
	if creator != user && !admin {
		may, err := s.maySendState(ctx, roomID, user, "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if !may {
			return mxhttp.Forbidden("You may not delete the room alias %s", alias)
		}
	}
	if err := s.store.DeleteAlias(ctx, alias); errors.Is(err, ErrNotFound) {
		return aliasNotFound(alias)
	} else if err != nil {
		return err
	}
	s.log.Info("deleted room alias", "alias", alias, "room_id", roomID, "user_id", user)
	if err := s.removeCanonicalAliases(ctx, user, roomID, []string{alias}); err != nil {
		s.log.Info("could not update the canonical alias after deleting an alias", "alias", alias, "room_id", roomID, "err", err)
	}
	return nil
}

// RoomAliases lists the local aliases of a room to its members (anyone when
// its history is world readable, and server admins).
func (s *Service) RoomAliases(ctx context.Context, user string, admin bool, roomID string) ([]string, error) {
	v, err := s.roomForReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if !admin && v.current() != "join" && !v.worldReadable() {
		return nil, mxhttp.Forbidden("You are not a member of the room")
	}
	aliases, err := s.store.RoomAliases(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if aliases == nil {
		aliases = []string{}
	}
	return aliases, nil
}

// maySendState reports whether user is joined to the room with the power
// to send state events of this type.
func (s *Service) maySendState(ctx context.Context, roomID, user, eventType string) (bool, error) {
	m, err := s.store.Membership(ctx, roomID, user)
	if err != nil || m != "join" {
		return false, err
	}
	pl, err := s.loadPowerLevels(ctx, roomID)
	if err != nil {
		return false, err
	}
	return pl.UserLevel(user) >= pl.eventLevel(eventType, true), nil
}

// canonicalAlias is the content of m.room.canonical_alias.
type canonicalAlias struct {
	Alias      string   `json:"alias,omitempty"`
	AltAliases []string `json:"alt_aliases,omitempty"`
}

// currentCanonicalAlias returns the room's canonical alias content, or nil
// when it has none.
func (s *Service) currentCanonicalAlias(ctx context.Context, roomID string) (map[string]json.RawMessage, error) {
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.canonical_alias"}})
	if err != nil || len(st) == 0 {
		return nil, err
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(contentOf(st[0].JSON), &c) != nil {
		return nil, nil
	}
	return c, nil
}

// splitCanonicalAlias divides a canonical alias content into the aliases
// in take and the rest, keeping any other keys with the rest.
func splitCanonicalAlias(c map[string]json.RawMessage, take []string) (taken canonicalAlias, rest map[string]json.RawMessage, changed bool) {
	rest = maps.Clone(c)
	var alias string
	if json.Unmarshal(c["alias"], &alias) == nil && alias != "" && slices.Contains(take, alias) {
		taken.Alias = alias
		delete(rest, "alias")
		changed = true
	}
	var alts []string
	if json.Unmarshal(c["alt_aliases"], &alts) == nil && len(alts) > 0 {
		var kept []string
		for _, a := range alts {
			if slices.Contains(take, a) {
				taken.AltAliases = append(taken.AltAliases, a)
				changed = true
			} else {
				kept = append(kept, a)
			}
		}
		if len(kept) == 0 {
			delete(rest, "alt_aliases")
		} else {
			rest["alt_aliases"] = mustJSON(kept)
		}
	}
	return taken, rest, changed
}

// removeCanonicalAliases takes aliases out of the room's canonical alias
// event, sending the change as user.
func (s *Service) removeCanonicalAliases(ctx context.Context, user, roomID string, aliases []string) error {
	c, err := s.currentCanonicalAlias(ctx, roomID)
	if err != nil || c == nil {
		return err
	}
	_, rest, changed := splitCanonicalAlias(c, aliases)
	if !changed {
		return nil
	}
	_, err = s.submit(ctx, pdu.Proto{
		Sender: user, RoomID: roomID, Type: "m.room.canonical_alias", StateKey: ptr(""), Content: mustJSON(rest),
	}, NewEvent{})
	return err
}

// Directory visibilities.
const (
	VisibilityPublic  = "public"
	VisibilityPrivate = "private"
)

// DirectoryVisibility tells whether a room is published in the directory.
func (s *Service) DirectoryVisibility(ctx context.Context, roomID string) (string, error) {
	room, err := s.knownRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	if room.Published {
		return VisibilityPublic, nil
	}
	return VisibilityPrivate, nil
}

// SetDirectoryVisibility publishes a room in the directory or withdraws
// it. As in Synapse, server admins and members who may change the room's
// canonical alias may do so.
func (s *Service) SetDirectoryVisibility(ctx context.Context, user string, admin bool, roomID, visibility string) error {
	if visibility != VisibilityPublic && visibility != VisibilityPrivate {
		return mxhttp.InvalidParam("Invalid visibility %q: must be public or private", visibility)
	}
	if _, err := s.knownRoom(ctx, roomID); err != nil {
		return err
	}
	if !admin {
		may, err := s.maySendState(ctx, roomID, user, "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if !may {
			return mxhttp.Forbidden("You may not change this room's visibility in the directory")
		}
	}
	if err := s.store.SetPublished(ctx, roomID, visibility == VisibilityPublic); err != nil {
		return err
	}
	s.log.Info("set room directory visibility", "room_id", roomID, "visibility", visibility, "user_id", user)
	return nil
}

// PublicRoomsQuery is a request for a page of the published room directory.
type PublicRoomsQuery struct {
	// Limit bounds the page; 0 means the largest page served.
	Limit int
	// Since is a next_batch or prev_batch token of an earlier page.
	Since string
	// Server is the directory's server; empty means this one.
	Server string
	// SearchTerm matches names, topics and canonical aliases, ignoring case.
	SearchTerm string
	// RoomTypes keeps rooms of these types; a nil entry stands for rooms
	// without a type. Empty means any type.
	RoomTypes []*string
	// ThirdPartyInstanceID selects the list of one third-party network,
	// unless IncludeAllNetworks.
	ThirdPartyInstanceID string
	IncludeAllNetworks   bool
}

// PublicRoom is an entry of the published room directory.
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRooms is a page of the published room directory.
type PublicRooms struct {
	Chunk                  []PublicRoom `json:"chunk"`
	NextBatch              string       `json:"next_batch,omitempty"`
	PrevBatch              string       `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int          `json:"total_room_count_estimate"`
}

// maxPublicRoomsPage bounds one page of the directory.
const maxPublicRoomsPage = 500

// directoryBefore is the directory's order: most joined members first, then
// by room ID.
func directoryBefore(a, b DirectoryRoom) bool {
	if a.JoinedMembers != b.JoinedMembers {
		return a.JoinedMembers > b.JoinedMembers
	}
	return a.RoomID < b.RoomID
}

func directoryCompare(a, b DirectoryRoom) int {
	switch {
	case directoryBefore(a, b):
		return -1
	case directoryBefore(b, a):
		return 1
	}
	return 0
}

// directoryToken is the opaque pagination token of the directory: the
// position of the room at the edge of a page, so that pages stay stable as
// rooms come and go.
type directoryToken struct {
	Backward bool   `json:"b,omitempty"`
	Members  int    `json:"n"`
	RoomID   string `json:"r"`
}

func (t directoryToken) String() string {
	return base64.RawURLEncoding.EncodeToString(mustJSON(t))
}

func (t directoryToken) room() DirectoryRoom {
	return DirectoryRoom{RoomID: t.RoomID, JoinedMembers: t.Members}
}

func parseDirectoryToken(s string) (directoryToken, error) {
	var t directoryToken
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(data, &t) != nil || t.RoomID == "" {
		return t, mxhttp.InvalidParam("Invalid pagination token %q", s)
	}
	return t, nil
}

// PublicRoomsBody is the JSON body of POST /publicRooms, in the client and
// the federation API alike.
type PublicRoomsBody struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// Query checks the body and returns the query it asks for, of this
// server's directory.
func (b PublicRoomsBody) Query() (PublicRoomsQuery, error) {
	q := PublicRoomsQuery{
		Since: b.Since, SearchTerm: b.Filter.GenericSearchTerm, RoomTypes: b.Filter.RoomTypes,
		IncludeAllNetworks: b.IncludeAllNetworks, ThirdPartyInstanceID: b.ThirdPartyInstanceID,
	}
	if b.Limit != nil {
		if *b.Limit < 0 {
			return q, mxhttp.InvalidParam("Invalid limit %d", *b.Limit)
		}
		q.Limit = *b.Limit
	}
	return q, nil
}

// PublicRooms returns a page of the published room directory: this
// server's, or another's (q.Server) asked over federation.
func (s *Service) PublicRooms(ctx context.Context, q PublicRoomsQuery) (*PublicRooms, error) {
	if q.Server != "" && q.Server != s.server {
		if s.remote == nil {
			return nil, mxhttp.NotFound("Cannot list the room directory of %s: federation is not available", q.Server)
		}
		return s.remote.PublicRooms(ctx, q.Server, q)
	}
	var since *directoryToken
	if q.Since != "" {
		t, err := parseDirectoryToken(q.Since)
		if err != nil {
			return nil, err
		}
		since = &t
	}
	limit := maxPublicRoomsPage
	if q.Limit > 0 {
		limit = min(q.Limit, maxPublicRoomsPage)
	}
	page := &PublicRooms{Chunk: []PublicRoom{}}
	listed, err := s.directoryListing(ctx, q)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(listed, directoryCompare)
	page.TotalRoomCountEstimate = len(listed)

	entries := map[string]PublicRoom{}
	term := strings.ToLower(strings.TrimSpace(q.SearchTerm))
	if term != "" || len(q.RoomTypes) > 0 {
		var kept []DirectoryRoom
		for _, d := range listed {
			e, err := s.publicRoom(ctx, d)
			if err != nil {
				return nil, err
			}
			if e.matches(term, q.RoomTypes) {
				entries[d.RoomID] = e
				kept = append(kept, d)
			}
		}
		listed = kept
	}

	start, end := 0, min(limit, len(listed))
	if since != nil {
		edge := since.room()
		if since.Backward {
			end, _ = slices.BinarySearchFunc(listed, edge, directoryCompare)
			start = max(end-limit, 0)
		} else {
			start, _ = slices.BinarySearchFunc(listed, edge, directoryCompare)
			if start < len(listed) && listed[start] == edge {
				start++
			}
			end = min(start+limit, len(listed))
		}
	}
	for _, d := range listed[start:end] {
		e, ok := entries[d.RoomID]
		if !ok {
			if e, err = s.publicRoom(ctx, d); err != nil {
				return nil, err
			}
		}
		page.Chunk = append(page.Chunk, e)
	}
	if start < end {
		if start > 0 {
			page.PrevBatch = directoryToken{Backward: true, Members: listed[start].JoinedMembers, RoomID: listed[start].RoomID}.String()
		}
		if end < len(listed) {
			page.NextBatch = directoryToken{Members: listed[end-1].JoinedMembers, RoomID: listed[end-1].RoomID}.String()
		}
	}
	return page, nil
}

// directoryStateKeys is the state a directory entry shows.
var directoryStateKeys = []pdu.StateKey{
	{Type: "m.room.create"}, {Type: "m.room.name"}, {Type: "m.room.topic"},
	{Type: "m.room.canonical_alias"}, {Type: "m.room.avatar"}, {Type: "m.room.join_rules"},
	{Type: "m.room.history_visibility"}, {Type: "m.room.guest_access"},
}

// publicRoom builds a directory entry from the room's current state.
func (s *Service) publicRoom(ctx context.Context, d DirectoryRoom) (PublicRoom, error) {
	st, err := s.store.CurrentState(ctx, d.RoomID, directoryStateKeys)
	if err != nil {
		return PublicRoom{}, err
	}
	// Without a join rules event only invited users may join.
	e := PublicRoom{RoomID: d.RoomID, NumJoinedMembers: d.JoinedMembers, JoinRule: "invite"}
	versions := map[string]string{}
	for _, ev := range st {
		raw, err := s.currentContent(ctx, ev, versions)
		if err != nil {
			return PublicRoom{}, err
		}
		var c struct {
			Type              string `json:"type"`
			Name              string `json:"name"`
			Topic             string `json:"topic"`
			Alias             string `json:"alias"`
			URL               string `json:"url"`
			JoinRule          string `json:"join_rule"`
			HistoryVisibility string `json:"history_visibility"`
			GuestAccess       string `json:"guest_access"`
			TopicBlock        struct {
				Text []struct {
					Body     string `json:"body"`
					MimeType string `json:"mimetype"`
				} `json:"m.text"`
			} `json:"m.topic"`
		}
		if json.Unmarshal(raw, &c) != nil {
			continue // content of the wrong shape shows as unset
		}
		switch ev.Type {
		case "m.room.create":
			e.RoomType = c.Type
		case "m.room.name":
			e.Name = c.Name
		case "m.room.topic":
			e.Topic = c.Topic
			for _, t := range c.TopicBlock.Text {
				if t.MimeType == "" || t.MimeType == "text/plain" {
					e.Topic = t.Body
					break
				}
			}
		case "m.room.canonical_alias":
			e.CanonicalAlias = c.Alias
		case "m.room.avatar":
			e.AvatarURL = c.URL
		case "m.room.join_rules":
			e.JoinRule = c.JoinRule
		case "m.room.history_visibility":
			e.WorldReadable = c.HistoryVisibility == "world_readable"
		case "m.room.guest_access":
			e.GuestCanJoin = c.GuestAccess == "can_join"
		}
	}
	return e, nil
}

// currentContent is a stored event's content, redacted if the event was.
func (s *Service) currentContent(ctx context.Context, e Stored, versions map[string]string) (json.RawMessage, error) {
	data := e.JSON
	if e.RedactedBy != "" {
		v, err := s.roomVersion(ctx, e.RoomID, versions)
		if err != nil {
			return nil, err
		}
		if data, err = pdu.Redact(v, data); err != nil {
			return nil, err
		}
	}
	return contentOf(data), nil
}

// Matches tells whether the entry passes q's filter (search term and
// room types), for a directory whose server could not filter it.
func (e PublicRoom) Matches(q PublicRoomsQuery) bool {
	return e.matches(strings.ToLower(strings.TrimSpace(q.SearchTerm)), q.RoomTypes)
}

// matches applies a directory filter to an entry.
func (e PublicRoom) matches(term string, roomTypes []*string) bool {
	if len(roomTypes) > 0 && !slices.ContainsFunc(roomTypes, func(t *string) bool {
		if t == nil {
			return e.RoomType == ""
		}
		return *t == e.RoomType
	}) {
		return false
	}
	if term == "" {
		return true
	}
	for _, f := range []string{e.Name, e.Topic, e.CanonicalAlias} {
		if strings.Contains(strings.ToLower(f), term) {
			return true
		}
	}
	return false
}
