package spaces

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
)

// maxOrderLength is the longest valid m.space.child order.
const maxOrderLength = 50

// ChildEvent is an m.space.child event as the hierarchy shows it: stripped
// state with the event's origin_server_ts.
type ChildEvent struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
}

// childContent is what the hierarchy reads of an m.space.child content.
type childContent struct {
	via       []string
	order     string
	hasOrder  bool
	suggested bool
}

// parseChild reads an m.space.child content. ok is false when the event
// does not make its room a child: its via is missing, empty or not a list
// of strings (the spec's way of removing a child).
func parseChild(content json.RawMessage) (c childContent, ok bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(content, &m) != nil {
		return c, false
	}
	if json.Unmarshal(m["via"], &c.via) != nil || len(c.via) == 0 {
		return c, false
	}
	// An order or suggested of the wrong type counts as absent.
	if json.Unmarshal(m["order"], &c.order) == nil && validOrder(c.order) {
		c.hasOrder = true
	} else {
		c.order = ""
	}
	_ = json.Unmarshal(m["suggested"], &c.suggested)
	return c, true
}

// validOrder checks the spec's grammar of order: 1 to 50 characters from
// \x20 to \x7E.
func validOrder(o string) bool {
	if o == "" || len(o) > maxOrderLength {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7E {
			return false
		}
	}
	return true
}

// child is a valid m.space.child event with its content read.
type child struct {
	ev ChildEvent
	childContent
}

// validChildren keeps the events that make their state key's room a child
// (only the suggested ones when suggestedOnly), in the spec's order.
func validChildren(evs []ChildEvent, suggestedOnly bool) []child {
	var out []child
	for _, ev := range evs {
		if ev.Type != "m.space.child" || !strings.HasPrefix(ev.StateKey, "!") {
			continue
		}
		c, ok := parseChild(ev.Content)
		if !ok || (suggestedOnly && !c.suggested) {
			continue
		}
		out = append(out, child{ev: ev, childContent: c})
	}
	slices.SortFunc(out, compareChildren)
	return out
}

// compareChildren is the spec's order of a space's children: those with a
// valid order first, by order (compared by code point, which byte order is
// for these ASCII strings); then by the event's origin_server_ts; then by
// room ID.
func compareChildren(a, b child) int {
	if a.hasOrder != b.hasOrder {
		if a.hasOrder {
			return -1
		}
		return 1
	}
	if c := strings.Compare(a.order, b.order); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ev.OriginServerTS, b.ev.OriginServerTS); c != 0 {
		return c
	}
	return strings.Compare(a.ev.StateKey, b.ev.StateKey)
}

// childrenState is the children_state of a room: its valid children's
// events, in order, never null.
func childrenState(cs []child) []ChildEvent {
	out := make([]ChildEvent, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.ev)
	}
	return out
}
