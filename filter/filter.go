// Package filter implements the Matrix event filters of the Client-Server
// API (used by /messages, /context and /sync).
package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// RoomEventFilter is the spec's RoomEventFilter.
type RoomEventFilter struct {
	Limit                     *int     `json:"limit,omitempty"`
	Types                     []string `json:"types,omitempty"`
	NotTypes                  []string `json:"not_types,omitempty"`
	Senders                   []string `json:"senders,omitempty"`
	NotSenders                []string `json:"not_senders,omitempty"`
	Rooms                     []string `json:"rooms,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
}

// Parse reads a RoomEventFilter from JSON; an empty string is no filter.
func Parse(raw string) (*RoomEventFilter, error) {
	f := &RoomEventFilter{}
	if raw == "" {
		return f, nil
	}
	if err := json.Unmarshal([]byte(raw), f); err != nil {
		return nil, err
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// check refuses a negative limit and malformed room and user IDs, as
// Synapse's filter schema does: a filter naming "bob" instead of
// "@bob:example.org" would otherwise silently match nothing.
func (f *RoomEventFilter) check() error {
	if err := checkLimit(f.Limit); err != nil {
		return err
	}
	if err := checkIDs("senders", f.Senders, userIDRe); err != nil {
		return err
	}
	if err := checkIDs("not_senders", f.NotSenders, userIDRe); err != nil {
		return err
	}
	if err := checkIDs("rooms", f.Rooms, roomIDRe); err != nil {
		return err
	}
	return checkIDs("not_rooms", f.NotRooms, roomIDRe)
}

// maxIDLength is the spec's 255-byte limit on room and user IDs.
const maxIDLength = 255

var (
	// The server part is absent from room IDs of room version 12.
	roomIDRe = regexp.MustCompile(`^![^:]+(:.+)?$`)
	userIDRe = regexp.MustCompile(`^@[^:]+:.+$`)
)

func checkIDs(field string, ids []string, shape *regexp.Regexp) error {
	for _, id := range ids {
		if len(id) > maxIDLength || !shape.MatchString(id) {
			return fmt.Errorf("%s: invalid ID %q", field, id)
		}
	}
	return nil
}

// checkLimit refuses a negative limit. The spec asks for one above 0, but
// clients send 0 to ask for nothing (a presence limit of 0 turns presence
// off), as Synapse allows.
func checkLimit(limit *int) error {
	if limit != nil && *limit < 0 {
		return errors.New("limit must not be negative")
	}
	return nil
}

// matchType reports whether t matches a pattern where '*' matches any
// run of characters, as the spec allows in types and not_types. Nothing
// else is special: path.Match would also treat '?', '[' and '\\' as
// wildcards and stop '*' at '/'.
func matchType(pattern, t string) bool {
	prefix, rest, wild := strings.Cut(pattern, "*")
	if !wild {
		return pattern == t
	}
	if !strings.HasPrefix(t, prefix) {
		return false
	}
	t = t[len(prefix):]
	// Each literal piece between stars is matched at its first occurrence:
	// taking the earliest leaves the most room for the pieces after it.
	pieces := strings.Split(rest, "*")
	last := pieces[len(pieces)-1]
	for _, p := range pieces[:len(pieces)-1] {
		i := strings.Index(t, p)
		if i < 0 {
			return false
		}
		t = t[i+len(p):]
	}
	return strings.HasSuffix(t, last)
}

// Match reports whether an event passes the filter. not_* lists win.
func (f *RoomEventFilter) Match(roomID, eventType, sender string, content json.RawMessage) bool {
	if f == nil {
		return true
	}
	if slices.Contains(f.NotRooms, roomID) || (f.Rooms != nil && !slices.Contains(f.Rooms, roomID)) {
		return false
	}
	if slices.Contains(f.NotSenders, sender) || (f.Senders != nil && !slices.Contains(f.Senders, sender)) {
		return false
	}
	if slices.ContainsFunc(f.NotTypes, func(p string) bool { return matchType(p, eventType) }) {
		return false
	}
	if f.Types != nil && !slices.ContainsFunc(f.Types, func(p string) bool { return matchType(p, eventType) }) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(content, &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// EventFilter is the spec's EventFilter (presence, account data).
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// Match reports whether an event of this type and sender passes.
func (f *EventFilter) Match(eventType, sender string) bool {
	if f == nil {
		return true
	}
	r := RoomEventFilter{Types: f.Types, NotTypes: f.NotTypes, Senders: f.Senders, NotSenders: f.NotSenders}
	return r.Match("", eventType, sender, nil)
}

// MatchesNothing reports whether the filter lets no event through: a
// limit of 0, or an empty list of types or senders. What it filters need
// not be read at all.
func (f *EventFilter) MatchesNothing() bool {
	return f != nil && ((f.Limit != nil && *f.Limit == 0) || (f.Types != nil && len(f.Types) == 0) ||
		(f.Senders != nil && len(f.Senders) == 0))
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	Rooms        []string         `json:"rooms,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// IncludesRoom applies rooms and not_rooms.
func (f *RoomFilter) IncludesRoom(roomID string) bool {
	if f == nil {
		return true
	}
	if slices.Contains(f.NotRooms, roomID) {
		return false
	}
	return f.Rooms == nil || slices.Contains(f.Rooms, roomID)
}

// Filter is the spec's top-level Filter of /sync and the filter API.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// ParseFilter reads and checks a Filter.
func ParseFilter(data []byte) (*Filter, error) {
	f := &Filter{}
	if err := json.Unmarshal(data, f); err != nil {
		return nil, err
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, errors.New("event_format must be client or federation")
	}
	for _, ef := range []*EventFilter{f.Presence, f.AccountData} {
		if ef == nil {
			continue
		}
		r := RoomEventFilter{Limit: ef.Limit, Senders: ef.Senders, NotSenders: ef.NotSenders}
		if err := r.check(); err != nil {
			return nil, err
		}
	}
	if f.Room != nil {
		if err := checkIDs("rooms", f.Room.Rooms, roomIDRe); err != nil {
			return nil, err
		}
		if err := checkIDs("not_rooms", f.Room.NotRooms, roomIDRe); err != nil {
			return nil, err
		}
		for _, rf := range []*RoomEventFilter{f.Room.Timeline, f.Room.State, f.Room.Ephemeral, f.Room.AccountData} {
			if rf == nil {
				continue
			}
			if err := rf.check(); err != nil {
				return nil, err
			}
		}
	}
	return f, nil
}

// ApplyEventFields keeps only the listed dotted paths of an event ("\."
// escapes a literal dot), as event_fields asks. Without fields the event is
// unchanged.
func ApplyEventFields(ev json.RawMessage, fields []string) json.RawMessage {
	if len(fields) == 0 {
		return ev
	}
	var src map[string]any
	if json.Unmarshal(ev, &src) != nil {
		return ev
	}
	dst := map[string]any{}
	for _, f := range fields {
		path := splitPath(f)
		copyPath(src, dst, path)
	}
	out, err := json.Marshal(dst)
	if err != nil {
		return ev
	}
	return out
}

func splitPath(p string) []string {
	var parts []string
	var cur []rune
	escaped := false
	for _, r := range p {
		switch {
		case escaped:
			cur = append(cur, r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == '.':
			parts = append(parts, string(cur))
			cur = cur[:0]
		default:
			cur = append(cur, r)
		}
	}
	return append(parts, string(cur))
}

func copyPath(src, dst map[string]any, path []string) {
	v, ok := src[path[0]]
	if !ok {
		return
	}
	if len(path) == 1 {
		dst[path[0]] = v
		return
	}
	sub, ok := v.(map[string]any)
	if !ok {
		return
	}
	d, ok := dst[path[0]].(map[string]any)
	if !ok {
		d = map[string]any{}
		dst[path[0]] = d
	}
	copyPath(sub, d, path[1:])
}
