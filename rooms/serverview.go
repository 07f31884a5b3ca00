package rooms

import (
	"context"
	"encoding/json"
	"strings"

	"homeserver/pdu"
)

// ServerView serves a room's events to another server as history
// visibility allows: an event that none of the server's users could have
// seen (by the history visibility and their memberships in the state at
// it) is served redacted, so that the room's graph stays whole while its
// content stays private.
type ServerView struct {
	s       *Service
	roomID  string
	server  string
	version string
	// open: the room's history was never restricted to members, so every
	// event is served whole without looking at its state.
	open   bool
	groups map[int64]bool
}

// ViewForServer returns the view of the room for server.
func (s *Service) ViewForServer(ctx context.Context, roomID, server string) (*ServerView, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	hv, err := s.store.TypeEvents(ctx, roomID, "m.room.history_visibility")
	if err != nil {
		return nil, err
	}
	open := true
	for _, e := range hv {
		if v := historyVisibility(e.JSON); v != "shared" && v != "world_readable" {
			open = false
		}
	}
	return &ServerView{s: s, roomID: roomID, server: server, version: room.Version, open: open, groups: map[int64]bool{}}, nil
}

func historyVisibility(data []byte) string {
	var c struct {
		Content struct {
			HistoryVisibility string `json:"history_visibility"`
		} `json:"content"`
	}
	_ = json.Unmarshal(data, &c)
	return normaliseVisibility(c.Content.HistoryVisibility)
}

// PDU returns a stored event of the room as the server may see it
// (ErrNotFound for events of other rooms).
func (v *ServerView) PDU(ctx context.Context, eventID string) (json.RawMessage, error) {
	e, err := v.s.store.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if e.RoomID != v.roomID {
		return nil, ErrNotFound
	}
	data, err := authJSON(v.version, e)
	if err != nil {
		return nil, err
	}
	if v.open {
		return data, nil
	}
	ok, err := v.visible(ctx, e.StateGroup)
	if err != nil {
		return nil, err
	}
	if ok {
		return data, nil
	}
	return pdu.Redact(v.version, data)
}

// visible decides for the state of one state group (0: not known here,
// and then not visible).
func (v *ServerView) visible(ctx context.Context, group int64) (bool, error) {
	if group <= 0 {
		return false, nil
	}
	if ok, done := v.groups[group]; done {
		return ok, nil
	}
	entries, err := v.s.store.StateAt(ctx, group, nil)
	if err != nil {
		return false, err
	}
	var ids []string
	for _, e := range entries {
		if (e.Type == "m.room.history_visibility" && e.StateKey == "") ||
			(e.Type == "m.room.member" && strings.HasSuffix(e.StateKey, ":"+v.server)) {
			ids = append(ids, e.EventID)
		}
	}
	stored, err := v.s.store.GetEvents(ctx, ids)
	if err != nil {
		return false, err
	}
	visibility, joined, invited := "shared", false, false
	for _, e := range stored {
		if e.Type == "m.room.history_visibility" {
			visibility = historyVisibility(e.JSON)
			continue
		}
		joined = joined || e.Membership == "join"
		invited = invited || e.Membership == "invite"
	}
	ok := visibility == "shared" || visibility == "world_readable" || joined || (visibility == "invited" && invited)
	v.groups[group] = ok
	return ok, nil
}
