package filter

import (
	"encoding/json"
	"slices"
	"testing"
)

// FuzzFilter parses arbitrary filters and applies them to an arbitrary
// event: nothing may panic, type patterns must follow the spec's glob
// ('*' matches any run of characters, everything else is literal), and
// event_fields must give valid JSON that the same fields leave unchanged.
func FuzzFilter(f *testing.F) {
	f.Add([]byte(`{"room":{"timeline":{"types":["m.room.*"],"not_senders":["@b:x"],"limit":10,"contains_url":true}},"event_fields":["type","content.body","content.m\\.relates_to"]}`),
		"m.room.message", []byte(`{"type":"m.room.message","sender":"@a:x","content":{"body":"hi","url":"mxc://x/y","m.relates_to":{}}}`))
	f.Add([]byte(`{"presence":{"types":["*"],"not_types":["m.presence"]},"account_data":{"senders":[]}}`),
		"m.presence", []byte(`{}`))
	f.Add([]byte(`{"room":{"state":{"types":["a/*","[x]","?","\\*"]},"rooms":["!r:x"]},"event_fields":["","a.","\\","a\\.b.c"]}`),
		"a/b/c", []byte(`{"a":{"b":{"c":1}},"a.b":{"c":[1]}}`))
	f.Add([]byte(`{"event_format":"federation","event_fields":["content","content.x.y"]}`),
		"", []byte(`{"content":{"x":{"y":null}}}`))
	f.Fuzz(func(t *testing.T, data []byte, eventType string, event []byte) {
		flt, err := ParseFilter(data)
		if err != nil {
			return
		}
		var ev struct {
			Content json.RawMessage `json:"content"`
			Sender  string          `json:"sender"`
		}
		_ = json.Unmarshal(event, &ev)
		if r := flt.Room; r != nil {
			r.IncludesRoom("!r:x")
			for _, ef := range []*RoomEventFilter{r.Timeline, r.State, r.Ephemeral, r.AccountData} {
				if ef != nil {
					checkMatch(t, *ef, ef.Match("!r:x", eventType, ev.Sender, ev.Content), eventType, ev.Sender)
				}
			}
		}
		for _, ef := range []*EventFilter{flt.Presence, flt.AccountData} {
			if ef != nil {
				r := RoomEventFilter{Types: ef.Types, NotTypes: ef.NotTypes, Senders: ef.Senders, NotSenders: ef.NotSenders}
				checkMatch(t, r, ef.Match(eventType, ev.Sender), eventType, ev.Sender)
			}
		}
		if !json.Valid(event) {
			return
		}
		out := ApplyEventFields(event, flt.EventFields)
		if !json.Valid(out) {
			t.Fatalf("event_fields %q of %s gave invalid JSON %s", flt.EventFields, event, out)
		}
		if len(flt.EventFields) > 0 && json.Unmarshal(event, new(map[string]any)) == nil {
			if again := ApplyEventFields(out, flt.EventFields); !jsonEqual(again, out) {
				t.Fatalf("event_fields %q not idempotent on %s: %s, then %s", flt.EventFields, event, out, again)
			}
		}
	})
}

// checkMatch compares a filter's decision for an event in room "!r:x"
// with the spec's rules: not_* lists win, an absent list allows everything,
// and contains_url can only narrow the result.
func checkMatch(t *testing.T, f RoomEventFilter, got bool, eventType, sender string) {
	t.Helper()
	matches := func(p string) bool { return globMatch(p, eventType) }
	want := !slices.ContainsFunc(f.NotTypes, matches) && (f.Types == nil || slices.ContainsFunc(f.Types, matches)) &&
		!slices.Contains(f.NotRooms, "!r:x") && (f.Rooms == nil || slices.Contains(f.Rooms, "!r:x")) &&
		!slices.Contains(f.NotSenders, sender) && (f.Senders == nil || slices.Contains(f.Senders, sender))
	if got != want && (f.ContainsURL == nil || got) {
		t.Fatalf("filter %+v on type %q from %q: match %v, want %v", f, eventType, sender, got, want)
	}
}

// globMatch is the spec's type pattern, written independently of the
// package: '*' matches any run of characters, nothing else is special.
func globMatch(pattern, s string) bool {
	// ok[j] says whether the pattern so far matches s[:j].
	ok := make([]bool, len(s)+1)
	ok[0] = true
	for i := 0; i < len(pattern); i++ {
		next := make([]bool, len(s)+1)
		for j := range next {
			if pattern[i] == '*' {
				next[j] = ok[j] || (j > 0 && next[j-1])
			} else {
				next[j] = j > 0 && ok[j-1] && s[j-1] == pattern[i]
			}
		}
		ok = next
	}
	return ok[len(s)]
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}
