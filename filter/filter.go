// Package filter implements the Matrix event filters of the Client-Server
// API (used by /messages, /context and /sync).
package filter

import (
	"encoding/json"
	"path"
	"slices"
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
	return f, nil
}

// matchType reports whether t matches a pattern where '*' matches any
// run of characters, as the spec allows in types and not_types.
func matchType(pattern, t string) bool {
	if pattern == t {
		return true
	}
	ok, err := path.Match(pattern, t)
	return err == nil && ok
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
