package rooms

import (
	"context"
	"encoding/json"
	"maps"
	"math"
	"net/http"
	"slices"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// UpgradeRequest is the body of POST /rooms/{roomId}/upgrade.
type UpgradeRequest struct {
	NewVersion string `json:"new_version"`
	// AdditionalCreators of the new room, in versions that have them.
	AdditionalCreators []string `json:"additional_creators"`
}

// privilegedCreators reports whether a room version gives its creators
// infinite power and keeps them out of the power levels.
func privilegedCreators(version string) bool { return version == "12" }

// creatorInContent reports whether a room version's m.room.create names
// the creator in its content (before v11).
func creatorInContent(version string) bool {
	switch version {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10":
		return true
	}
	return false
}

// upgradeCopiedState is the state the new room takes over, in the order it
// is sent, after the power levels: the spec's recommended list.
var upgradeCopiedState = []string{
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
	"m.room.name", "m.room.topic", "m.room.avatar",
	"m.room.encryption", "m.room.server_acl",
}

// Upgrade replaces a room by a new one of another version, as the spec's
// server behaviour for room upgrades describes: it creates the replacement
// with a predecessor link and the old room's type, copies the transferable
// state and the bans, moves the local aliases (and the directory listing),
// tombstones the old room and restricts who may still speak there. It
// returns the new room's ID.
func (s *Service) Upgrade(ctx context.Context, user, roomID string, req UpgradeRequest) (string, error) {
	if req.NewVersion == "" {
		return "", mxhttp.MissingParam("Missing new_version")
	}
	if !pdu.SupportedVersion(req.NewVersion) {
		return "", &mxhttp.Error{Status: http.StatusBadRequest, Code: "M_UNSUPPORTED_ROOM_VERSION",
			Message: "This server does not support room version " + req.NewVersion}
	}
	var additional []string
	if privilegedCreators(req.NewVersion) {
		for _, u := range req.AdditionalCreators {
			if !ValidUserID(u) {
				return "", mxhttp.InvalidParam("Invalid user ID in additional_creators: %q", u)
			}
			if u != user && !slices.Contains(additional, u) {
				additional = append(additional, u)
			}
		}
	}
	room, err := s.knownRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	may, err := s.maySendState(ctx, roomID, user, "m.room.tombstone")
	if err != nil {
		return "", err
	}
	if !may {
		return "", mxhttp.Forbidden("You cannot upgrade this room")
	}

	keys := []pdu.StateKey{{Type: "m.room.create"}, {Type: "m.room.power_levels"}, {Type: "m.room.canonical_alias"}}
	for _, t := range upgradeCopiedState {
		keys = append(keys, pdu.StateKey{Type: t})
	}
	stored, err := s.store.CurrentState(ctx, roomID, keys)
	if err != nil {
		return "", err
	}
	versions := map[string]string{roomID: room.Version}
	old := map[string]json.RawMessage{}
	for _, e := range stored {
		if old[e.Type], err = s.currentContent(ctx, e, versions); err != nil {
			return "", err
		}
	}
	oldLevels, err := s.loadPowerLevels(ctx, roomID)
	if err != nil {
		return "", err
	}

	// The replacement room, created by the upgrader.
	create, err := s.upgradeCreateContent(ctx, user, roomID, req.NewVersion, old["m.room.create"], additional)
	if err != nil {
		return "", err
	}
	newRoomID := ""
	if !privilegedCreators(req.NewVersion) {
		newRoomID = "!" + randomID(18) + ":" + s.server
	}
	ev, err := s.submit(ctx, pdu.Proto{
		Sender: user, RoomID: newRoomID, Type: "m.room.create", StateKey: ptr(""), Content: mustJSON(create),
	}, NewEvent{Room: &Room{Version: req.NewVersion, Creator: user, CreatedTS: s.now().UnixMilli()}})
	if err != nil {
		return "", err
	}
	newRoomID = ev.RoomID()
	send := func(target, eventType, stateKey string, content json.RawMessage) error {
		_, err := s.submit(ctx, pdu.Proto{Sender: user, RoomID: target, Type: eventType, StateKey: &stateKey, Content: content}, NewEvent{})
		return err
	}
	if err := send(newRoomID, "m.room.member", user, mustJSON(s.memberContent(ctx, user, "join", "", nil))); err != nil {
		return "", err
	}

	// The power levels, with the upgrader raised for as long as it takes
	// to copy the state when they would not be allowed to.
	levels, final := upgradedPowerLevels(old["m.room.power_levels"], oldLevels, user, req.NewVersion, additional)
	if err := send(newRoomID, "m.room.power_levels", "", mustJSON(levels)); err != nil {
		return "", err
	}
	for _, t := range upgradeCopiedState {
		if content, ok := old[t]; ok {
			if err := send(newRoomID, t, "", content); err != nil {
				return "", err
			}
		}
	}
	bans, err := s.store.CurrentStateOfType(ctx, roomID, "m.room.member")
	if err != nil {
		return "", err
	}
	for _, b := range bans {
		if b.Membership != "ban" {
			continue
		}
		if err := send(newRoomID, "m.room.member", *b.StateKey, mustJSON(map[string]string{"membership": "ban"})); err != nil {
			return "", err
		}
	}

	// Local aliases, and the canonical alias naming them, move over.
	moved, err := s.store.MoveAliases(ctx, roomID, newRoomID)
	if err != nil {
		return "", err
	}
	if c := old["m.room.canonical_alias"]; c != nil && len(moved) > 0 {
		var content map[string]json.RawMessage
		if json.Unmarshal(c, &content) == nil {
			taken, _, changed := splitCanonicalAlias(content, moved)
			if changed {
				if err := send(newRoomID, "m.room.canonical_alias", "", mustJSON(taken)); err != nil {
					return "", err
				}
			}
		}
	}
	if final != nil {
		if err := send(newRoomID, "m.room.power_levels", "", mustJSON(final)); err != nil {
			return "", err
		}
	}
	if room.Published {
		if err := s.store.SetPublished(ctx, newRoomID, true); err != nil {
			return "", err
		}
		if err := s.store.SetPublished(ctx, roomID, false); err != nil {
			return "", err
		}
	}

	// The old room: its canonical alias no longer names the moved aliases,
	// a tombstone points to the new room, and only moderators may speak.
	if len(moved) > 0 {
		if err := s.removeCanonicalAliases(ctx, user, roomID, moved); err != nil {
			s.log.Warn("room upgrade: could not update the old room's canonical alias", "room_id", roomID, "err", err)
		}
	}
	tombstone := map[string]string{"body": "This room has been replaced", "replacement_room": newRoomID}
	if err := send(roomID, "m.room.tombstone", "", mustJSON(tombstone)); err != nil {
		return "", err
	}
	if err := s.restrictUpgradedRoom(ctx, user, roomID, old["m.room.power_levels"], oldLevels); err != nil {
		s.log.Warn("room upgrade: could not restrict the old room's power levels", "room_id", roomID, "err", err)
	}
	s.log.Info("upgraded room", "room_id", roomID, "replacement_room", newRoomID, "version", req.NewVersion, "user_id", user)
	return newRoomID, nil
}

// upgradeCreateContent is the replacement room's m.room.create content:
// the new version, the predecessor, and the old room's type (and federation
// setting).
func (s *Service) upgradeCreateContent(ctx context.Context, user, oldRoomID, version string, oldCreate json.RawMessage, additional []string) (map[string]json.RawMessage, error) {
	predecessor := map[string]string{"room_id": oldRoomID}
	// event_id is deprecated but should still be given where known (the
	// last event of the old room), except from room version 12 on, whose
	// predecessor is the room ID alone, as Synapse writes it.
	if version != "12" {
		last, err := s.store.RoomEvents(ctx, oldRoomID, math.MaxInt64, 0, false, 1)
		if err != nil {
			return nil, err
		}
		if len(last) > 0 {
			predecessor["event_id"] = last[0].EventID
		}
	}
	create := map[string]json.RawMessage{
		"room_version": jsonString(version),
		"predecessor":  mustJSON(predecessor),
	}
	if creatorInContent(version) {
		create["creator"] = jsonString(user)
	}
	var oldContent map[string]json.RawMessage
	_ = json.Unmarshal(oldCreate, &oldContent)
	for _, k := range []string{"type", "m.federate"} {
		if v, ok := oldContent[k]; ok {
			create[k] = v
		}
	}
	if len(additional) > 0 {
		create["additional_creators"] = mustJSON(additional)
	}
	return create, nil
}

// Integer fields of m.room.power_levels with their defaults.
var powerLevelDefaults = map[string]int64{
	"ban": 50, "kick": 50, "redact": 50, "invite": 0,
	"events_default": 0, "state_default": 50, "users_default": 0,
}

// normalisedPowerLevels parses power levels content with every level an
// integer, as room versions from 10 require (earlier ones allowed strings).
func normalisedPowerLevels(raw json.RawMessage) map[string]any {
	var c map[string]json.RawMessage
	_ = json.Unmarshal(raw, &c)
	out := make(map[string]any, len(c))
	for k, v := range c {
		if def, ok := powerLevelDefaults[k]; ok {
			out[k] = parseLevel(v, def)
			continue
		}
		switch k {
		case "users", "events", "notifications":
			var m map[string]json.RawMessage
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			levels := make(map[string]int64, len(m))
			for name, level := range m {
				levels[name] = parseLevel(level, 0)
			}
			out[k] = levels
		default:
			out[k] = v
		}
	}
	return out
}

// levelMap returns one of the maps of normalised power levels, adding it
// when absent.
func levelMap(pl map[string]any, key string) map[string]int64 {
	m, ok := pl[key].(map[string]int64)
	if !ok {
		m = map[string]int64{}
		pl[key] = m
	}
	return m
}

func levelOf(pl map[string]any, key string) int64 {
	if v, ok := pl[key].(int64); ok {
		return v
	}
	return powerLevelDefaults[key]
}

// upgradedPowerLevels returns the power levels of the replacement room and,
// when the upgrader had to be raised to copy the state, the levels to set
// once that is done (nil otherwise).
//
// Creators of the new room are left out of users in versions where they
// hold infinite power. Coming from such a version to one without, the old
// room's creators get the highest level in use (at least 100) instead.
func upgradedPowerLevels(raw json.RawMessage, old PowerLevels, user, version string, additional []string) (levels, final map[string]any) {
	pl := normalisedPowerLevels(raw)
	if raw == nil {
		// Without power levels the creator had 100.
		levelMap(pl, "users")[user] = 100
	}
	users := levelMap(pl, "users")
	if privilegedCreators(version) {
		delete(users, user)
		for _, c := range additional {
			delete(users, c)
		}
		return pl, nil
	}
	if len(old.creators) > 0 {
		top := highestLevel(pl)
		for _, c := range old.creators {
			users[c] = max(users[c], top)
		}
	}
	need := max(levelOf(pl, "state_default"), levelOf(pl, "ban"))
	events, _ := pl["events"].(map[string]int64)
	for _, t := range append([]string{"m.room.power_levels", "m.room.canonical_alias"}, upgradeCopiedState...) {
		if v, ok := events[t]; ok {
			need = max(need, v)
		}
	}
	have, listed := users[user]
	if !listed {
		have = levelOf(pl, "users_default")
	}
	if have >= need {
		return pl, nil
	}
	raised := maps.Clone(users)
	raised[user] = need
	levels = maps.Clone(pl)
	levels["users"] = raised
	return levels, pl
}

// highestLevel is the highest level that normalised power levels mention,
// and at least 100.
func highestLevel(pl map[string]any) int64 {
	top := int64(100)
	for k, v := range pl {
		switch v := v.(type) {
		case int64:
			if k != "users_default" {
				top = max(top, v)
			}
		case map[string]int64:
			for _, l := range v {
				top = max(top, l)
			}
		}
	}
	return top
}

// restrictUpgradedRoom raises the level needed to send messages and to
// invite in a tombstoned room to the greater of 50 and users_default + 1,
// as the spec suggests.
func (s *Service) restrictUpgradedRoom(ctx context.Context, user, roomID string, raw json.RawMessage, old PowerLevels) error {
	if raw == nil {
		return nil
	}
	var content map[string]json.RawMessage
	if err := json.Unmarshal(raw, &content); err != nil {
		return nil
	}
	restricted := max(50, old.usersDefault+1)
	changed := false
	if old.eventsDefault < restricted {
		content["events_default"] = mustJSON(restricted)
		changed = true
	}
	if old.invite < restricted {
		content["invite"] = mustJSON(restricted)
		changed = true
	}
	if !changed {
		return nil
	}
	_, err := s.submit(ctx, pdu.Proto{
		Sender: user, RoomID: roomID, Type: "m.room.power_levels", StateKey: ptr(""), Content: mustJSON(content),
	}, NewEvent{})
	return err
}
