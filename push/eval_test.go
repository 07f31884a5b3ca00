package push

import (
	"encoding/json"
	"fmt"
	"testing"
)

func ev(t testing.TB, js string) *Event {
	t.Helper()
	e, err := ParseEvent([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestConditions(t *testing.T) {
	topic := func(v string) string {
		return fmt.Sprintf(`{"type":"m.room.topic","state_key":"","room_id":"!r:x","sender":"@s:x","content":{"topic":%s}}`, v)
	}
	body := func(v string) string {
		return fmt.Sprintf(`{"type":"m.room.message","room_id":"!r:x","sender":"@s:x","content":{"body":%q,"msgtype":"m.text"}}`, v)
	}
	ctx := &Context{UserID: "@me:x", DisplayName: "Mr. (Smith)+", MemberCount: 2, SenderLevel: 50}
	cases := []struct {
		name string
		cond Condition
		ev   string
		want bool
	}{
		{"glob lunc?*", match("content.topic", "lunc?*"), topic(`"Lunch plans"`), true},
		{"glob case", match("content.topic", "lunc?*"), topic(`"LUNCH"`), true},
		{"glob leading space", match("content.topic", "lunc?*"), topic(`" lunch"`), false},
		{"glob ? needs a char", match("content.topic", "lunc?*"), topic(`"lunc"`), false},
		{"glob null", match("content.topic", "lunc?*"), topic(`null`), false},
		{"glob * absent", match("content.nope", "*"), topic(`"x"`), false},
		{"glob * non-string", match("content.topic", "*"), topic(`1`), false},
		{"glob metachar literal", match("content.topic", "a.b"), topic(`"axb"`), false},
		{"glob metachar literal ok", match("content.topic", "a.b(c)"), topic(`"A.B(c)"`), true},
		{"body word ex*ple", match("content.body", "ex*ple"), body("An example event."), true},
		{"body exple", match("content.body", "ex*ple"), body("exple"), true},
		{"body spans words", match("content.body", "ex*ple"), body("An exciting triple-whammy"), true},
		{"body not in word", match("content.body", "cake"), body("pancakes"), false},
		{"body word", match("content.body", "cake"), body("a cake!"), true},
		{"escaped dot", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: raw(true)},
			`{"type":"m.room.create","content":{"m.federate":true}}`, true},
		{"escaped dot string true", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: raw(true)},
			`{"type":"m.room.create","content":{"m.federate":"true"}}`, false},
		{"escaped dot no cast", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: raw(true)},
			`{"type":"m.room.create","content":{"m.federate":1}}`, false},
		{"unescaped dot is nesting", Condition{Kind: "event_property_is", Key: `content.m.federate`, Value: raw(true)},
			`{"type":"m.room.create","content":{"m.federate":true}}`, false},
		{"escaped backslash", match(`content.m\\foo`, "bar"), `{"content":{"m\\foo":"bar"}}`, true},
		{"property is null", Condition{Kind: "event_property_is", Key: "content.x", Value: raw(nil)}, `{"content":{"x":null}}`, true},
		{"property is int", Condition{Kind: "event_property_is", Key: "content.x", Value: raw(3)}, `{"content":{"x":3}}`, true},
		{"property is compound", Condition{Kind: "event_property_is", Key: "content.x", Value: raw(3)}, `{"content":{"x":[3]}}`, false},
		{"contains", Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: raw("#myroom:example.com")},
			`{"content":{"alt_aliases":["#somewhere:example.org","#myroom:example.com"]}}`, true},
		{"contains partial", Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: raw(":example.com")},
			`{"content":{"alt_aliases":["#somewhere:example.org","#myroom:example.com"]}}`, false},
		{"contains not array", Condition{Kind: "event_property_contains", Key: "content.a", Value: raw("x")}, `{"content":{"a":"x"}}`, false},
		{"display name metachars", Condition{Kind: "contains_display_name"}, body("hey mr. (smith)+ look"), true},
		{"display name not regex", Condition{Kind: "contains_display_name"}, body("hey Mrx (Smith)+"), false},
		{"display name in word", Condition{Kind: "contains_display_name"}, body("xMr. (Smith)+"), false},
		{"count ==", Condition{Kind: "room_member_count", Is: "2"}, body("x"), true},
		{"count == prefix", Condition{Kind: "room_member_count", Is: "==2"}, body("x"), true},
		{"count <", Condition{Kind: "room_member_count", Is: "<2"}, body("x"), false},
		{"count <=", Condition{Kind: "room_member_count", Is: "<=2"}, body("x"), true},
		{"count >", Condition{Kind: "room_member_count", Is: ">1"}, body("x"), true},
		{"count >=", Condition{Kind: "room_member_count", Is: ">=3"}, body("x"), false},
		{"count bad", Condition{Kind: "room_member_count", Is: "two"}, body("x"), false},
		{"sender permission", Condition{Kind: "sender_notification_permission", Key: "room"}, body("x"), true},
		{"unknown never matches", Condition{Kind: "org.example.always"}, body("x"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := compileCond(tc.cond)(ev(t, tc.ev), ctx); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSplitPath(t *testing.T) {
	for in, want := range map[string]string{
		`content.body`:               `["content","body"]`,
		`content.m\.relates_to.type`: `["content","m.relates_to","type"]`,
		`content.m\\foo`:             `["content","m\\foo"]`,
		`content.m\x`:                `["content","m\\x"]`,
	} {
		got, _ := json.Marshal(SplitPath(in))
		if string(got) != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

func TestDefaultRules(t *testing.T) {
	me := "@me:x"
	rules := Compile((&UserRules{}).Ruleset(me))
	msg := func(members int, content string) (*Event, *Context) {
		return ev(t, `{"type":"m.room.message","room_id":"!r:x","sender":"@s:x","content":`+content+`}`),
			&Context{UserID: me, DisplayName: "Me", MemberCount: members}
	}
	type want struct {
		rule      string
		notify    bool
		highlight bool
	}
	cases := []struct {
		name string
		ev   *Event
		ctx  *Context
		want want
	}{}
	add := func(name string, e *Event, c *Context, w want) {
		cases = append(cases, struct {
			name string
			ev   *Event
			ctx  *Context
			want want
		}{name, e, c, w})
	}
	e, c := msg(2, `{"body":"hi","msgtype":"m.text"}`)
	add("dm", e, c, want{".m.rule.room_one_to_one", true, false})
	e, c = msg(5, `{"body":"hi","msgtype":"m.text"}`)
	add("group", e, c, want{".m.rule.message", true, false})
	e, c = msg(5, `{"body":"hi Me","msgtype":"m.text"}`)
	add("display name is no longer a default", e, c, want{".m.rule.message", true, false})
	e, c = msg(5, `{"body":"hi","msgtype":"m.notice"}`)
	add("notice", e, c, want{".m.rule.suppress_notices", false, false})
	e, c = msg(5, `{"body":"hi","m.mentions":{"user_ids":["@me:x"]}}`)
	add("user mention", e, c, want{".m.rule.is_user_mention", true, true})
	e, c = msg(5, `{"body":"hi","m.mentions":{"user_ids":["@other:x"]}}`)
	add("other mention", e, c, want{".m.rule.message", true, false})
	e, c = msg(5, `{"body":"@room","m.mentions":{"room":true}}`)
	c.SenderLevel = 50
	add("room mention by mod", e, c, want{".m.rule.is_room_mention", true, true})
	e, c = msg(5, `{"body":"@room","m.mentions":{"room":true}}`)
	add("room mention by user", e, c, want{".m.rule.message", true, false})
	e, c = msg(5, `{"body":"* x","m.new_content":{},"m.relates_to":{"rel_type":"m.replace","event_id":"$a"}}`)
	add("edit", e, c, want{".m.rule.suppress_edits", false, false})
	add("invite", ev(t, `{"type":"m.room.member","state_key":"@me:x","content":{"membership":"invite"}}`), &Context{UserID: me, MemberCount: 3},
		want{".m.rule.invite_for_me", true, false})
	add("other member", ev(t, `{"type":"m.room.member","state_key":"@o:x","content":{"membership":"invite"}}`), &Context{UserID: me},
		want{".m.rule.member_event", false, false})
	add("tombstone", ev(t, `{"type":"m.room.tombstone","state_key":"","content":{}}`), &Context{UserID: me},
		want{".m.rule.tombstone", true, true})
	add("tombstone non-state", ev(t, `{"type":"m.room.tombstone","content":{}}`), &Context{UserID: me}, want{})
	add("reaction", ev(t, `{"type":"m.reaction","content":{}}`), &Context{UserID: me, MemberCount: 2}, want{".m.rule.reaction", false, false})
	add("acl", ev(t, `{"type":"m.room.server_acl","state_key":"","content":{}}`), &Context{UserID: me}, want{".m.rule.room.server_acl", false, false})
	add("call", ev(t, `{"type":"m.call.invite","content":{}}`), &Context{UserID: me, MemberCount: 2}, want{".m.rule.call", true, false})
	add("encrypted dm", ev(t, `{"type":"m.room.encrypted","content":{}}`), &Context{UserID: me, MemberCount: 2}, want{".m.rule.encrypted_room_one_to_one", true, false})
	add("encrypted group", ev(t, `{"type":"m.room.encrypted","content":{}}`), &Context{UserID: me, MemberCount: 3}, want{".m.rule.encrypted", true, false})
	add("topic", ev(t, `{"type":"m.room.topic","state_key":"","content":{"topic":"x"}}`), &Context{UserID: me}, want{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, ok := rules.Evaluate(tc.ev, tc.ctx)
			if tc.want.rule == "" {
				if ok {
					t.Fatalf("matched %s", res.RuleID)
				}
				return
			}
			if res.RuleID != tc.want.rule || res.Notify != tc.want.notify || res.Highlight != tc.want.highlight {
				t.Fatalf("got %+v, want %+v", res, tc.want)
			}
		})
	}
}

func TestDefaultRulesetShape(t *testing.T) {
	rs := (&UserRules{}).Ruleset("@me:x")
	var ids []string
	for _, r := range append(append([]Rule{}, rs.Override...), rs.Underride...) {
		ids = append(ids, r.RuleID)
	}
	got, _ := json.Marshal(ids)
	want := `[".m.rule.master",".m.rule.suppress_notices",".m.rule.invite_for_me",".m.rule.member_event",".m.rule.is_user_mention",".m.rule.is_room_mention",".m.rule.tombstone",".m.rule.reaction",".m.rule.room.server_acl",".m.rule.suppress_edits",".m.rule.call",".m.rule.encrypted_room_one_to_one",".m.rule.room_one_to_one",".m.rule.message",".m.rule.encrypted"]`
	if string(got) != want {
		t.Fatalf("order %s", got)
	}
	b, _ := json.Marshal(rs.Override[0])
	if string(b) != `{"rule_id":".m.rule.master","default":true,"enabled":false,"actions":[],"conditions":[]}` {
		t.Fatalf("master %s", b)
	}
	b, _ = json.Marshal(rs.Override[6].Conditions[1])
	if string(b) != `{"kind":"event_match","key":"state_key","pattern":""}` {
		t.Fatalf("tombstone %s", b)
	}
}

func TestUserRulesPrecedence(t *testing.T) {
	u := &UserRules{
		Room:     []Rule{{RuleID: "!muted:x", Enabled: true, Actions: []any{"dont_notify"}}},
		Content:  []Rule{{RuleID: "cake", Enabled: true, Pattern: str("cake*"), Actions: []any{"notify", map[string]any{"set_tweak": "highlight", "value": false}}}},
		Defaults: map[string]DefaultChange{".m.rule.suppress_notices": {Enabled: new(bool)}},
	}
	c := Compile(u.Ruleset("@me:x"))
	ctx := &Context{UserID: "@me:x", MemberCount: 5}
	r, _ := c.Evaluate(ev(t, `{"type":"m.room.message","room_id":"!muted:x","content":{"body":"hi"}}`), ctx)
	if r.RuleID != "!muted:x" || r.Notify || len(r.Actions) != 0 {
		t.Fatalf("muted: %+v", r)
	}
	r, _ = c.Evaluate(ev(t, `{"type":"m.room.message","room_id":"!r:x","content":{"body":"cakes!"}}`), ctx)
	if r.RuleID != "cake" || !r.Notify || r.Highlight {
		t.Fatalf("content: %+v", r)
	}
	r, _ = c.Evaluate(ev(t, `{"type":"m.room.message","room_id":"!r:x","content":{"body":"x","msgtype":"m.notice"}}`), ctx)
	if r.RuleID != ".m.rule.message" {
		t.Fatalf("disabled default: %+v", r)
	}
	u.Defaults[".m.rule.master"] = DefaultChange{Enabled: func() *bool { b := true; return &b }()}
	if r, _ := Compile(u.Ruleset("@me:x")).Evaluate(ev(t, `{"type":"m.room.message","room_id":"!r:x","content":{"body":"cake"}}`), ctx); r.RuleID != ".m.rule.master" || r.Notify {
		t.Fatalf("master: %+v", r)
	}
	data, err := MarshalUserRules(u)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalUserRules(data)
	if err != nil || len(back.Room) != 1 || *back.Content[0].Pattern != "cake*" || !*back.Defaults[".m.rule.master"].Enabled {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

// BenchmarkEvaluate1000 evaluates the default rules for one event against
// 1,000 members, as the evaluator does for each event in a large room.
func BenchmarkEvaluate1000(b *testing.B) {
	members := make([]*Compiled, 1000)
	ctxs := make([]Context, 1000)
	for i := range members {
		u := fmt.Sprintf("@user%04d:x", i)
		members[i] = Compile((&UserRules{}).Ruleset(u))
		ctxs[i] = Context{UserID: u, DisplayName: fmt.Sprintf("User %d", i), MemberCount: 1000}
	}
	js := []byte(`{"type":"m.room.message","room_id":"!r:x","sender":"@s:x","content":{"body":"hello @user0001:x","msgtype":"m.text","m.mentions":{"user_ids":["@user0001:x"]}}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e, _ := ParseEvent(js)
		n := 0
		for i, c := range members {
			if r, ok := c.Evaluate(e, &ctxs[i]); ok && r.Highlight {
				n++
			}
		}
		if n != 1 {
			b.Fatalf("%d highlights", n)
		}
	}
}
