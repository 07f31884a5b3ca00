package push

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Event is an event prepared for evaluation: parsed once, matched against
// the rules of every member of the room.
type Event struct {
	RoomID, Sender string
	root           map[string]any
	body           string
	hasBody        bool
}

// ParseEvent parses an event's JSON (in client or federation format).
func ParseEvent(js []byte) (*Event, error) {
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	e := &Event{root: m}
	e.RoomID, _ = m["room_id"].(string)
	e.Sender, _ = m["sender"].(string)
	if c, ok := m["content"].(map[string]any); ok {
		e.body, e.hasBody = c["body"].(string)
	}
	return e, nil
}

// Type returns the event's type.
func (e *Event) Type() string { s, _ := e.root["type"].(string); return s }

// Content returns content[key] when it is a string.
func (e *Event) ContentString(key string) string {
	c, _ := e.root["content"].(map[string]any)
	s, _ := c[key].(string)
	return s
}

// Lookup resolves a dot-separated property path, with `\.` and `\\`
// escaping a literal dot or backslash in a property name.
func (e *Event) Lookup(path []string) (any, bool) {
	var cur any = e.root
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// SplitPath splits a dot-separated property path into its property names.
func SplitPath(key string) []string {
	var out []string
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			b.WriteByte(key[i+1])
			i++
		case c == '.':
			out = append(out, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	return append(out, b.String())
}

// Context is what conditions need beyond the event, for one user.
type Context struct {
	UserID      string
	DisplayName string
	MemberCount int
	// SenderLevel is the sender's power level; NotificationLevel returns
	// the level a notification key (such as "room") requires.
	SenderLevel       int64
	NotificationLevel func(key string) int64
}

var (
	globCache sync.Map // string -> *regexp.Regexp
	nameCache sync.Map
)

// globRegexp translates a glob (`*` any run, `?` one character) into a
// case-insensitive regexp matching the whole value, or, for words, any
// run of the value that starts and ends at a word boundary.
func globRegexp(pattern string, words bool) *regexp.Regexp {
	key := pattern
	if words {
		key = "\x00" + pattern
	}
	if re, ok := globCache.Load(key); ok {
		return re.(*regexp.Regexp)
	}
	var b strings.Builder
	// The word boundaries stay outside the case-insensitive group: under
	// (?i), [^A-Za-z0-9_] would also exclude the case variants of letters,
	// such as the Kelvin sign (K) and long s (ſ), making them word characters.
	b.WriteString("(?s)")
	if words {
		b.WriteString(`(?:^|[^A-Za-z0-9_])`)
	} else {
		b.WriteString("^")
	}
	b.WriteString("(?i:")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*?")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(")")
	if words {
		b.WriteString(`(?:[^A-Za-z0-9_]|$)`)
	} else {
		b.WriteString("$")
	}
	re := regexp.MustCompile(b.String())
	globCache.Store(key, re)
	return re
}

// GlobMatch reports whether value matches the glob pattern (whole value,
// case-insensitively), or for words some run of it between word boundaries.
func GlobMatch(pattern, value string, words bool) bool {
	if !words && !strings.ContainsAny(pattern, "*?") {
		return strings.EqualFold(pattern, value)
	}
	return globRegexp(pattern, words).MatchString(value)
}

func containsName(body, name string) bool {
	if name == "" {
		return false
	}
	var re *regexp.Regexp
	if v, ok := nameCache.Load(name); ok {
		re = v.(*regexp.Regexp)
	} else {
		// Case-insensitive only inside, as in globRegexp. Quoting rune by
		// rune turns invalid UTF-8 into U+FFFD, as matching reads the body,
		// where QuoteMeta would keep the bytes and fail to compile.
		var b strings.Builder
		b.WriteString(`(?:^|[^A-Za-z0-9_])(?i:`)
		for _, r := range name {
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
		b.WriteString(`)(?:[^A-Za-z0-9_]|$)`)
		re = regexp.MustCompile(b.String())
		nameCache.Store(name, re)
	}
	return re.MatchString(body)
}

// scalar decodes a canonical JSON scalar: string, integer within ±(2^53-1),
// bool or null. ok is false for anything else.
func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, true
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || n > 1<<53-1 || n < -(1<<53-1) {
			return nil, false
		}
		return n, true
	}
	return nil, false
}

func decodeScalar(raw json.RawMessage) (any, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, false
	}
	return scalar(v)
}

// compiledCond is a condition ready to test.
type compiledCond func(e *Event, c *Context) bool

func never(*Event, *Context) bool { return false }

func compileCond(cond Condition) compiledCond {
	switch cond.Kind {
	case "event_match":
		if cond.Pattern == nil || cond.Key == "" {
			return never
		}
		path, pattern := SplitPath(cond.Key), *cond.Pattern
		words := cond.Key == "content.body"
		return func(e *Event, _ *Context) bool {
			v, ok := e.Lookup(path)
			if !ok {
				return false
			}
			s, ok := v.(string)
			return ok && GlobMatch(pattern, s, words)
		}
	case "event_property_is", "event_property_contains":
		want, ok := decodeScalar(cond.Value)
		if !ok || cond.Key == "" {
			return never
		}
		path := SplitPath(cond.Key)
		if cond.Kind == "event_property_is" {
			return func(e *Event, _ *Context) bool {
				v, ok := e.Lookup(path)
				if !ok {
					return false
				}
				got, ok := scalar(v)
				return ok && got == want
			}
		}
		return func(e *Event, _ *Context) bool {
			v, ok := e.Lookup(path)
			if !ok {
				return false
			}
			arr, ok := v.([]any)
			if !ok {
				return false
			}
			for _, x := range arr {
				if got, ok := scalar(x); ok && got == want {
					return true
				}
			}
			return false
		}
	case "contains_display_name":
		return func(e *Event, c *Context) bool {
			return e.hasBody && containsName(e.body, c.DisplayName)
		}
	case "room_member_count":
		op, n, ok := parseIs(cond.Is)
		if !ok {
			return never
		}
		return func(_ *Event, c *Context) bool {
			m := int64(c.MemberCount)
			switch op {
			case "<":
				return m < n
			case ">":
				return m > n
			case "<=":
				return m <= n
			case ">=":
				return m >= n
			}
			return m == n
		}
	case "sender_notification_permission":
		if cond.Key == "" {
			return never
		}
		key := cond.Key
		return func(_ *Event, c *Context) bool {
			need := int64(50)
			if c.NotificationLevel != nil {
				need = c.NotificationLevel(key)
			}
			return c.SenderLevel >= need
		}
	}
	return never
}

func parseIs(is string) (string, int64, bool) {
	op := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.ParseInt(is, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return "", 0, false
	}
	return op, n, true
}

// Result is what the rules decide for one event and one user.
type Result struct {
	RuleID    string
	Notify    bool
	Highlight bool
	// Actions are the matching rule's actions, historical ones removed.
	Actions []any
}

type compiledRule struct {
	id      string
	kind    string
	conds   []compiledCond
	result  Result
	pattern string
}

// Compiled is a user's ruleset ready to evaluate.
type Compiled struct {
	rules []compiledRule
}

// Compile prepares a ruleset for evaluation; disabled rules are dropped.
func Compile(rs *Ruleset) *Compiled {
	c := &Compiled{}
	for _, k := range Kinds {
		for _, r := range rs.Kind(k) {
			if !r.Enabled {
				continue
			}
			cr := compiledRule{id: r.RuleID, kind: k, result: resultOf(r)}
			switch k {
			case KindOverride, KindUnderride:
				for _, cond := range r.Conditions {
					cr.conds = append(cr.conds, compileCond(cond))
				}
			case KindContent:
				if r.Pattern == nil {
					continue
				}
				cr.conds = []compiledCond{compileCond(match("content.body", *r.Pattern))}
			}
			c.rules = append(c.rules, cr)
		}
	}
	return c
}

func resultOf(r Rule) Result {
	res := Result{RuleID: r.RuleID, Actions: []any{}}
	for _, a := range r.Actions {
		switch x := a.(type) {
		case string:
			if x == "notify" {
				res.Notify = true
				res.Actions = append(res.Actions, x)
			}
		case map[string]any:
			if x["set_tweak"] == "highlight" {
				v, has := x["value"]
				res.Highlight = !has || v == true
			}
			res.Actions = append(res.Actions, x)
		}
	}
	return res
}

// Evaluate returns the result of the first enabled rule that matches, and
// false when none does.
func (c *Compiled) Evaluate(e *Event, ctx *Context) (Result, bool) {
	for i := range c.rules {
		r := &c.rules[i]
		switch r.kind {
		case KindRoom:
			if r.id != e.RoomID {
				continue
			}
		case KindSender:
			if r.id != e.Sender {
				continue
			}
		}
		ok := true
		for _, cond := range r.conds {
			if !cond(e, ctx) {
				ok = false
				break
			}
		}
		if ok {
			return r.result, true
		}
	}
	return Result{}, false
}
