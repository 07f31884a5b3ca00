package push

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzGlobMatch compares GlobMatch with a reference written from the spec:
// '*' matches any run of characters, '?' exactly one, case-insensitively;
// for content.body (words) the glob must match a run of the value between
// word boundaries (the ends or a character outside [A-Za-z0-9_]).
func FuzzGlobMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"cake*lie", "The cake is a LIE"}, {"cake", "cake"}, {"ca?e", "CAKE"}, {"*", ""},
		{"lie", "the cake is a lie!"}, {"lie", "believe"}, {"b*c", "a.b-x-c.d"}, {"é", "É"},
		{"k", "\u212a"}, {"Alice", "hi \u017falice"}, {"s", "\u017f"}, {"a", "\u212aa\u212a"}, {"[x]", "[x]"}, {"\\d", "\\d"},
		{"??", "日本"}, {"*?*", "\xff"}, {"a**b", "ab"},
	} {
		f.Add(s[0], s[1], false)
		f.Add(s[0], s[1], true)
	}
	f.Fuzz(func(t *testing.T, pattern, value string, words bool) {
		got := GlobMatch(pattern, value, words)
		if !words && !GlobMatch(pattern, pattern, false) {
			t.Fatalf("pattern %q does not match itself", pattern)
		}
		// The reference is quadratic in the value for words; keep it fast.
		if utf8.RuneCountInString(value) > 64 || utf8.RuneCountInString(pattern) > 64 {
			return
		}
		if want := refGlob(pattern, value, words); got != want {
			t.Fatalf("GlobMatch(%q, %q, words=%v) = %v, want %v", pattern, value, words, got, want)
		}
		// A display name is matched like a word glob without wildcards.
		if pattern != "" && !strings.ContainsAny(pattern, "*?") {
			if got, want := containsName(value, pattern), refGlob(pattern, value, true); got != want {
				t.Fatalf("containsName(%q, %q) = %v, want %v", value, pattern, got, want)
			}
		}
	})
}

func refGlob(pattern, value string, words bool) bool {
	p, v := []rune(pattern), []rune(value)
	if !words {
		return refWhole(p, v)
	}
	isWord := func(r rune) bool {
		return r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
	}
	for i := 0; i <= len(v); i++ {
		if i > 0 && isWord(v[i-1]) {
			continue
		}
		for j := i; j <= len(v); j++ {
			if j < len(v) && isWord(v[j]) {
				continue
			}
			if refWhole(p, v[i:j]) {
				return true
			}
		}
	}
	return false
}

// refWhole matches the whole of v, by dynamic programming over the pattern.
func refWhole(p, v []rune) bool {
	ok := make([]bool, len(v)+1)
	ok[0] = true
	for _, pr := range p {
		next := make([]bool, len(v)+1)
		for j := range next {
			switch {
			case pr == '*':
				next[j] = ok[j] || (j > 0 && next[j-1])
			case j == 0:
			case pr == '?':
				next[j] = ok[j-1]
			default:
				next[j] = ok[j-1] && strings.EqualFold(string(pr), string(v[j-1]))
			}
		}
		ok = next
	}
	return ok[len(v)]
}

// FuzzConditions compiles arbitrary conditions into an override rule and
// evaluates them against an arbitrary event: nothing may panic, a rule
// whose only condition is event_property_is with the event's own value at
// a key must match, and evaluation must not depend on earlier calls (the
// pattern caches).
func FuzzConditions(f *testing.F) {
	ev := `{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","content":{"body":"hello Alice","m.relates_to":{"rel_type":"m.thread"},"n":5,"list":["x",2,true,null]}}`
	for _, c := range []string{
		`[{"kind":"event_match","key":"content.body","pattern":"*alice*"}]`,
		`[{"kind":"event_match","key":"type","pattern":"m.room.*"},{"kind":"room_member_count","is":"<=2"}]`,
		`[{"kind":"event_property_is","key":"content.n","value":5}]`,
		`[{"kind":"event_property_contains","key":"content.list","value":null}]`,
		`[{"kind":"event_property_is","key":"content.m\\.relates_to","value":"x"}]`,
		`[{"kind":"contains_display_name"},{"kind":"sender_notification_permission","key":"room"}]`,
		`[{"kind":"room_member_count","is":">99999999999"},{"kind":"unknown"}]`,
	} {
		f.Add([]byte(c), []byte(ev), "Alice", 2, "content.body")
	}
	f.Fuzz(func(t *testing.T, conds, event []byte, displayName string, members int, key string) {
		e, err := ParseEvent(event)
		if err != nil {
			return
		}
		ctx := &Context{UserID: "@b:x", DisplayName: displayName, MemberCount: members, SenderLevel: 50,
			NotificationLevel: func(string) int64 { return 50 }}
		var cs []Condition
		if json.Unmarshal(conds, &cs) == nil {
			rs := &Ruleset{Override: []Rule{{RuleID: "r", Enabled: true, Conditions: cs, Actions: []any{"notify"}, kind: KindOverride}}}
			first, ok1 := Compile(rs).Evaluate(e, ctx)
			second, ok2 := Compile(rs).Evaluate(e, ctx)
			if ok1 != ok2 || first.RuleID != second.RuleID {
				t.Fatalf("conditions %s on %s: %v then %v", conds, event, ok1, ok2)
			}
		}
		v, found := e.Lookup(SplitPath(key))
		if !found || key == "" { // an empty key is refused by design
			return
		}
		if _, ok := scalar(v); !ok {
			return
		}
		value, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rs := &Ruleset{Override: []Rule{{RuleID: "is", Enabled: true, Conditions: []Condition{{Kind: "event_property_is", Key: key, Value: value}}, kind: KindOverride}}}
		if _, ok := Compile(rs).Evaluate(e, ctx); !ok {
			t.Fatalf("event_property_is %s = %s does not match %s", key, value, event)
		}
	})
}
