package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// AdminStore is the persistence of what server admins decide about rooms
// (Synapse's admin API); Store embeds it.
type AdminStore interface {
	// BlockRoom blocks a room, known or not, on behalf of admin.
	BlockRoom(ctx context.Context, roomID, admin string) error
	UnblockRoom(ctx context.Context, roomID string) error
	// RoomBlockedBy returns the admin who blocked the room; blocked is
	// false when it is not blocked.
	RoomBlockedBy(ctx context.Context, roomID string) (admin string, blocked bool, err error)
	// PurgeRoom deletes the room and every row that holds it or its
	// events, in one transaction.
	PurgeRoom(ctx context.Context, roomID string) error
	// PurgeHistory deletes the room's timeline events (not state events
	// nor forward extremities) below beforeDepth, but for those whose
	// sender ends with keepSuffix when it is set, and returns how many
	// went.
	PurgeHistory(ctx context.Context, roomID string, beforeDepth int64, keepSuffix string) (int64, error)
}

// ValidRoomID checks the shape of a room ID.
func ValidRoomID(roomID string) bool {
	return len(roomID) <= MaxIDLength && roomIDRe.MatchString(roomID)
}

// checkNotBlocked refuses local joins, invites and knocks into a room an
// admin blocked.
func (s *Service) checkNotBlocked(ctx context.Context, roomID string) error {
	_, blocked, err := s.store.RoomBlockedBy(ctx, roomID)
	if err != nil {
		return err
	}
	if blocked {
		return mxhttp.Forbidden("This room has been blocked on this server")
	}
	return nil
}

// SetBlocked blocks or unblocks a room; a room this server has never seen
// can be blocked ahead of anyone joining it.
func (s *Service) SetBlocked(ctx context.Context, roomID, admin string, block bool) error {
	if block {
		return s.store.BlockRoom(ctx, roomID, admin)
	}
	return s.store.UnblockRoom(ctx, roomID)
}

// BlockedBy returns the admin who blocked the room, if it is blocked.
func (s *Service) BlockedBy(ctx context.Context, roomID string) (string, bool, error) {
	return s.store.RoomBlockedBy(ctx, roomID)
}

// RoomExists reports whether this server holds the room.
func (s *Service) RoomExists(ctx context.Context, roomID string) (bool, error) {
	_, err := s.store.GetRoom(ctx, roomID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// knownRoomForAdmin checks that the room is one this server holds: admins
// see rooms whatever their membership, but an unknown room is a 404.
func (s *Service) knownRoomForAdmin(ctx context.Context, roomID string) error {
	ok, err := s.RoomExists(ctx, roomID)
	if err != nil {
		return err
	}
	if !ok {
		return mxhttp.NotFound("Room not found")
	}
	return nil
}

// AdminJoinedMembers lists the room's joined members.
func (s *Service) AdminJoinedMembers(ctx context.Context, roomID string) ([]string, error) {
	if err := s.knownRoomForAdmin(ctx, roomID); err != nil {
		return nil, err
	}
	return s.store.JoinedUserIDs(ctx, roomID)
}

// AdminState returns the room's current state in the client format, only
// the events of eventType when it is set.
func (s *Service) AdminState(ctx context.Context, roomID, eventType string) ([]json.RawMessage, error) {
	if err := s.knownRoomForAdmin(ctx, roomID); err != nil {
		return nil, err
	}
	var st []Stored
	var err error
	if eventType != "" {
		st, err = s.store.CurrentStateOfType(ctx, roomID, eventType)
	} else {
		st, err = s.store.CurrentState(ctx, roomID, nil)
	}
	if err != nil {
		return nil, err
	}
	return s.ClientEvents(ctx, st, FormatOptions{})
}

// AdminMessages is Messages as a server admin reads it: every event of
// the room, whatever its history visibility and the admin's membership.
func (s *Service) AdminMessages(ctx context.Context, roomID string, q MessagesQuery) (*MessagesResult, error) {
	if err := s.knownRoomForAdmin(ctx, roomID); err != nil {
		return nil, err
	}
	return s.messages(ctx, &viewer{all: true}, roomID, q)
}

// AdminEventContext is EventContext as a server admin reads it.
func (s *Service) AdminEventContext(ctx context.Context, roomID, eventID string, q ContextQuery) (*ContextResult, error) {
	if err := s.knownRoomForAdmin(ctx, roomID); err != nil {
		return nil, err
	}
	ev, err := s.store.GetEvent(ctx, eventID)
	if errors.Is(err, ErrNotFound) || (err == nil && ev.RoomID != roomID) {
		return nil, mxhttp.NotFound("Event not found.")
	}
	if err != nil {
		return nil, err
	}
	return s.eventContext(ctx, &viewer{all: true}, roomID, ev, q)
}

// ResolveRoomForAdmin turns a room ID or alias of the admin API into a room
// ID; anything else is Synapse's 400.
func (s *Service) ResolveRoomForAdmin(ctx context.Context, roomIDOrAlias string) (string, error) {
	switch {
	case ValidRoomID(roomIDOrAlias):
		return roomIDOrAlias, nil
	case validAlias(roomIDOrAlias):
		t, err := s.ResolveAlias(ctx, roomIDOrAlias)
		return t.RoomID, err
	}
	return "", mxhttp.Unknown("%s was not legal room ID or room alias", roomIDOrAlias)
}

// ForceJoin joins a local user to a room on an admin's authority, as
// Synapse's /join admin API does: unless the room is public, admin invites
// the user first, which they can only do from inside the room with the
// power to invite.
func (s *Service) ForceJoin(ctx context.Context, admin, user, roomID string) error {
	known, err := s.RoomExists(ctx, roomID)
	if err != nil {
		return err
	}
	if known {
		current, err := s.store.Membership(ctx, roomID, user)
		if err != nil {
			return err
		}
		if current == "join" {
			return nil
		}
		rule, err := s.joinRule(ctx, roomID)
		if err != nil {
			return err
		}
		if rule != "public" && current != "invite" {
			if _, err := s.Invite(ctx, admin, roomID, user, "", false); err != nil {
				return err
			}
		}
	}
	_, err = s.JoinWith(ctx, user, roomID, JoinOptions{})
	return err
}

// joinRule is the room's current join rule ("" when it has none).
func (s *Service) joinRule(ctx context.Context, roomID string) (string, error) {
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.join_rules"}})
	if err != nil || len(st) == 0 {
		return "", err
	}
	var c struct {
		Content struct {
			JoinRule string `json:"join_rule"`
		} `json:"content"`
	}
	_ = json.Unmarshal(st[0].JSON, &c)
	return c.Content.JoinRule, nil
}

// MakeRoomAdmin gives user the power level of the most powerful local
// member of the room, sending the power levels as that member, and invites
// the user unless they are in the room already or it is public.
func (s *Service) MakeRoomAdmin(ctx context.Context, roomID, user string) error {
	if !ValidUserID(user) {
		return mxhttp.InvalidParam("Invalid user ID %q", user)
	}
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{
		{Type: "m.room.create"}, {Type: "m.room.power_levels"}, {Type: "m.room.member", StateKey: user},
	})
	if err != nil {
		return err
	}
	var create, levels *Stored
	userMembership := ""
	for i := range st {
		switch st[i].Type {
		case "m.room.create":
			create = &st[i]
		case "m.room.power_levels":
			levels = &st[i]
		case "m.room.member":
			userMembership = st[i].Membership
		}
	}
	if create == nil {
		return mxhttp.Unknown("Server not in room")
	}
	pl, err := PowerLevelsOf(create, levels)
	if err != nil {
		return err
	}
	content := map[string]json.RawMessage{}
	if levels != nil {
		c, err := s.currentContent(ctx, *levels, map[string]string{})
		if err != nil {
			return err
		}
		if err := json.Unmarshal(c, &content); err != nil {
			return fmt.Errorf("rooms: power levels of %s: %w", roomID, err)
		}
	}
	users := map[string]json.RawMessage{}
	if raw, ok := content["users"]; ok {
		_ = json.Unmarshal(raw, &users)
	}
	// The candidates: local users named in the power levels, and the
	// creators (infinite power in room version 12, absent from users).
	var candidates []string
	for u := range users {
		if s.isLocal(u) {
			candidates = append(candidates, u)
		}
	}
	for _, c := range pl.creators {
		if s.isLocal(c) && !slices.Contains(candidates, c) {
			candidates = append(candidates, c)
		}
	}
	if levels == nil && s.isLocal(create.Sender) && !slices.Contains(candidates, create.Sender) {
		candidates = append(candidates, create.Sender) // no power levels: the creator has power
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		li, lj := pl.UserLevel(candidates[i]), pl.UserLevel(candidates[j])
		if li != lj {
			return li > lj
		}
		return candidates[i] < candidates[j]
	})
	grantor := ""
	for _, c := range candidates {
		m, err := s.store.Membership(ctx, roomID, c)
		if err != nil {
			return err
		}
		if m == "join" {
			grantor = c
			break
		}
	}
	if grantor == "" {
		return mxhttp.Unknown("No local admin user in room")
	}
	level := json.RawMessage("100")
	if raw, ok := users[grantor]; ok {
		level = raw
	}
	users[user] = level
	content["users"] = mustJSON(users)
	if levels == nil {
		// Without power levels, only the creator holds power: the new
		// event must keep it.
		if _, ok := users[grantor]; !ok && !slices.Contains(pl.creators, grantor) {
			users[grantor] = json.RawMessage("100")
			content["users"] = mustJSON(users)
		}
	}
	empty := ""
	if _, err := s.Send(ctx, SendRequest{Sender: grantor, RoomID: roomID, Type: "m.room.power_levels", StateKey: &empty, Content: mustJSON(content)}); err != nil {
		var mx *mxhttp.Error
		if errors.As(err, &mx) && mx.Code == "M_FORBIDDEN" {
			return mxhttp.Unknown("No local admin user in room with power to update power levels.")
		}
		return err
	}
	if userMembership == "join" || userMembership == "invite" {
		return nil
	}
	if rule, err := s.joinRule(ctx, roomID); err != nil || rule == "public" {
		return err
	}
	_, err = s.Invite(ctx, grantor, roomID, user, "", false)
	return err
}

// ShutdownRequest is what an admin asks of a room's shutdown.
type ShutdownRequest struct {
	RoomID    string
	Requester string
	// NewRoomUserID, when set, creates a room (named NewRoomName, with
	// Message sent in it) that the local members are moved to, with the
	// old room's local aliases.
	NewRoomUserID, NewRoomName, Message string
	Block                               bool
}

// ShutdownResult is Synapse's shutdown_room.
type ShutdownResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

// Defaults of a shutdown, Synapse's.
const (
	DefaultShutdownRoomName = "Content Violation Notification"
	DefaultShutdownMessage  = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)

// ShutdownRoom takes a room away from the local users: it blocks it when
// asked, makes every local member leave (and forget) it, moves them and
// the room's local aliases to a new room when NewRoomUserID is set (else
// removes the aliases) and takes the room out of the directory. A member
// who cannot be removed is reported, not fatal. progress, when set, is
// told the result so far after each member.
func (s *Service) ShutdownRoom(ctx context.Context, req ShutdownRequest, progress func(ShutdownResult)) (ShutdownResult, error) {
	res := ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	if req.Block {
		if err := s.store.BlockRoom(ctx, req.RoomID, req.Requester); err != nil {
			return res, err
		}
	}
	if known, err := s.RoomExists(ctx, req.RoomID); err != nil || !known {
		return res, err
	}
	if req.NewRoomUserID != "" {
		name, message := req.NewRoomName, req.Message
		if name == "" {
			name = DefaultShutdownRoomName
		}
		if message == "" {
			message = DefaultShutdownMessage
		}
		id, err := s.CreateRoom(ctx, req.NewRoomUserID, CreateRoomRequest{
			Preset: PresetPublic, Name: &name,
			// The moved users may read, not speak.
			PowerLevelContentOverride: map[string]json.RawMessage{"users_default": json.RawMessage("-10")},
		})
		if err != nil {
			return res, fmt.Errorf("rooms: creating the replacement room: %w", err)
		}
		if _, err := s.Send(ctx, SendRequest{Sender: req.NewRoomUserID, RoomID: id, Type: "m.room.message",
			Content: mustJSON(map[string]string{"msgtype": "m.text", "body": message})}); err != nil {
			return res, fmt.Errorf("rooms: sending the shutdown message: %w", err)
		}
		res.NewRoomID = &id
	}
	if err := s.store.SetPublished(ctx, req.RoomID, false); err != nil && !errors.Is(err, ErrNotFound) {
		return res, err
	}
	members, err := s.store.CurrentStateOfType(ctx, req.RoomID, "m.room.member")
	if err != nil {
		return res, err
	}
	for _, m := range members {
		user := *m.StateKey
		if !s.isLocal(user) || !slices.Contains([]string{"join", "invite", "knock"}, m.Membership) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err // stopped: the members left are not failures
		}
		if err := s.evict(ctx, user, req.RoomID, res.NewRoomID); err != nil {
			s.log.Warn("shutting down room: removing member", "room_id", req.RoomID, "user_id", user, "err", err)
			res.FailedToKickUsers = append(res.FailedToKickUsers, user)
		} else {
			res.KickedUsers = append(res.KickedUsers, user)
		}
		if progress != nil {
			progress(res)
		}
	}
	aliases, err := s.store.RoomAliases(ctx, req.RoomID)
	if err != nil {
		return res, err
	}
	if res.NewRoomID != nil {
		if _, err := s.store.MoveAliases(ctx, req.RoomID, *res.NewRoomID); err != nil {
			return res, err
		}
	} else {
		for _, a := range aliases {
			if err := s.store.DeleteAlias(ctx, a); err != nil && !errors.Is(err, ErrNotFound) {
				return res, err
			}
		}
	}
	res.LocalAliases = append(res.LocalAliases, aliases...)
	return res, nil
}

// evict makes a local user leave (or reject their invite to, or rescind
// their knock on) a room and forget it, and joins them to newRoom if set.
func (s *Service) evict(ctx context.Context, user, roomID string, newRoom *string) error {
	if err := s.Leave(ctx, user, roomID, ""); err != nil {
		return err
	}
	if err := s.store.Forget(ctx, user, roomID); err != nil {
		return err
	}
	if newRoom != nil {
		if _, err := s.JoinWith(ctx, user, *newRoom, JoinOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// PurgeRoom deletes everything this server holds of a room. Local users
// still joined make it fail unless force: their clients would be left
// with a room that no longer exists.
func (s *Service) PurgeRoom(ctx context.Context, roomID string, force bool) error {
	if !force {
		joined, err := s.store.JoinedUserIDs(ctx, roomID)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(joined, s.isLocal) {
			return mxhttp.Unknown("Users are still joined to this room")
		}
	}
	// No event may be written to the room while its rows go.
	s.write.Lock()
	defer s.write.Unlock()
	unlock, err := s.store.LockRoom(ctx, roomID)
	if err != nil {
		return err
	}
	defer unlock()
	return s.store.PurgeRoom(ctx, roomID)
}

// HistoryPurgePoint returns the depth below which PurgeHistory deletes:
// that of eventID when set (which must be in the room; it and the events
// at its depth stay), else that of the last event before beforeTS.
func (s *Service) HistoryPurgePoint(ctx context.Context, roomID, eventID string, beforeTS int64) (int64, error) {
	if err := s.knownRoomForAdmin(ctx, roomID); err != nil {
		return 0, err
	}
	if eventID != "" {
		ev, err := s.store.GetEvent(ctx, eventID)
		if errors.Is(err, ErrNotFound) {
			return 0, mxhttp.NotFound("Could not find event %s", eventID)
		}
		if err != nil {
			return 0, err
		}
		if ev.RoomID != roomID {
			return 0, mxhttp.Unknown("Event is for wrong room.")
		}
		return ev.Depth, nil
	}
	evs, err := s.store.EventsByTime(ctx, roomID, beforeTS, 0, false, 1)
	if err != nil {
		return 0, err
	}
	if len(evs) == 0 {
		return 0, mxhttp.NotFound("there is no event to be purged")
	}
	return evs[0].Depth, nil
}

// PurgeHistory deletes the room's timeline events below depth: those of
// other servers' users, and this server's users' too when deleteLocal
// (they may be the only copies there are). State events and the room's
// forward extremities stay, so that the current state, every state
// group and the room's next events keep what they reference.
func (s *Service) PurgeHistory(ctx context.Context, roomID string, depth int64, deleteLocal bool) (int64, error) {
	keep := ":" + s.server
	if deleteLocal {
		keep = ""
	}
	// The forward extremities must not change while the events go.
	s.write.Lock()
	defer s.write.Unlock()
	unlock, err := s.store.LockRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return s.store.PurgeHistory(ctx, roomID, depth, keep)
}
