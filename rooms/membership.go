package rooms

import (
	"context"
	"encoding/json"
	"errors"
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
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	if _, err := s.store.GetRoom(ctx, roomID); errors.Is(err, ErrNotFound) {
		return "", mxhttp.NotFound("No known servers to join %s through", roomID)
	} else if err != nil {
		return "", err
	}
	current, err := s.store.Membership(ctx, roomID, user)
	if err != nil {
		return "", err
	}
	if current == "join" {
		return roomID, nil
	}
	extra, err := s.restrictedJoin(ctx, roomID, user, current)
	if err != nil {
		return "", err
	}
	if _, err := s.sendMembership(ctx, user, roomID, user, s.memberContent(ctx, user, "join", reason, extra)); err != nil {
		return "", err
	}
	return roomID, nil
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

// Invite invites target on behalf of sender.
func (s *Service) Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) (string, error) {
	if err := s.checkInvitee(ctx, target); err != nil {
		return "", err
	}
	extra := map[string]any{}
	if isDirect {
		extra["is_direct"] = true
	}
	return s.sendMembership(ctx, sender, roomID, target, s.memberContent(ctx, target, "invite", reason, extra))
}

// checkInvitee checks that target is a user who can be invited.
func (s *Service) checkInvitee(ctx context.Context, target string) error {
	if !ValidUserID(target) {
		return mxhttp.InvalidParam("Invalid user ID %q", target)
	}
	if !s.isLocal(target) {
		return mxhttp.Forbidden("Cannot invite users of other servers: federation is not available")
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
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	if _, err := s.store.GetRoom(ctx, roomID); errors.Is(err, ErrNotFound) {
		return "", mxhttp.NotFound("No known servers to knock through")
	} else if err != nil {
		return "", err
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
