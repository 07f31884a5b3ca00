package rooms

import (
	"context"
	"encoding/json"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// PowerLevels is m.room.power_levels with the spec's defaults applied, and
// the room version 12 creators' infinite power: the one power model every
// package uses (the rooms' own checks, push's sender_notification_permission).
type PowerLevels struct {
	users        map[string]int64
	usersDefault int64
	events       map[string]int64
	eventsDefault,
	stateDefault,
	ban, kick, redact, invite int64
	notifications map[string]int64
	creators      []string // room version 12: infinite power
}

func parseLevel(raw json.RawMessage, def int64) int64 {
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if v, err := n.Int64(); err == nil {
			return v
		}
		if f, err := n.Float64(); err == nil {
			return int64(f)
		}
	}
	var s string // room versions before 10 allow strings
	if json.Unmarshal(raw, &s) == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return v
		}
	}
	return def
}

func (s *Service) loadPowerLevels(ctx context.Context, roomID string) (PowerLevels, error) {
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.power_levels"}, {Type: "m.room.create"}})
	if err != nil {
		return PowerLevels{}, err
	}
	var create, levels *Stored
	for i := range st {
		switch st[i].Type {
		case "m.room.create":
			create = &st[i]
		case "m.room.power_levels":
			levels = &st[i]
		}
	}
	return PowerLevelsOf(create, levels)
}

// PowerLevelsOf reads the power model of a room from its m.room.create and
// m.room.power_levels events (either may be nil; a redacted power levels
// event counts as redacted).
func PowerLevelsOf(create, levels *Stored) (PowerLevels, error) {
	pl := PowerLevels{users: map[string]int64{}, events: map[string]int64{}, notifications: map[string]int64{},
		stateDefault: 0, ban: 50, kick: 50, redact: 50, invite: 0}
	version := "1" // a create event without room_version is version 1
	if create != nil {
		var c struct {
			Content struct {
				RoomVersion        string   `json:"room_version"`
				AdditionalCreators []string `json:"additional_creators"`
			} `json:"content"`
		}
		_ = json.Unmarshal(create.JSON, &c)
		if c.Content.RoomVersion != "" {
			version = c.Content.RoomVersion
		}
		if version == "12" {
			pl.creators = append([]string{create.Sender}, c.Content.AdditionalCreators...)
		}
	}
	if levels == nil {
		// Without power levels the creator has 100 and everyone else 0.
		if create != nil {
			pl.users[create.Sender] = 100
		}
		return pl, nil
	}
	data, err := authJSON(version, *levels)
	if err != nil {
		return pl, err
	}
	var c struct {
		Content map[string]json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return pl, err
	}
	get := func(k string, def int64) int64 {
		if raw, ok := c.Content[k]; ok {
			return parseLevel(raw, def)
		}
		return def
	}
	pl.usersDefault = get("users_default", 0)
	pl.eventsDefault = get("events_default", 0)
	pl.stateDefault = get("state_default", 50)
	pl.ban, pl.kick, pl.redact, pl.invite = get("ban", 50), get("kick", 50), get("redact", 50), get("invite", 0)
	var users, events, notifications map[string]json.RawMessage
	_ = json.Unmarshal(c.Content["users"], &users)
	_ = json.Unmarshal(c.Content["events"], &events)
	_ = json.Unmarshal(c.Content["notifications"], &notifications)
	for u, v := range users {
		pl.users[u] = parseLevel(v, 0)
	}
	for t, v := range events {
		pl.events[t] = parseLevel(v, 0)
	}
	for k, v := range notifications {
		pl.notifications[k] = parseLevel(v, 50)
	}
	return pl, nil
}

// UserLevel is a user's power level (the maximum for a room version 12
// creator).
func (pl PowerLevels) UserLevel(userID string) int64 {
	if slices.Contains(pl.creators, userID) {
		return math.MaxInt64
	}
	if v, ok := pl.users[userID]; ok {
		return v
	}
	return pl.usersDefault
}

// NotificationLevel is the level a notification key (such as "room")
// requires; 50 unless the power levels say otherwise.
func (pl PowerLevels) NotificationLevel(key string) int64 {
	if v, ok := pl.notifications[key]; ok {
		return v
	}
	return 50
}

func (pl PowerLevels) required(action string) int64 {
	switch action {
	case "ban":
		return pl.ban
	case "kick":
		return pl.kick
	case "redact":
		return pl.redact
	case "invite":
		return pl.invite
	}
	return 0
}

// eventLevel is the level needed to send an event of this type.
func (pl PowerLevels) eventLevel(eventType string, state bool) int64 {
	if v, ok := pl.events[eventType]; ok {
		return v
	}
	if state {
		return pl.stateDefault
	}
	return pl.eventsDefault
}

type levelCheck struct {
	ok             bool
	user, required int64
}

// powerLevel checks the user's power for an action (ban, kick, redact,
// invite) in the room's current state.
func (s *Service) powerLevel(ctx context.Context, roomID, userID, action string) (levelCheck, error) {
	pl, err := s.loadPowerLevels(ctx, roomID)
	if err != nil {
		return levelCheck{}, err
	}
	u, r := pl.UserLevel(userID), pl.required(action)
	return levelCheck{ok: u >= r, user: u, required: r}, nil
}

var (
	roomIDRe = regexp.MustCompile(`^![^:]+(:.+)?$`)
	aliasRe  = regexp.MustCompile(`^#[^:]+:.+$`)
	userIDRe = regexp.MustCompile(`^@[^:]+:.+$`)
)

func (s *Service) checkRoomID(roomID string) error {
	if len(roomID) > MaxIDLength || !roomIDRe.MatchString(roomID) {
		return mxhttp.InvalidParam("Invalid room ID %q", roomID)
	}
	return nil
}

func validAlias(a string) bool { return len(a) <= MaxIDLength && aliasRe.MatchString(a) }

// ValidUserID checks the shape of a user ID.
func ValidUserID(u string) bool { return len(u) <= MaxIDLength && userIDRe.MatchString(u) }
