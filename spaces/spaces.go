// Package spaces serves the hierarchy of spaces: the tree of rooms that
// m.space.child state events make, walked depth first for clients
// (GET /rooms/{roomId}/hierarchy) and one level deep for other servers
// (GET /_matrix/federation/v1/hierarchy/{roomId}). Rooms this server is not
// in are asked of the servers their m.space.child event names, through a
// Remote.
package spaces

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"homeserver/mxhttp"
	"homeserver/rooms"
)

// Limits of a client's walk. The spec leaves them to the server.
const (
	defaultLimit = 50
	maxLimit     = 100
	// maxDepthLimit is the default max_depth and the greatest one.
	maxDepthLimit = 20
	// maxWalk bounds the rooms one request looks at, over all the pages
	// before it too: each page walks the tree again from its root.
	maxWalk = 1000
)

// spaceType is the m.room.create type of a space.
const spaceType = "m.space"

// Room is a room of a hierarchy in the spec's shape: the room summary with
// its m.space.child events. The client API and the federation API share it.
type Room struct {
	rooms.PublicRoom
	// AllowedRoomIDs are the rooms whose members may join a restricted
	// room, so that a server asking for the hierarchy can judge for its
	// users.
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	// ChildrenState are the valid m.space.child events of a space, in
	// order; empty for other rooms.
	ChildrenState []ChildEvent `json:"children_state"`
}

// FederationHierarchy is the answer of the federation API's /hierarchy: a
// space, the children the requesting server may see, and those it may not.
type FederationHierarchy struct {
	Room                 Room     `json:"room"`
	Children             []Room   `json:"children"`
	InaccessibleChildren []string `json:"inaccessible_children"`
}

// Rooms is what the hierarchy reads of rooms (package rooms).
type Rooms interface {
	ServerName() string
	// InRoom reports whether this server is in the room: only then is its
	// state current enough to describe it.
	InRoom(ctx context.Context, roomID string) (bool, error)
	SpaceRoom(ctx context.Context, roomID string) (rooms.SpaceRoom, error)
	Membership(ctx context.Context, roomID, user string) (string, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	ServerAllowed(ctx context.Context, roomID, server string) (bool, error)
}

// Remote asks another server for a space's hierarchy (package federation).
type Remote interface {
	Hierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (*FederationHierarchy, error)
}

// Service walks space hierarchies.
type Service struct {
	rooms Rooms
	// remote reaches other servers; nil until SetRemote, and then rooms
	// this server is not in are left out.
	remote Remote
	cache  *answerCache
	log    *slog.Logger
}

// New returns the hierarchy service.
func New(r Rooms, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{rooms: r, cache: newAnswerCache(time.Now), log: log}
}

// SetRemote lets walks ask other servers about rooms this server is not
// in. Call it before serving.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// Query is a client's request for a page of a space's hierarchy.
type Query struct {
	User          string
	RoomID        string
	SuggestedOnly bool
	// MaxDepth bounds how deep the walk goes (0: the root alone); nil is
	// the default.
	MaxDepth *int
	// Limit bounds the page; 0 is the default.
	Limit int
	// From is the next_batch of the previous page.
	From string
}

// Page is a page of a space's hierarchy.
type Page struct {
	Rooms     []Room `json:"rooms"`
	NextBatch string `json:"next_batch,omitempty"`
}

// queued is a room the walk has yet to visit.
type queued struct {
	roomID string
	depth  int
	via    []string
	// summary is what the parent's server said of the room, if it was
	// asked over federation.
	summary *Room
}

// walk is one client request's walk.
type walk struct {
	s             *Service
	user          string
	suggestedOnly bool
	maxDepth      int
	// inaccessible are rooms another server said no server can see.
	inaccessible map[string]bool
}

// Hierarchy returns a page of the hierarchy under q.RoomID, depth first in
// the spec's order of children, with the rooms q.User may see. The root
// must be a room of this server the user may see.
func (s *Service) Hierarchy(ctx context.Context, q Query) (*Page, error) {
	if !strings.HasPrefix(q.RoomID, "!") {
		return nil, mxhttp.InvalidParam("Invalid room ID %q", q.RoomID)
	}
	maxDepth := maxDepthLimit
	if q.MaxDepth != nil {
		if *q.MaxDepth < 0 {
			return nil, mxhttp.InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = min(*q.MaxDepth, maxDepthLimit)
	}
	limit := defaultLimit
	switch {
	case q.Limit < 0:
		return nil, mxhttp.InvalidParam("limit must be a positive integer")
	case q.Limit > 0:
		limit = min(q.Limit, maxLimit)
	}
	tok := pageToken{RoomID: q.RoomID, SuggestedOnly: q.SuggestedOnly, MaxDepth: maxDepth}
	if q.From != "" {
		from, err := parsePageToken(q.From)
		if err != nil {
			return nil, err
		}
		if from.RoomID != q.RoomID {
			return nil, mxhttp.InvalidParam("The pagination token is of another room's hierarchy")
		}
		if from.SuggestedOnly != q.SuggestedOnly || from.MaxDepth != maxDepth {
			return nil, mxhttp.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		tok.Offset = from.Offset
	}

	w := &walk{s: s, user: q.User, suggestedOnly: q.SuggestedOnly, maxDepth: maxDepth, inaccessible: map[string]bool{}}
	page := &Page{Rooms: []Room{}}
	stack := []queued{{roomID: q.RoomID}}
	seen := map[string]bool{}
	skip, walked := tok.Offset, 0
	for len(stack) > 0 && len(page.Rooms) < limit && walked < maxWalk {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[e.roomID] || w.inaccessible[e.roomID] {
			continue
		}
		seen[e.roomID] = true
		walked++
		room, children, err := w.visit(ctx, e)
		if err != nil {
			return nil, err
		}
		if room == nil {
			if e.depth == 0 {
				return nil, mxhttp.Forbidden("You are not allowed to view this room")
			}
			continue
		}
		if skip > 0 {
			skip--
		} else {
			page.Rooms = append(page.Rooms, *room)
		}
		// Pushed last first, so that the first child is walked next.
		for i := len(children) - 1; i >= 0; i-- {
			if !seen[children[i].roomID] {
				stack = append(stack, children[i])
			}
		}
	}
	if len(stack) > 0 && walked < maxWalk {
		tok.Offset += len(page.Rooms)
		page.NextBatch = tok.String()
	}
	return page, nil
}

// visit returns the room of e as the user may see it (nil: not at all)
// and, within the depth asked for, its children to walk.
func (w *walk) visit(ctx context.Context, e queued) (*Room, []queued, error) {
	room, children, err := w.s.localRoom(ctx, e.roomID, w.suggestedOnly)
	if err != nil {
		return nil, nil, err
	}
	var summaries map[string]*Room
	if room == nil {
		if e.depth == 0 {
			return nil, nil, nil // a root this server does not hold
		}
		if room, children, summaries = w.remoteRoom(ctx, e); room == nil {
			return nil, nil, nil
		}
	}
	if may, err := w.s.userMay(ctx, w.user, room); err != nil || !may {
		return nil, nil, err
	}
	if e.depth >= w.maxDepth {
		return room, nil, nil
	}
	next := make([]queued, 0, len(children))
	for _, c := range children {
		next = append(next, queued{roomID: c.ev.StateKey, depth: e.depth + 1, via: c.via, summary: summaries[c.ev.StateKey]})
	}
	return room, next, nil
}

// remoteRoom describes a room this server is not in, from what the
// parent's server said of it, or else from its own hierarchy asked of the
// servers in via. summaries are what that answer says of its children.
func (w *walk) remoteRoom(ctx context.Context, e queued) (room *Room, children []child, summaries map[string]*Room) {
	// A child's summary serves unless its own children are needed.
	if e.summary != nil && (e.summary.RoomType != spaceType || e.depth >= w.maxDepth) {
		room, children = withChildren(*e.summary, w.suggestedOnly)
		return room, children, nil
	}
	ans := w.s.fetch(ctx, e.roomID, e.via, w.suggestedOnly)
	if ans == nil {
		return nil, nil, nil
	}
	for _, id := range ans.InaccessibleChildren {
		w.inaccessible[id] = true
	}
	summaries = make(map[string]*Room, len(ans.Children))
	for i := range ans.Children {
		if c := &ans.Children[i]; strings.HasPrefix(c.RoomID, "!") {
			summaries[c.RoomID] = c
		}
	}
	room, children = withChildren(ans.Room, w.suggestedOnly)
	return room, children, summaries
}

// withChildren completes a summary: a space's children_state are its valid
// children in order, which are returned; other rooms have none.
func withChildren(r Room, suggestedOnly bool) (*Room, []child) {
	var children []child
	if r.RoomType == spaceType {
		children = validChildren(r.ChildrenState, suggestedOnly)
	}
	r.ChildrenState = childrenState(children)
	return &r, children
}

// localRoom describes a room this server is in (nil when it is not) and
// returns its children.
func (s *Service) localRoom(ctx context.Context, roomID string, suggestedOnly bool) (*Room, []child, error) {
	if in, err := s.rooms.InRoom(ctx, roomID); err != nil || !in {
		return nil, nil, err
	}
	sr, err := s.rooms.SpaceRoom(ctx, roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	r := Room{PublicRoom: sr.PublicRoom, Encryption: sr.Encryption, RoomVersion: sr.RoomVersion}
	if restricted(r.JoinRule) && ruleSupported(r.RoomVersion, r.JoinRule) {
		r.AllowedRoomIDs = sr.AllowedRoomIDs
	}
	r.ChildrenState = make([]ChildEvent, 0, len(sr.Children))
	for _, c := range sr.Children {
		r.ChildrenState = append(r.ChildrenState, ChildEvent{Type: "m.space.child", StateKey: c.RoomID, Sender: c.Sender, OriginServerTS: c.TS, Content: c.Content})
	}
	room, children := withChildren(r, suggestedOnly)
	return room, children, nil
}

// minRuleVersion is the first room version in which a join rule works;
// rules not listed work in every version.
var minRuleVersion = map[string]int{"knock": 7, "restricted": 8, "knock_restricted": 10}

// ruleSupported tells whether the join rule works in the room version. A
// summary from another server may not say the version: the rule is
// trusted then.
func ruleSupported(version, rule string) bool {
	first, ok := minRuleVersion[rule]
	if !ok || version == "" {
		return true
	}
	n, err := strconv.Atoi(version)
	return err == nil && n >= first
}

func restricted(rule string) bool { return rule == "restricted" || rule == "knock_restricted" }

// openRule reports whether anyone may join, knock on or see the room
// without a particular membership: by its join rule, or being world
// readable.
func openRule(r *Room) bool {
	rule := r.JoinRule
	if rule == "" {
		rule = "public" // what a summary without join_rule means
	}
	switch {
	case r.WorldReadable, rule == "public":
		return true
	case rule == "knock" || rule == "knock_restricted":
		return ruleSupported(r.RoomVersion, rule)
	}
	return false
}

// userMay tells whether the user may see the room in a hierarchy: they are
// joined or invited, or may join it (public, or restricted to a room they
// are in), knock on it, or read it (world readable). A banned user only
// sees world-readable rooms.
func (s *Service) userMay(ctx context.Context, user string, r *Room) (bool, error) {
	m, err := s.rooms.Membership(ctx, r.RoomID, user)
	if err != nil {
		return false, err
	}
	switch {
	case m == "join" || m == "invite":
		return true, nil
	case m == "ban":
		return r.WorldReadable, nil
	case openRule(r):
		return true, nil
	}
	if !restricted(r.JoinRule) || !ruleSupported(r.RoomVersion, r.JoinRule) {
		return false, nil
	}
	for _, allowed := range r.AllowedRoomIDs {
		if m, err := s.rooms.Membership(ctx, allowed, user); err != nil {
			return false, err
		} else if m == "join" {
			return true, nil
		}
	}
	return false, nil
}

// serverMay tells whether a server may see the room: it may peek, join or
// knock (public, knock rules, world readable), or has users in it. A
// restricted room is shown with its allowed rooms, for the server to judge
// for its users.
func (s *Service) serverMay(ctx context.Context, server string, r *Room) (bool, error) {
	if openRule(r) || (restricted(r.JoinRule) && ruleSupported(r.RoomVersion, r.JoinRule)) {
		return true, nil
	}
	servers, err := s.rooms.JoinedServers(ctx, r.RoomID)
	return slices.Contains(servers, server), err
}

// ServerHierarchy answers another server's /hierarchy: the space (which
// this server must hold and the server may see) and its children this
// server holds, each either described or listed as inaccessible to the
// server (by its access rules or server ACL). The caller checks the
// space's server ACL.
func (s *Service) ServerHierarchy(ctx context.Context, origin, roomID string, suggestedOnly bool) (*FederationHierarchy, error) {
	room, children, err := s.localRoom(ctx, roomID, suggestedOnly)
	if err != nil {
		return nil, err
	}
	if room == nil {
		return nil, mxhttp.NotFound("Unknown room")
	}
	if may, err := s.serverMay(ctx, origin, room); err != nil {
		return nil, err
	} else if !may {
		return nil, mxhttp.NotFound("Unknown room")
	}
	ans := &FederationHierarchy{Room: *room, Children: []Room{}, InaccessibleChildren: []string{}}
	for _, c := range children {
		id := c.ev.StateKey
		cr, _, err := s.localRoom(ctx, id, suggestedOnly)
		if err != nil {
			return nil, err
		}
		if cr == nil {
			continue // another server must tell of it
		}
		may, err := s.rooms.ServerAllowed(ctx, id, origin)
		if err == nil && may {
			may, err = s.serverMay(ctx, origin, cr)
		}
		if err != nil {
			return nil, err
		}
		if may {
			ans.Children = append(ans.Children, *cr)
		} else {
			ans.InaccessibleChildren = append(ans.InaccessibleChildren, id)
		}
	}
	return ans, nil
}
