package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// memberContent is the content of a membership event; local users' joins
// and invites carry their profile, as clients expect.
func (s *Service) memberContent(ctx context.Context, target, membership, reason string, extra map[string]any) map[string]any {
	c := map[string]any{"membership": membership}
	if membership == "join" || membership == "invite" || membership == "knock" {
		if s.isLocal(target) && s.profiles != nil {
			if name, avatar, err := s.profiles.Profile(ctx, target); err == nil {
				if name != "" {
					c["displayname"] = name
				}
				if avatar != "" {
					c["avatar_url"] = avatar
				}
			}
		}
	}
	if reason != "" {
		c["reason"] = reason
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func (s *Service) isLocal(userID string) bool { return strings.HasSuffix(userID, ":"+s.server) }

func (s *Service) sendMembership(ctx context.Context, sender, roomID, target string, content map[string]any) (string, error) {
	if err := s.checkRoomID(roomID); err != nil {
		return "", err
	}
	ev, err := s.submit(ctx, pdu.Proto{
		Sender: sender, RoomID: roomID, Type: "m.room.member", StateKey: &target, Content: mustJSON(content),
	}, NewEvent{})
	if err != nil {
		return "", err
	}
	return ev.ID(), nil
}

// ResolveRoom turns a room ID or a local alias into a room ID.
func (s *Service) ResolveRoom(ctx context.Context, roomIDOrAlias string) (string, error) {
	if strings.HasPrefix(roomIDOrAlias, "#") {
		target, err := s.ResolveAlias(ctx, roomIDOrAlias)
		return target.RoomID, err
	}
	if err := s.checkRoomID(roomIDOrAlias); err != nil {
		return "", err
	}
	return roomIDOrAlias, nil
}

// Join makes user join a room by ID or alias; joining a room one is in
// already changes nothing.
func (s *Service) Join(ctx context.Context, user, roomIDOrAlias, reason string) (string, error) {
	return s.JoinWith(ctx, user, roomIDOrAlias, JoinOptions{Reason: reason})
}

// JoinOptions are a client's join.
type JoinOptions struct {
	Reason string
	// Via are the servers to join through when this server is not in the
	// room (the client's via or server_name).
	Via []string
	// Guest tells that user is a guest account, which may join only rooms
	// whose m.room.guest_access is can_join.
	Guest bool
	// Content holds the other keys of the client's body, which the spec
	// (and Synapse) add to the member event's content.
	Content map[string]any
}

// JoinWith is Join as a client asks it.
func (s *Service) JoinWith(ctx context.Context, user, roomIDOrAlias string, o JoinOptions) (string, error) {
	t, err := s.locateRoom(ctx, roomIDOrAlias, o.Via)
	if err != nil {
		return "", err
	}
	roomID := t.roomID
	current := ""
	if t.known {
		if current, err = s.store.Membership(ctx, roomID, user); err != nil {
			return "", err
		}
	}
	if current == "join" {
		return roomID, nil
	}
	if err := s.checkNotBlocked(ctx, roomID); err != nil {
		return "", err
	}
	if o.Guest {
		if err := s.checkGuestsMayJoin(ctx, t); err != nil {
			return "", err
		}
	}
	extra := map[string]any{}
	for k, v := range o.Content {
		if k != "membership" {
			extra[k] = v
		}
	}
	if !t.in {
		return roomID, s.joinRemote(ctx, user, roomID, o.Reason, t.via, extra)
	}
	restricted, err := s.restrictedJoin(ctx, roomID, user, current)
	if err != nil {
		return "", err
	}
	maps.Copy(extra, restricted)
	if _, err := s.sendMembership(ctx, user, roomID, user, s.memberContent(ctx, user, "join", o.Reason, extra)); err != nil {
		return "", err
	}
	return roomID, nil
}

// checkGuestsMayJoin refuses a guest's join unless the room's current
// m.room.guest_access is can_join. Guest accounts are this server's own
// notion, which other servers cannot check, so a room this server is not in
// (whose state it does not hold) is closed to guests, as in Synapse.
func (s *Service) checkGuestsMayJoin(ctx context.Context, t roomTarget) error {
	if t.in {
		st, err := s.store.CurrentState(ctx, t.roomID, []pdu.StateKey{{Type: "m.room.guest_access"}})
		if err != nil {
			return err
		}
		for _, e := range st {
			var c struct {
				Content struct {
					GuestAccess string `json:"guest_access"`
				} `json:"content"`
			}
			if json.Unmarshal(e.JSON, &c) == nil && c.Content.GuestAccess == "can_join" {
				return nil
			}
		}
	}
	return mxhttp.GuestAccessForbidden("This room does not allow guests to join")
}

// roomTarget is the room a join or knock is for.
type roomTarget struct {
	roomID string
	// via are the servers to go through, should this server not be in the
	// room: the client's, then the alias's.
	via []string
	// known tells whether this server knows the room at all, in whether
	// it has a joined member.
	known, in bool
}

// locateRoom resolves the room ID or alias of a join or knock and tells
// how this server stands towards the room.
func (s *Service) locateRoom(ctx context.Context, roomIDOrAlias string, via []string) (roomTarget, error) {
	t := roomTarget{roomID: roomIDOrAlias, via: via}
	if strings.HasPrefix(roomIDOrAlias, "#") {
		target, err := s.ResolveAlias(ctx, roomIDOrAlias)
		if err != nil {
			return t, err
		}
		t.roomID = target.RoomID
		t.via = append(slices.Clone(via), target.Servers...)
	} else if err := s.checkRoomID(t.roomID); err != nil {
		return t, err
	}
	_, err := s.store.GetRoom(ctx, t.roomID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return t, err
	}
	t.known = err == nil
	if t.known {
		if t.in, err = s.InRoom(ctx, t.roomID); err != nil {
			return t, err
		}
	}
	return t, nil
}

// joinRemote joins a room this server is not in through the servers that
// may know it: those given, the inviter's, and the room ID's own.
func (s *Service) joinRemote(ctx context.Context, user, roomID, reason string, via []string, extra map[string]any) error {
	if s.remote == nil {
		return mxhttp.NotFound("No known servers to join %s through", roomID)
	}
	candidates := s.remoteServers(ctx, roomID, user, via)
	if len(candidates) == 0 {
		return mxhttp.NotFound("No known servers to join %s through", roomID)
	}
	return s.remote.Join(ctx, user, roomID, candidates, s.memberContent(ctx, user, "join", reason, extra))
}

// remoteServers lists the other servers that may know a room this server
// is not in, in the order to try them: those given, the inviter's (when
// the user's membership is an invite), and the room ID's own.
func (s *Service) remoteServers(ctx context.Context, roomID, user string, via []string) []string {
	servers := slices.Clone(via)
	if members, err := s.store.MemberEvents(ctx, roomID, user); err == nil && len(members) > 0 {
		if last := members[len(members)-1]; last.Membership == "invite" {
			servers = append(servers, serverOf(last.Sender))
		}
	}
	if server := serverOf(roomID); server != "" {
		servers = append(servers, server)
	}
	var candidates []string
	for _, sv := range servers {
		if sv != "" && sv != s.server && !slices.Contains(candidates, sv) {
			candidates = append(candidates, sv)
		}
	}
	return candidates
}

// strippedStateServers lists the servers of the senders of the stripped
// state kept for a room this server is not in (from a remote invite or an
// own knock): residents of the room, as far as this server knows.
func (s *Service) strippedStateServers(ctx context.Context, roomID, user string) []string {
	data, err := s.store.InviteState(ctx, roomID, user)
	if err != nil || data == nil {
		return nil
	}
	var evs []struct {
		Sender string `json:"sender"`
	}
	if json.Unmarshal(data, &evs) != nil {
		return nil
	}
	var out []string
	for _, e := range evs {
		if sv := serverOf(e.Sender); sv != "" && !slices.Contains(out, sv) {
			out = append(out, sv)
		}
	}
	return out
}

// restrictedJoin authorises a join to a restricted room through membership
// of an allowed room: the join names a local member who may invite.
func (s *Service) restrictedJoin(ctx context.Context, roomID, user, current string) (map[string]any, error) {
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.join_rules"}})
	if err != nil || len(st) == 0 {
		return nil, err
	}
	var c struct {
		Content struct {
			JoinRule string `json:"join_rule"`
			Allow    []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		} `json:"content"`
	}
	if json.Unmarshal(st[0].JSON, &c) != nil {
		return nil, nil
	}
	if c.Content.JoinRule != "restricted" && c.Content.JoinRule != "knock_restricted" {
		return nil, nil
	}
	if current == "invite" {
		return nil, nil // an invite is enough
	}
	allowed := false
	for _, a := range c.Content.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		if m, err := s.store.Membership(ctx, a.RoomID, user); err != nil {
			return nil, err
		} else if m == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		return nil, mxhttp.Forbidden("You are not allowed to join this room")
	}
	pl, err := s.loadPowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	members, err := s.store.CurrentStateOfType(ctx, roomID, "m.room.member")
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.Membership == "join" && s.isLocal(*m.StateKey) && pl.UserLevel(*m.StateKey) >= pl.invite {
			return map[string]any{"join_authorised_via_users_server": *m.StateKey}, nil
		}
	}
	return nil, mxhttp.Forbidden("No local member can authorise your join")
}

// Invite invites target on behalf of sender. A user of another server is
// invited through their server, which must sign the invite before it is
// stored.
func (s *Service) Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) (string, error) {
	if err := s.checkInvitee(ctx, target); err != nil {
		return "", err
	}
	if err := s.checkNotBlocked(ctx, roomID); err != nil {
		return "", err
	}
	extra := map[string]any{}
	if isDirect {
		extra["is_direct"] = true
	}
	content := s.memberContent(ctx, target, "invite", reason, extra)
	if s.isLocal(target) {
		return s.sendMembership(ctx, sender, roomID, target, content)
	}
	if err := s.checkRoomID(roomID); err != nil {
		return "", err
	}
	ev, err := s.buildChecked(ctx, pdu.Proto{Sender: sender, RoomID: roomID, Type: "m.room.member", StateKey: &target, Content: mustJSON(content)})
	if err != nil {
		return "", err
	}
	stripped, err := s.StrippedState(ctx, roomID, sender)
	if err != nil {
		return "", err
	}
	signed, err := s.remote.Invite(ctx, ev, stripped)
	if err != nil {
		return "", err
	}
	if err := s.ReceiveEvent(ctx, signed); err != nil {
		var rej *RejectedError
		if errors.As(err, &rej) || errors.Is(err, ErrSoftFailed) {
			return "", mxhttp.Forbidden("The invite is no longer allowed: %v", err)
		}
		return "", err
	}
	return signed.ID(), nil
}

// buildChecked builds and authorises an event against the current state
// without storing it, for events another server must see first (invites).
func (s *Service) buildChecked(ctx context.Context, p pdu.Proto) (*pdu.Event, error) {
	if err := checkProto(p); err != nil {
		return nil, err
	}
	room, err := s.store.GetRoom(ctx, p.RoomID)
	if errors.Is(err, ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", p.RoomID)
	}
	if err != nil {
		return nil, err
	}
	prevs, depth, err := s.store.Extremities(ctx, p.RoomID)
	if err != nil {
		return nil, err
	}
	keys, err := pdu.NeededForAuth(p, room.Version)
	if err != nil {
		return nil, mxhttp.BadJSON("%v", err)
	}
	state, err := s.loadAuthState(ctx, p.RoomID, room.Version, keys)
	if err != nil {
		return nil, err
	}
	p.OriginTS = 0 // stamped now: an invite carries no client-chosen time
	return s.buildAllowed(p, room.Version, prevs, depth+1, state)
}

// checkInvitee checks that target is a user who can be invited.
func (s *Service) checkInvitee(ctx context.Context, target string) error {
	if !ValidUserID(target) {
		return mxhttp.InvalidParam("Invalid user ID %q", target)
	}
	if !s.isLocal(target) {
		if s.remote == nil {
			return mxhttp.Forbidden("Cannot invite users of other servers: federation is not available")
		}
		return nil
	}
	if s.profiles != nil {
		ok, err := s.profiles.Exists(ctx, target)
		if err != nil {
			return err
		}
		if !ok {
			return mxhttp.NotFound("Unknown user %s", target)
		}
	}
	return nil
}

// Leave leaves a room, or rejects an invite or rescinds a knock.
func (s *Service) Leave(ctx context.Context, user, roomID, reason string) error {
	if err := s.checkRoomID(roomID); err != nil {
		return err
	}
	current, err := s.store.Membership(ctx, roomID, user)
	if err != nil {
		return err
	}
	if current == "" || current == "leave" {
		if _, err := s.store.GetRoom(ctx, roomID); errors.Is(err, ErrNotFound) {
			return mxhttp.NotFound("Unknown room")
		}
		return mxhttp.Forbidden("You are not in this room")
	}
	// As in Synapse, an invite to a server notices room (one the notices
	// user is joined to) cannot be rejected; once joined, the user may leave.
	if current == "invite" && s.notices != "" && user != s.notices {
		if m, err := s.store.Membership(ctx, roomID, s.notices); err != nil {
			return err
		} else if m == "join" {
			return &mxhttp.Error{Status: http.StatusForbidden, Code: "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", Message: "You cannot reject this invite"}
		}
	}
	if in, err := s.InRoom(ctx, roomID); err != nil {
		return err
	} else if !in && (current == "invite" || current == "knock") && s.remote != nil {
		// An invite to a room this server is not in is rejected through
		// the inviting server, a knock rescinded through a server of the
		// room; then those of the room's state as this server was shown it.
		members, err := s.store.MemberEvents(ctx, roomID, user)
		if err != nil {
			return err
		}
		var servers []string
		if len(members) > 0 && current == "invite" {
			servers = append(servers, serverOf(members[len(members)-1].Sender))
		}
		for _, sv := range append([]string{serverOf(roomID)}, s.strippedStateServers(ctx, roomID, user)...) {
			if sv != "" && sv != s.server && !slices.Contains(servers, sv) {
				servers = append(servers, sv)
			}
		}
		return s.remote.Leave(ctx, user, roomID, servers)
	}
	_, err = s.sendMembership(ctx, user, roomID, user, s.memberContent(ctx, user, "leave", reason, nil))
	return err
}

// Kick removes target from a room.
func (s *Service) Kick(ctx context.Context, sender, roomID, target, reason string) error {
	if !ValidUserID(target) {
		return mxhttp.InvalidParam("Invalid user ID %q", target)
	}
	if err := s.checkRoomID(roomID); err != nil {
		return err
	}
	current, err := s.store.Membership(ctx, roomID, target)
	if err != nil {
		return err
	}
	if !slices.Contains([]string{"join", "invite", "knock"}, current) {
		return mxhttp.Forbidden("The target user is not in the room")
	}
	_, err = s.sendMembership(ctx, sender, roomID, target, s.memberContent(ctx, target, "leave", reason, nil))
	return err
}

// Ban bans target from a room.
func (s *Service) Ban(ctx context.Context, sender, roomID, target, reason string) error {
	if !ValidUserID(target) {
		return mxhttp.InvalidParam("Invalid user ID %q", target)
	}
	_, err := s.sendMembership(ctx, sender, roomID, target, s.memberContent(ctx, target, "ban", reason, nil))
	return err
}

// Unban lifts a ban.
func (s *Service) Unban(ctx context.Context, sender, roomID, target, reason string) error {
	if !ValidUserID(target) {
		return mxhttp.InvalidParam("Invalid user ID %q", target)
	}
	if err := s.checkRoomID(roomID); err != nil {
		return err
	}
	current, err := s.store.Membership(ctx, roomID, target)
	if err != nil {
		return err
	}
	if current != "ban" {
		return &mxhttp.Error{Status: 400, Code: "M_BAD_STATE", Message: "The user is not banned"}
	}
	_, err = s.sendMembership(ctx, sender, roomID, target, s.memberContent(ctx, target, "leave", reason, nil))
	return err
}

// Knock asks to join a room whose join rule is knock or knock_restricted.
func (s *Service) Knock(ctx context.Context, user, roomIDOrAlias, reason string) (string, error) {
	return s.KnockVia(ctx, user, roomIDOrAlias, reason, nil)
}

// KnockVia is Knock with servers to knock through when this server is not
// in the room (the client's via or server_name): the knock then goes
// through make_knock and send_knock on one of them, the alias's servers or
// the room ID's.
func (s *Service) KnockVia(ctx context.Context, user, roomIDOrAlias, reason string, via []string) (string, error) {
	t, err := s.locateRoom(ctx, roomIDOrAlias, via)
	if err != nil {
		return "", err
	}
	roomID := t.roomID
	if err := s.checkNotBlocked(ctx, roomID); err != nil {
		return "", err
	}
	if !t.in && s.remote != nil {
		candidates := s.remoteServers(ctx, roomID, user, t.via)
		if len(candidates) == 0 {
			return "", mxhttp.NotFound("No known servers to knock through")
		}
		return roomID, s.remote.Knock(ctx, user, roomID, candidates, s.memberContent(ctx, user, "knock", reason, nil))
	}
	if !t.known {
		return "", mxhttp.NotFound("No known servers to knock through")
	}
	if _, err := s.sendMembership(ctx, user, roomID, user, s.memberContent(ctx, user, "knock", reason, nil)); err != nil {
		return "", err
	}
	return roomID, nil
}

// Forget hides a room the user has left from their history.
func (s *Service) Forget(ctx context.Context, user, roomID string) error {
	if err := s.checkRoomID(roomID); err != nil {
		return err
	}
	current, err := s.store.Membership(ctx, roomID, user)
	if err != nil {
		return err
	}
	switch current {
	case "join", "invite", "knock":
		return mxhttp.Unknown("The user has not left the room")
	case "":
		return mxhttp.NotFound("You have never been in this room")
	}
	return s.store.Forget(ctx, user, roomID)
}

// JoinedRooms lists the rooms the user is joined to.
func (s *Service) JoinedRooms(ctx context.Context, user string) ([]string, error) {
	return s.store.RoomsOf(ctx, user, "join")
}

// UpdateMemberProfiles re-sends the user's join in every room they are in
// after a profile change, so that members see the new name and avatar.
func (s *Service) UpdateMemberProfiles(ctx context.Context, user string) error {
	joined, err := s.store.RoomsOf(ctx, user, "join")
	if err != nil {
		return err
	}
	for _, roomID := range joined {
		if _, err := s.sendMembership(ctx, user, roomID, user, s.memberContent(ctx, user, "join", "", nil)); err != nil {
			// A room whose rules refuse the update must not block the others.
			s.log.Warn("updating membership profile", "room_id", roomID, "user_id", user, "err", err)
		}
	}
	return nil
}

// Membership returns the user's current membership of a room ("" if none).
func (s *Service) Membership(ctx context.Context, roomID, user string) (string, error) {
	return s.store.Membership(ctx, roomID, user)
}

// RoomsWithMembership lists the rooms where the user's current membership is m.
func (s *Service) RoomsWithMembership(ctx context.Context, user, m string) ([]string, error) {
	return s.store.RoomsOf(ctx, user, m)
}
