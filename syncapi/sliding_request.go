package syncapi

import (
	"encoding/json"
	"slices"
	"strings"

	"homeserver/mxhttp"
)

// SlidingRequest is one sliding sync (MSC4186) request: Synapse's unstable
// shape, with the MSC's later spellings (range, the required_state object,
// is_invited, pos and timeout in the body) accepted too.
type SlidingRequest struct {
	UserID, DeviceID, Scope string `json:"-"`

	ConnID            string                  `json:"conn_id"`
	TxnID             string                  `json:"txn_id"`
	Pos               string                  `json:"pos"`
	Timeout           *int64                  `json:"timeout"`
	SetPresence       string                  `json:"set_presence"`
	Lists             map[string]SlidingList  `json:"lists"`
	RoomSubscriptions map[string]RoomConfig   `json:"room_subscriptions"`
	Extensions        SlidingExtensionsConfig `json:"extensions"`
}

// RoomConfig is what to send of a room: its latest events and the state
// the client asks for.
type RoomConfig struct {
	TimelineLimit *int          `json:"timeline_limit"`
	RequiredState RequiredState `json:"required_state"`
}

// SlidingList is a list of the user's rooms: those the filters keep,
// ordered by recent activity, of which the ranges are sent.
type SlidingList struct {
	RoomConfig
	Ranges  [][]int64       `json:"ranges"`
	Range   []int64         `json:"range"`
	Filters *SlidingFilters `json:"filters"`
}

// SlidingFilters keep the rooms of a list.
type SlidingFilters struct {
	IsDM        *bool    `json:"is_dm"`
	Spaces      []string `json:"spaces"`
	IsEncrypted *bool    `json:"is_encrypted"`
	IsInvite    *bool    `json:"is_invite"`
	IsInvited   *bool    `json:"is_invited"`
	// RoomTypes and NotRoomTypes hold null for rooms without a type.
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

// ExtensionConfig is the part every extension's request has: whether it
// is on and, for the per-room ones, which lists and subscribed rooms it
// covers (all when both are absent; "*" for all).
type ExtensionConfig struct {
	Enabled *bool    `json:"enabled"`
	Lists   []string `json:"lists"`
	Rooms   []string `json:"rooms"`
}

// SlidingExtensionsConfig are the extensions asked for.
type SlidingExtensionsConfig struct {
	ToDevice *struct {
		ExtensionConfig
		Since string `json:"since"`
		Limit *int   `json:"limit"`
	} `json:"to_device"`
	E2EE        *ExtensionConfig `json:"e2ee"`
	AccountData *ExtensionConfig `json:"account_data"`
	Receipts    *ExtensionConfig `json:"receipts"`
	Typing      *ExtensionConfig `json:"typing"`
	Presence    *ExtensionConfig `json:"presence"`
}

func (e *ExtensionConfig) on() bool { return e != nil && e.Enabled != nil && *e.Enabled }

// StateSelector matches state by type and state key; "*" matches any, and
// the state key "$ME" the syncing user.
type StateSelector struct {
	Type, StateKey string
}

// RequiredState is the state a room config asks for. In Synapse's shape
// it is a list of [type, state_key] pairs, where ["m.room.member",
// "$LAZY"] asks for lazy-loaded members; in the MSC's later shape, an
// object of include, exclude and lazy_members.
type RequiredState struct {
	Include, Exclude []StateSelector
	Lazy             bool
}

func (r *RequiredState) UnmarshalJSON(b []byte) error {
	*r = RequiredState{}
	if string(b) == "null" {
		return nil
	}
	var pairs [][]string
	if err := json.Unmarshal(b, &pairs); err == nil {
		for _, p := range pairs {
			if len(p) != 2 {
				return mxhttp.InvalidParam("required_state entries are [type, state_key] pairs")
			}
			if p[0] == "m.room.member" && p[1] == "$LAZY" {
				r.Lazy = true
				continue
			}
			r.Include = append(r.Include, StateSelector{Type: p[0], StateKey: p[1]})
		}
		return nil
	}
	var obj struct {
		Include []struct {
			Type     *string `json:"type"`
			StateKey *string `json:"state_key"`
		} `json:"include"`
		Exclude []struct {
			Type     *string `json:"type"`
			StateKey *string `json:"state_key"`
		} `json:"exclude"`
		LazyMembers bool `json:"lazy_members"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return mxhttp.BadJSON("required_state must be a list of [type, state_key] pairs or an object")
	}
	sel := func(t, k *string) StateSelector {
		s := StateSelector{Type: "*", StateKey: "*"}
		if t != nil {
			s.Type = *t
		}
		if k != nil {
			s.StateKey = *k
		}
		return s
	}
	for _, e := range obj.Include {
		r.Include = append(r.Include, sel(e.Type, e.StateKey))
	}
	for _, e := range obj.Exclude {
		r.Exclude = append(r.Exclude, sel(e.Type, e.StateKey))
	}
	r.Lazy = obj.LazyMembers
	return nil
}

func (s StateSelector) match(eventType, stateKey, user string) bool {
	if s.Type != "*" && s.Type != eventType {
		return false
	}
	return s.StateKey == "*" || s.StateKey == stateKey || (s.StateKey == "$ME" && stateKey == user)
}

func (r RequiredState) match(eventType, stateKey, user string) bool {
	for _, s := range r.Exclude {
		if s.match(eventType, stateKey, user) {
			return false
		}
	}
	for _, s := range r.Include {
		if s.match(eventType, stateKey, user) {
			return true
		}
	}
	return false
}

// Limits of a request, so that one cannot ask for unbounded work.
const (
	maxSlidingLists     = 100
	maxSlidingRanges    = 100
	maxSubscriptions    = 1000
	maxRequiredState    = 1000
	maxSlidingTimeline  = 100
	maxSlidingConnIDLen = 255
)

// validate checks the request's shape, answering 400 M_INVALID_PARAM.
func (req *SlidingRequest) validate() error {
	if len(req.ConnID) > maxSlidingConnIDLen {
		return mxhttp.InvalidParam("conn_id is too long")
	}
	switch req.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return mxhttp.InvalidParam("Unknown set_presence %q", req.SetPresence)
	}
	if len(req.Lists) > maxSlidingLists {
		return mxhttp.InvalidParam("At most %d lists", maxSlidingLists)
	}
	if len(req.RoomSubscriptions) > maxSubscriptions {
		return mxhttp.InvalidParam("At most %d room subscriptions", maxSubscriptions)
	}
	for name, l := range req.Lists {
		if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\n") {
			return mxhttp.InvalidParam("Invalid list name %q", name)
		}
		if err := l.RoomConfig.validate(); err != nil {
			return err
		}
		ranges := l.Ranges
		if l.Range != nil {
			ranges = append(slices.Clone(ranges), l.Range)
		}
		if len(ranges) > maxSlidingRanges {
			return mxhttp.InvalidParam("At most %d ranges in a list", maxSlidingRanges)
		}
		for _, r := range ranges {
			if len(r) != 2 || r[0] < 0 || r[1] < r[0] {
				return mxhttp.InvalidParam("A range is [start, end] with 0 <= start <= end")
			}
		}
	}
	for roomID, c := range req.RoomSubscriptions {
		if !strings.HasPrefix(roomID, "!") {
			return mxhttp.InvalidParam("Invalid room ID %q", roomID)
		}
		if err := c.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (c RoomConfig) validate() error {
	if c.TimelineLimit != nil && *c.TimelineLimit < 0 {
		return mxhttp.InvalidParam("timeline_limit must not be negative")
	}
	if len(c.RequiredState.Include)+len(c.RequiredState.Exclude) > maxRequiredState {
		return mxhttp.InvalidParam("required_state is too long")
	}
	return nil
}

// ranges are a list's ranges in either spelling.
func (l SlidingList) ranges() [][]int64 {
	if l.Range != nil {
		return append(slices.Clone(l.Ranges), l.Range)
	}
	return l.Ranges
}

// MarshalJSON writes the object shape, which UnmarshalJSON reads back (a
// connection stores the configs its rooms were sent with).
func (r RequiredState) MarshalJSON() ([]byte, error) {
	type sel struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
	}
	out := struct {
		Include []sel `json:"include,omitempty"`
		Exclude []sel `json:"exclude,omitempty"`
		Lazy    bool  `json:"lazy_members,omitempty"`
	}{Lazy: r.Lazy}
	for _, s := range r.Include {
		out.Include = append(out.Include, sel{s.Type, s.StateKey})
	}
	for _, s := range r.Exclude {
		out.Exclude = append(out.Exclude, sel{s.Type, s.StateKey})
	}
	return json.Marshal(out)
}

// roomConfig is the configs of every rule a room matched, combined: the
// largest timeline, and any state one of them asks for.
type roomConfig struct {
	Limit int             `json:"timeline_limit"`
	State []RequiredState `json:"required_state"`
}

func (c *roomConfig) add(rc RoomConfig) {
	limit := 0
	if rc.TimelineLimit != nil {
		limit = min(*rc.TimelineLimit, maxSlidingTimeline)
	}
	c.Limit = max(c.Limit, limit)
	if len(rc.RequiredState.Include) > 0 || rc.RequiredState.Lazy {
		c.State = append(c.State, rc.RequiredState)
	}
}

func (c *roomConfig) match(eventType, stateKey, user string) bool {
	for _, r := range c.State {
		if r.match(eventType, stateKey, user) {
			return true
		}
	}
	return false
}

func (c *roomConfig) lazy() bool {
	for _, r := range c.State {
		if r.Lazy {
			return true
		}
	}
	return false
}

func (c *roomConfig) encode() []byte {
	b, _ := json.Marshal(c)
	return b
}

func decodeRoomConfig(b []byte) *roomConfig {
	var c roomConfig
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	return &c
}
