package rooms

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// StateEvent is a state event of createRoom's initial_state.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is the body of POST /createRoom.
type CreateRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	InitialState              []StateEvent               `json:"initial_state"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
	IsDirect                  bool                       `json:"is_direct"`
	Preset                    string                     `json:"preset"`
	RoomVersion               string                     `json:"room_version"`

	// AppServiceID is the application service making the request, if any,
	// for the alias guard; not part of the body.
	AppServiceID string `json:"-"`
}

// Presets of createRoom.
const (
	PresetPrivate        = "private_chat"
	PresetTrustedPrivate = "trusted_private_chat"
	PresetPublic         = "public_chat"
)

// CreateRoom creates a room and sends its initial events in the order the
// spec gives, each through the auth rules. What can be checked is checked
// before the room is made; initial state that the auth rules refuse (the
// creator's power lowered below what the following events need, say) is
// M_INVALID_ROOM_STATE, as the spec has it, and the half-made room is left
// by its creator and loses the alias it was given.
func (s *Service) CreateRoom(ctx context.Context, creator string, req CreateRoomRequest) (_ string, err error) {
	switch req.Visibility {
	case "", "private", "public":
	default:
		return "", mxhttp.InvalidParam("Invalid visibility %q", req.Visibility)
	}
	if req.Preset == "" {
		req.Preset = PresetPrivate
		if req.Visibility == "public" {
			req.Preset = PresetPublic
		}
	}
	if !slices.Contains([]string{PresetPrivate, PresetTrustedPrivate, PresetPublic}, req.Preset) {
		return "", mxhttp.InvalidParam("Invalid preset %q", req.Preset)
	}
	version := req.RoomVersion
	if version == "" {
		version = s.version
	}
	if !pdu.SupportedVersion(version) {
		return "", &mxhttp.Error{Status: 400, Code: "M_UNSUPPORTED_ROOM_VERSION", Message: "Unsupported room version " + version}
	}
	for _, u := range req.Invite {
		if !ValidUserID(u) {
			return "", mxhttp.InvalidParam("Invalid user ID to invite: %q", u)
		}
		if err := s.checkInvitee(ctx, u); err != nil {
			return "", err
		}
	}
	for _, st := range req.InitialState {
		if st.Type == "" || len(st.Content) == 0 {
			return "", mxhttp.BadJSON("initial_state events need a type and content")
		}
		if st.Type == "m.room.member" {
			return "", mxhttp.BadJSON("initial_state cannot set memberships")
		}
		if err := pdu.ValidateJSON(st.Content); err != nil {
			return "", mxhttp.BadJSON("initial_state content: %v", err)
		}
	}
	alias := ""
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + s.server
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") || !validAlias(alias) {
			return "", &mxhttp.Error{Status: 400, Code: "M_INVALID_PARAM", Message: "Invalid room_alias_name"}
		}
		if err := s.checkAliasGuard(alias, req.AppServiceID); err != nil {
			return "", err
		}
		if _, _, err := s.store.ResolveAlias(ctx, alias); err == nil {
			return "", &mxhttp.Error{Status: 400, Code: "M_ROOM_IN_USE", Message: "Room alias already taken"}
		} else if !errors.Is(err, ErrNotFound) {
			return "", err
		}
	}

	// 1. m.room.create
	create := map[string]json.RawMessage{}
	maps.Copy(create, req.CreationContent)
	create["room_version"] = jsonString(version)
	switch version {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10":
		create["creator"] = jsonString(creator)
	default:
		delete(create, "creator")
	}
	if version == "12" && req.Preset == PresetTrustedPrivate && len(req.Invite) > 0 {
		var extra []string
		_ = json.Unmarshal(create["additional_creators"], &extra)
		for _, u := range req.Invite {
			if !slices.Contains(extra, u) {
				extra = append(extra, u)
			}
		}
		create["additional_creators"], _ = json.Marshal(extra)
	}
	if version == "12" {
		if err := checkCreatorsUnlisted(creator, create["additional_creators"], req.PowerLevelContentOverride["users"]); err != nil {
			return "", err
		}
	}
	roomID := ""
	if version != "12" {
		roomID = "!" + randomID(18) + ":" + s.server
	}
	ev, err := s.submit(ctx, pdu.Proto{
		Sender: creator, RoomID: roomID, Type: "m.room.create", StateKey: ptr(""), Content: mustJSON(create),
	}, NewEvent{Room: &Room{Version: version, Creator: creator, CreatedTS: s.now().UnixMilli()}})
	if err != nil {
		return "", err
	}
	roomID = ev.RoomID()
	aliasMade := false
	defer func() {
		if err == nil {
			return
		}
		// Best effort: nobody is left in the half-made room, and the alias
		// is free again.
		if aliasMade {
			_ = s.store.DeleteAlias(ctx, alias)
		}
		if m, merr := s.store.Membership(ctx, roomID, creator); merr == nil && m == "join" {
			_, _ = s.submit(ctx, pdu.Proto{Sender: creator, RoomID: roomID, Type: "m.room.member", StateKey: &creator,
				Content: mustJSON(map[string]string{"membership": "leave"})}, NewEvent{})
		}
		s.log.Info("room creation failed", "room_id", roomID, "creator", creator, "err", err)
	}()

	send := func(eventType, stateKey string, content any) error {
		body, ok := content.(json.RawMessage)
		if !ok {
			body = mustJSON(content)
		}
		_, err := s.submit(ctx, pdu.Proto{Sender: creator, RoomID: roomID, Type: eventType, StateKey: &stateKey, Content: body}, NewEvent{})
		var me *mxhttp.Error
		if errors.As(err, &me) && me.Code == "M_FORBIDDEN" {
			// The auth rules refuse the state the request implies.
			return &mxhttp.Error{Status: 400, Code: "M_INVALID_ROOM_STATE", Message: "Invalid initial state: " + me.Message}
		}
		return err
	}
	// 2. The creator joins.
	if err := send("m.room.member", creator, s.memberContent(ctx, creator, "join", "", nil)); err != nil {
		return "", err
	}
	// 3. Power levels.
	if err := send("m.room.power_levels", "", s.initialPowerLevels(version, creator, req)); err != nil {
		return "", err
	}
	// 4. Canonical alias.
	if alias != "" {
		if err := s.store.CreateAlias(ctx, alias, roomID, creator); err != nil {
			if errors.Is(err, ErrAliasExists) {
				return "", &mxhttp.Error{Status: 400, Code: "M_ROOM_IN_USE", Message: "Room alias already taken"}
			}
			return "", err
		}
		aliasMade = true
		if err := send("m.room.canonical_alias", "", map[string]string{"alias": alias}); err != nil {
			return "", err
		}
	}
	// 5. The preset's state, unless initial_state sets it.
	overridden := func(t string) bool {
		return slices.ContainsFunc(req.InitialState, func(st StateEvent) bool { return st.Type == t && st.StateKey == "" })
	}
	joinRule, guest := "invite", "can_join"
	if req.Preset == PresetPublic {
		joinRule, guest = "public", "forbidden"
	}
	for _, st := range []struct {
		t   string
		key string
		val string
	}{
		{"m.room.join_rules", "join_rule", joinRule},
		{"m.room.history_visibility", "history_visibility", "shared"},
		{"m.room.guest_access", "guest_access", guest},
	} {
		if overridden(st.t) {
			continue
		}
		if err := send(st.t, "", map[string]string{st.key: st.val}); err != nil {
			return "", err
		}
	}
	// 6. initial_state, in order.
	for _, st := range req.InitialState {
		if err := send(st.Type, st.StateKey, st.Content); err != nil {
			return "", err
		}
	}
	// 7. Name and topic.
	if req.Name != nil {
		if err := send("m.room.name", "", map[string]string{"name": *req.Name}); err != nil {
			return "", err
		}
	}
	if req.Topic != nil {
		topic := map[string]any{"topic": *req.Topic, "m.topic": map[string]any{
			"m.text": []map[string]string{{"body": *req.Topic, "mimetype": "text/plain"}},
		}}
		if err := send("m.room.topic", "", topic); err != nil {
			return "", err
		}
	}
	// 8. Invites.
	for _, u := range req.Invite {
		if _, err := s.Invite(ctx, creator, roomID, u, "", req.IsDirect); err != nil {
			return "", err
		}
	}
	if req.Visibility == "public" {
		if err := s.store.SetPublished(ctx, roomID, true); err != nil {
			return "", err
		}
	}
	s.log.Info("created room", "room_id", roomID, "version", version, "creator", creator)
	return roomID, nil
}

func (s *Service) initialPowerLevels(version, creator string, req CreateRoomRequest) json.RawMessage {
	users := map[string]int64{}
	tombstone := int64(100)
	if version == "12" {
		tombstone = 150 // must exceed state_default: creators alone upgrade
	} else {
		users[creator] = 100
		if req.Preset == PresetTrustedPrivate {
			for _, u := range req.Invite {
				users[u] = 100
			}
		}
	}
	invite := int64(0)
	if req.Preset == PresetPublic {
		invite = 50
	}
	pl := map[string]any{
		"users":         users,
		"users_default": 0,
		"events": map[string]int64{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstone,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite,
		"historical": 100, "notifications": map[string]int64{"room": 50},
	}
	out := map[string]json.RawMessage{}
	for k, v := range pl {
		out[k] = mustJSON(v)
	}
	maps.Copy(out, req.PowerLevelContentOverride)
	return mustJSON(out)
}

// checkCreatorsUnlisted refuses power levels that list a creator of a room
// version 12 room: creators have infinite power and the auth rules refuse
// them in users. Refused before the room is made, as a bad request rather
// than the auth rules' 403, as Synapse does.
func checkCreatorsUnlisted(creator string, additional, users json.RawMessage) error {
	if len(users) == 0 {
		return nil
	}
	var listed map[string]json.RawMessage
	if err := json.Unmarshal(users, &listed); err != nil {
		return mxhttp.BadJSON("power_level_content_override.users must be an object")
	}
	var creators []string
	_ = json.Unmarshal(additional, &creators)
	for _, c := range append(creators, creator) {
		if _, ok := listed[c]; ok {
			return mxhttp.BadJSON("Creator %s must not appear in power_level_content_override.users", c)
		}
	}
	return nil
}

func jsonString(s string) json.RawMessage { return mustJSON(s) }

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on values built here
	}
	return b
}

func ptr[T any](v T) *T { return &v }

func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
