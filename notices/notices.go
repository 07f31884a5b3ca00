// Package notices sends server notices, as Synapse does: messages from a
// system user of this server, each user's in a private room of their own
// that the system user creates on the first notice, tags m.server_notice
// for them and invites them to. The user cannot reject that invite (the
// rooms package refuses it) nor speak in the room (its power levels), but
// may leave once joined; the next notice then makes a new room.
package notices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/rooms"
)

// RoomTag marks the notices room in the user's tags.
const RoomTag = "m.server_notice"

// Config is Synapse's server_notices block.
type Config struct {
	ServerName    string
	Localpart     string
	DisplayName   string
	AvatarURL     string
	RoomName      string
	RoomAvatarURL string
	RoomTopic     string
	AutoJoin      bool
	Logger        *slog.Logger
}

// Accounts is what the notices ask of the accounts service.
type Accounts interface {
	GetAccount(ctx context.Context, userID string) (accounts.Account, error)
	Register(ctx context.Context, req accounts.RegisterRequest) (accounts.Credentials, error)
	GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	SetProfileField(ctx context.Context, r *accounts.Requester, userID, key string, value json.RawMessage) error
}

// Rooms is what the notices ask of the rooms service, the writer of their
// rooms and events.
type Rooms interface {
	CreateRoom(ctx context.Context, creator string, req rooms.CreateRoomRequest) (string, error)
	RoomsWithMembership(ctx context.Context, user, m string) ([]string, error)
	Membership(ctx context.Context, roomID, user string) (string, error)
	Join(ctx context.Context, user, roomIDOrAlias, reason string) (string, error)
	Send(ctx context.Context, req rooms.SendRequest) (string, error)
	UpdateMemberProfiles(ctx context.Context, user string) error
}

// Tags sets room tags (the account data service).
type Tags interface {
	SetTag(ctx context.Context, userID, roomID, tag string, content json.RawMessage) error
}

// Service sends server notices.
type Service struct {
	cfg      Config
	accounts Accounts
	rooms    Rooms
	tags     Tags
	log      *slog.Logger

	// mu makes finding or creating a user's room, and the system user,
	// one step: two notices at once must not make two rooms.
	mu          sync.Mutex
	userChecked bool
}

// New returns the notices service.
func New(c Config, acc Accounts, rms Rooms, tags Tags) *Service {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Service{cfg: c, accounts: acc, rooms: rms, tags: tags, log: c.Logger}
}

// SystemUser is the user ID notices come from.
func (s *Service) SystemUser() string { return "@" + s.cfg.Localpart + ":" + s.cfg.ServerName }

// Notice is one notice for a local user.
type Notice struct {
	UserID string
	// Type defaults to m.room.message.
	Type string
	// StateKey, when set, makes the notice a state event.
	StateKey *string
	Content  json.RawMessage
	// Txn makes a retried request return the first one's event.
	Txn *rooms.TxnRef
}

// Send sends a notice into the user's notices room, creating the room
// (and the system user) when needed, and returns the event ID.
func (s *Service) Send(ctx context.Context, n Notice) (string, error) {
	if !rooms.ValidUserID(n.UserID) {
		return "", mxhttp.InvalidParam("Invalid user ID %q", n.UserID)
	}
	if !s.isLocal(n.UserID) {
		return "", mxhttp.Unknown("Server notices can only be sent to local users")
	}
	if _, err := s.accounts.GetAccount(ctx, n.UserID); errors.Is(err, accounts.ErrNotFound) {
		return "", mxhttp.NotFound("User not found")
	} else if err != nil {
		return "", err
	}
	if n.Type == "" {
		n.Type = "m.room.message"
	}
	if err := checkContent(n.Type, n.Content); err != nil {
		return "", err
	}
	roomID, err := s.room(ctx, n.UserID)
	if err != nil {
		return "", err
	}
	s.log.Info("sending server notice", "user_id", n.UserID, "room_id", roomID)
	return s.rooms.Send(ctx, rooms.SendRequest{
		Sender: s.SystemUser(), RoomID: roomID, Type: n.Type, StateKey: n.StateKey, Content: n.Content, Txn: n.Txn,
	})
}

// checkContent refuses what Synapse's event validator refuses before the
// room is made: a message needs a string body and msgtype.
func checkContent(eventType string, content json.RawMessage) error {
	var c map[string]json.RawMessage
	isObject := json.Unmarshal(content, &c) == nil && c != nil
	if eventType == "m.room.message" {
		for _, key := range []string{"body", "msgtype"} {
			raw, ok := c[key]
			if !ok {
				return mxhttp.Unknown("'%s' not in content", key)
			}
			var str string
			if json.Unmarshal(raw, &str) != nil {
				return mxhttp.Unknown("'%s' not a string type", key)
			}
		}
	}
	if !isObject {
		return mxhttp.BadJSON("content must be an object")
	}
	return nil
}

func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.cfg.ServerName)
}

// room returns the user's notices room: one the system user is joined to
// and the user is invited to or joined, or a new one.
func (s *Service) room(ctx context.Context, userID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ensureSystemUser(ctx); err != nil {
		return "", err
	}
	system := s.SystemUser()
	for _, m := range []string{"join", "invite"} {
		ids, err := s.rooms.RoomsWithMembership(ctx, userID, m)
		if err != nil {
			return "", fmt.Errorf("notices: rooms of %s: %w", userID, err)
		}
		for _, id := range ids {
			sm, err := s.rooms.Membership(ctx, id, system)
			if err != nil {
				return "", fmt.Errorf("notices: membership in %s: %w", id, err)
			}
			if sm == "join" {
				return id, s.updateRoomInfo(ctx, id)
			}
		}
	}
	req := rooms.CreateRoomRequest{
		Preset: rooms.PresetPrivate,
		Name:   &s.cfg.RoomName,
		Invite: []string{userID},
		// Users below the default event level cannot send into the room.
		PowerLevelContentOverride: map[string]json.RawMessage{"users_default": json.RawMessage("-10")},
	}
	if s.cfg.RoomTopic != "" {
		req.Topic = &s.cfg.RoomTopic
	}
	if s.cfg.RoomAvatarURL != "" {
		content, _ := json.Marshal(map[string]string{"url": s.cfg.RoomAvatarURL})
		req.InitialState = append(req.InitialState, rooms.StateEvent{Type: "m.room.avatar", Content: content})
	}
	roomID, err := s.rooms.CreateRoom(ctx, system, req)
	if err != nil {
		return "", fmt.Errorf("notices: creating the room of %s: %w", userID, err)
	}
	if err := s.tags.SetTag(ctx, userID, roomID, RoomTag, json.RawMessage("{}")); err != nil {
		return "", fmt.Errorf("notices: tagging the room of %s: %w", userID, err)
	}
	if s.cfg.AutoJoin {
		if _, err := s.rooms.Join(ctx, userID, roomID, ""); err != nil {
			return "", fmt.Errorf("notices: joining %s to %s: %w", userID, roomID, err)
		}
	}
	s.log.Info("created server notices room", "user_id", userID, "room_id", roomID)
	return roomID, nil
}

// updateRoomInfo sets the configured name, topic and avatar of an
// existing notices room, which may predate a change of the configuration.
// Unchanged state is not sent again (the rooms service answers it with the
// current event).
func (s *Service) updateRoomInfo(ctx context.Context, roomID string) error {
	empty := ""
	for _, st := range []struct{ typ, key, value string }{
		{"m.room.name", "name", s.cfg.RoomName},
		{"m.room.topic", "topic", s.cfg.RoomTopic},
		{"m.room.avatar", "url", s.cfg.RoomAvatarURL},
	} {
		if st.value == "" {
			continue
		}
		content, _ := json.Marshal(map[string]string{st.key: st.value})
		if _, err := s.rooms.Send(ctx, rooms.SendRequest{
			Sender: s.SystemUser(), RoomID: roomID, Type: st.typ, StateKey: &empty, Content: content,
		}); err != nil {
			return fmt.Errorf("notices: %s of %s: %w", st.typ, roomID, err)
		}
	}
	return nil
}

// ensureSystemUser creates the system user, a local account without a
// password, or brings its profile in line with the configuration, which
// may have changed since it was made: its rooms then show the new name
// and avatar, as in Synapse. It runs under s.mu, once per process.
func (s *Service) ensureSystemUser(ctx context.Context) error {
	if s.userChecked {
		return nil
	}
	system := s.SystemUser()
	_, err := s.accounts.GetAccount(ctx, system)
	if errors.Is(err, accounts.ErrNotFound) {
		_, err = s.accounts.Register(ctx, accounts.RegisterRequest{
			Localpart: s.cfg.Localpart, DisplayName: s.cfg.DisplayName, InhibitLogin: true,
		})
		if err == nil {
			s.log.Info("created the server notices user", "user_id", system)
		}
	}
	if err != nil {
		return fmt.Errorf("notices: system user %s: %w", system, err)
	}
	changed, err := s.syncProfile(ctx)
	if err != nil {
		return fmt.Errorf("notices: profile of %s: %w", system, err)
	}
	if changed {
		if err := s.rooms.UpdateMemberProfiles(ctx, system); err != nil {
			return fmt.Errorf("notices: profile of %s in its rooms: %w", system, err)
		}
	}
	s.userChecked = true
	return nil
}

// syncProfile sets the configured display name and avatar of the system
// user where they differ from its profile, reporting whether any did.
func (s *Service) syncProfile(ctx context.Context) (bool, error) {
	system := s.SystemUser()
	profile, err := s.accounts.GetProfile(ctx, system)
	if err != nil {
		return false, err
	}
	changed := false
	for _, f := range []struct{ key, want string }{{"displayname", s.cfg.DisplayName}, {"avatar_url", s.cfg.AvatarURL}} {
		var have string
		_ = json.Unmarshal(profile[f.key], &have)
		if f.want == "" || have == f.want {
			continue
		}
		value, _ := json.Marshal(f.want)
		if err := s.accounts.SetProfileField(ctx, &accounts.Requester{UserID: system}, system, f.key, value); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}
