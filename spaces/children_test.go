package spaces

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func childEv(roomID string, ts int64, content string) ChildEvent {
	return ChildEvent{Type: "m.space.child", StateKey: roomID, Sender: "@a:x", OriginServerTS: ts, Content: json.RawMessage(content)}
}

func stateKeys(cs []child) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ev.StateKey)
	}
	return out
}

func TestHierarchyChildOrder(t *testing.T) {
	tests := []struct {
		name string
		evs  []ChildEvent
		want []string
	}{
		{"the spec's example", []ChildEvent{
			childEv("!b:example.org", 1640341000000, `{"order":" ","via":["example.org"]}`),
			childEv("!a:example.org", 1640141000000, `{"order":"aaaa","via":["example.org"]}`),
			childEv("!c:example.org", 1640841000000, `{"order":"first","via":["example.org"]}`),
			childEv("!e:example.org", 1640641000000, `{"via":["example.org"]}`),
			childEv("!d:example.org", 1640741000000, `{"via":["example.org"]}`),
		}, []string{"!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org", "!d:example.org"}},
		{"same order: by timestamp, then room ID", []ChildEvent{
			childEv("!z:x", 5, `{"order":"a","via":["x"]}`),
			childEv("!y:x", 5, `{"order":"a","via":["x"]}`),
			childEv("!x:x", 9, `{"order":"a","via":["x"]}`),
			childEv("!w:x", 1, `{"order":"a","via":["x"]}`),
		}, []string{"!w:x", "!y:x", "!z:x", "!x:x"}},
		{"no order: by timestamp, then room ID", []ChildEvent{
			childEv("!b:x", 2, `{"via":["x"]}`),
			childEv("!c:x", 1, `{"via":["x"]}`),
			childEv("!a:x", 2, `{"via":["x"]}`),
		}, []string{"!c:x", "!a:x", "!b:x"}},
		{"code point order: space before tilde, upper case before lower", []ChildEvent{
			childEv("!1:x", 1, `{"order":"~","via":["x"]}`),
			childEv("!2:x", 1, `{"order":"a","via":["x"]}`),
			childEv("!3:x", 1, `{"order":"B","via":["x"]}`),
			childEv("!4:x", 1, `{"order":" ","via":["x"]}`),
		}, []string{"!4:x", "!3:x", "!2:x", "!1:x"}},
		{"invalid orders count as none", []ChildEvent{
			childEv("!long:x", 1, `{"order":"`+strings.Repeat("a", 51)+`","via":["x"]}`),
			childEv("!number:x", 2, `{"order":1,"via":["x"]}`),
			childEv("!control:x", 3, `{"order":"a\u0007","via":["x"]}`),
			childEv("!unicode:x", 4, `{"order":"é","via":["x"]}`),
			childEv("!empty:x", 5, `{"order":"","via":["x"]}`),
			childEv("!fifty:x", 6, `{"order":"`+strings.Repeat("z", 50)+`","via":["x"]}`),
		}, []string{"!fifty:x", "!long:x", "!number:x", "!control:x", "!unicode:x", "!empty:x"}},
		{"children without a valid via are not children", []ChildEvent{
			childEv("!novia:x", 1, `{}`),
			childEv("!emptyvia:x", 2, `{"via":[]}`),
			childEv("!strvia:x", 3, `{"via":"x"}`),
			childEv("!numvia:x", 4, `{"via":[1]}`),
			childEv("!ok:x", 5, `{"via":["x"]}`),
			childEv("notaroom", 6, `{"via":["x"]}`),
			{Type: "m.room.name", StateKey: "!other:x", Content: json.RawMessage(`{"via":["x"]}`)},
		}, []string{"!ok:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stateKeys(validChildren(tt.evs, false)); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHierarchySuggestedChildren(t *testing.T) {
	evs := []ChildEvent{
		childEv("!a:x", 1, `{"via":["x"],"suggested":true}`),
		childEv("!b:x", 2, `{"via":["x"]}`),
		childEv("!c:x", 3, `{"via":["x"],"suggested":"true"}`),
		childEv("!d:x", 4, `{"via":["x"],"suggested":false}`),
	}
	if got := stateKeys(validChildren(evs, true)); !slices.Equal(got, []string{"!a:x"}) {
		t.Errorf("suggested only: %v", got)
	}
	if got := stateKeys(validChildren(evs, false)); len(got) != 4 {
		t.Errorf("all: %v", got)
	}
}
