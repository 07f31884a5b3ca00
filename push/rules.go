// Package push evaluates push rules against room events, keeps each user's
// push rules (the server-default set of the spec plus the user's own), and
// records notifications and unread counts.
package push

import (
	"encoding/json"
	"strings"
)

// Rule kinds, in the order of their priority.
const (
	KindOverride  = "override"
	KindContent   = "content"
	KindRoom      = "room"
	KindSender    = "sender"
	KindUnderride = "underride"
)

// Kinds lists the rule kinds from the most important to the least.
var Kinds = []string{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// ValidKind reports whether k is a rule kind.
func ValidKind(k string) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Condition is one push condition.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
}

// Rule is one push rule as the API shows it.
type Rule struct {
	RuleID     string      `json:"rule_id"`
	Default    bool        `json:"default"`
	Enabled    bool        `json:"enabled"`
	Conditions []Condition `json:"-"`
	Pattern    *string     `json:"pattern,omitempty"`
	Actions    []any       `json:"actions"`
	// kind is set for rules in a Ruleset, so that Conditions are emitted
	// for override and underride rules even when empty.
	kind string
}

// MarshalJSON emits conditions for override and underride rules (even an
// empty list, as .m.rule.master has) and never for the others.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	actions := r.Actions
	if actions == nil {
		actions = []any{}
	}
	p := plain(r)
	p.Actions = actions
	if r.kind == KindOverride || r.kind == KindUnderride || r.Conditions != nil {
		conds := r.Conditions
		if conds == nil {
			conds = []Condition{}
		}
		return json.Marshal(struct {
			plain
			Conditions []Condition `json:"conditions"`
		}{p, conds})
	}
	return json.Marshal(p)
}

// Ruleset is a user's rules by kind, each in priority order.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Kind returns the rules of one kind.
func (rs *Ruleset) Kind(k string) []Rule {
	switch k {
	case KindOverride:
		return rs.Override
	case KindContent:
		return rs.Content
	case KindRoom:
		return rs.Room
	case KindSender:
		return rs.Sender
	case KindUnderride:
		return rs.Underride
	}
	return nil
}

func str(s string) *string { return &s }

func match(key, pattern string) Condition {
	return Condition{Kind: "event_match", Key: key, Pattern: str(pattern)}
}

func raw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

var (
	notify       = any("notify")
	soundDefault = any(map[string]any{"set_tweak": "sound", "value": "default"})
	highlight    = any(map[string]any{"set_tweak": "highlight"})
)

// DefaultOverride returns the server-default override rules for userID, in
// the spec's order.
func DefaultOverride(userID string) []Rule {
	return []Rule{
		{RuleID: ".m.rule.master", Default: true, Enabled: false, Conditions: []Condition{}, Actions: []any{}},
		{RuleID: ".m.rule.suppress_notices", Default: true, Enabled: true,
			Conditions: []Condition{match("content.msgtype", "m.notice")}, Actions: []any{}},
		{RuleID: ".m.rule.invite_for_me", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)},
			Actions:    []any{notify, soundDefault}},
		{RuleID: ".m.rule.member_event", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.room.member")}, Actions: []any{}},
		{RuleID: ".m.rule.is_user_mention", Default: true, Enabled: true,
			Conditions: []Condition{{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: raw(userID)}},
			Actions:    []any{notify, soundDefault, highlight}},
		{RuleID: ".m.rule.is_room_mention", Default: true, Enabled: true,
			Conditions: []Condition{
				{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: raw(true)},
				{Kind: "sender_notification_permission", Key: "room"},
			},
			Actions: []any{notify, highlight}},
		{RuleID: ".m.rule.tombstone", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.room.tombstone"), match("state_key", "")},
			Actions:    []any{notify, highlight}},
		{RuleID: ".m.rule.reaction", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.reaction")}, Actions: []any{}},
		{RuleID: ".m.rule.room.server_acl", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.room.server_acl"), match("state_key", "")}, Actions: []any{}},
		{RuleID: ".m.rule.suppress_edits", Default: true, Enabled: true,
			Conditions: []Condition{{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: raw("m.replace")}},
			Actions:    []any{}},
	}
}

// DefaultUnderride returns the server-default underride rules, in the
// spec's order.
func DefaultUnderride() []Rule {
	return []Rule{
		{RuleID: ".m.rule.call", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.call.invite")},
			Actions:    []any{notify, map[string]any{"set_tweak": "sound", "value": "ring"}}},
		{RuleID: ".m.rule.encrypted_room_one_to_one", Default: true, Enabled: true,
			Conditions: []Condition{{Kind: "room_member_count", Is: "2"}, match("type", "m.room.encrypted")},
			Actions:    []any{notify, soundDefault}},
		{RuleID: ".m.rule.room_one_to_one", Default: true, Enabled: true,
			Conditions: []Condition{{Kind: "room_member_count", Is: "2"}, match("type", "m.room.message")},
			Actions:    []any{notify, soundDefault}},
		{RuleID: ".m.rule.message", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.room.message")}, Actions: []any{notify}},
		{RuleID: ".m.rule.encrypted", Default: true, Enabled: true,
			Conditions: []Condition{match("type", "m.room.encrypted")}, Actions: []any{notify}},
	}
}

// UserRules is what is stored per user: the user-defined rules of each kind
// in priority order, and the changes made to server-default rules.
type UserRules struct {
	Override  []Rule                   `json:"override,omitempty"`
	Content   []Rule                   `json:"content,omitempty"`
	Room      []Rule                   `json:"room,omitempty"`
	Sender    []Rule                   `json:"sender,omitempty"`
	Underride []Rule                   `json:"underride,omitempty"`
	Defaults  map[string]DefaultChange `json:"defaults,omitempty"`
}

// storedRule is a user rule as kept in the database (conditions always
// included).
type storedRule struct {
	RuleID     string      `json:"rule_id"`
	Enabled    bool        `json:"enabled"`
	Conditions []Condition `json:"conditions,omitempty"`
	Pattern    *string     `json:"pattern,omitempty"`
	Actions    []any       `json:"actions"`
}

type storedUserRules struct {
	Override  []storedRule             `json:"override,omitempty"`
	Content   []storedRule             `json:"content,omitempty"`
	Room      []storedRule             `json:"room,omitempty"`
	Sender    []storedRule             `json:"sender,omitempty"`
	Underride []storedRule             `json:"underride,omitempty"`
	Defaults  map[string]DefaultChange `json:"defaults,omitempty"`
}

// DefaultChange is a user's change to a server-default rule.
type DefaultChange struct {
	Enabled *bool `json:"enabled,omitempty"`
	Actions []any `json:"actions,omitempty"`
}

func toStored(rs []Rule) []storedRule {
	out := make([]storedRule, len(rs))
	for i, r := range rs {
		out[i] = storedRule{RuleID: r.RuleID, Enabled: r.Enabled, Conditions: r.Conditions, Pattern: r.Pattern, Actions: r.Actions}
	}
	return out
}

func fromStored(rs []storedRule) []Rule {
	out := make([]Rule, len(rs))
	for i, r := range rs {
		out[i] = Rule{RuleID: r.RuleID, Enabled: r.Enabled, Conditions: r.Conditions, Pattern: r.Pattern, Actions: r.Actions}
	}
	return out
}

// MarshalUserRules encodes u for storage.
func MarshalUserRules(u *UserRules) ([]byte, error) {
	return json.Marshal(storedUserRules{
		Override: toStored(u.Override), Content: toStored(u.Content), Room: toStored(u.Room),
		Sender: toStored(u.Sender), Underride: toStored(u.Underride), Defaults: u.Defaults,
	})
}

// UnmarshalUserRules decodes what MarshalUserRules encoded (nil or empty
// data is a user with no rules of their own).
func UnmarshalUserRules(data []byte) (*UserRules, error) {
	u := &UserRules{}
	if len(data) == 0 {
		return u, nil
	}
	var s storedUserRules
	d := json.NewDecoder(strings.NewReader(string(data)))
	d.UseNumber()
	if err := d.Decode(&s); err != nil {
		return nil, err
	}
	u.Override, u.Content, u.Room = fromStored(s.Override), fromStored(s.Content), fromStored(s.Room)
	u.Sender, u.Underride, u.Defaults = fromStored(s.Sender), fromStored(s.Underride), s.Defaults
	return u, nil
}

// Kind returns a pointer to the user's rules of kind k.
func (u *UserRules) Kind(k string) *[]Rule {
	switch k {
	case KindOverride:
		return &u.Override
	case KindContent:
		return &u.Content
	case KindRoom:
		return &u.Room
	case KindSender:
		return &u.Sender
	case KindUnderride:
		return &u.Underride
	}
	return nil
}

func applyDefaults(rs []Rule, changes map[string]DefaultChange) []Rule {
	for i := range rs {
		if c, ok := changes[rs[i].RuleID]; ok {
			if c.Enabled != nil {
				rs[i].Enabled = *c.Enabled
			}
			if c.Actions != nil {
				rs[i].Actions = c.Actions
			}
		}
	}
	return rs
}

func withKind(rs []Rule, k string) []Rule {
	out := make([]Rule, len(rs))
	for i, r := range rs {
		r.kind = k
		r.Default = strings.HasPrefix(r.RuleID, ".")
		out[i] = r
	}
	return out
}

// Ruleset merges the user's rules with the server defaults: .m.rule.master
// first, then user-defined rules above the other server-default rules of
// their kind.
func (u *UserRules) Ruleset(userID string) *Ruleset {
	over := applyDefaults(DefaultOverride(userID), u.Defaults)
	under := applyDefaults(DefaultUnderride(), u.Defaults)
	o := append([]Rule{over[0]}, u.Override...)
	o = append(o, over[1:]...)
	return &Ruleset{
		Override:  withKind(o, KindOverride),
		Content:   withKind(u.Content, KindContent),
		Room:      withKind(u.Room, KindRoom),
		Sender:    withKind(u.Sender, KindSender),
		Underride: withKind(append(append([]Rule(nil), u.Underride...), under...), KindUnderride),
	}
}
