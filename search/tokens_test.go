package search

import (
	"slices"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for _, c := range []struct {
		term string
		want []string
	}{
		{"Quick  BROWN fox", []string{"quick", "brown", "fox"}},
		{`"fox*" -(NEAR`, []string{"fox", "near"}},
		{`fox fox FOX`, []string{"fox"}},
		{`" * ( ) - : & | ! '`, nil},
		{"café naïve 日本語", []string{"café", "naïve", "日本語"}},
		{"\u0301 a\u0301", []string{"a\u0301"}},
	} {
		if got := splitWords(c.term); !slices.Equal(got, c.want) {
			t.Errorf("splitWords(%q) = %q, want %q", c.term, got, c.want)
		}
	}
}

func TestTokens(t *testing.T) {
	for _, tok := range []token{
		{order: "rank", cursor: Cursor{Rank: 0.123456789, Pos: 42}},
		{order: "recent", group: "room_id", key: "!a:b\nc", cursor: Cursor{Pos: 7}},
		{order: "rank", group: "sender", key: "@u:x", cursor: Cursor{Rank: -3.5e-7, Pos: 1}},
	} {
		s := tok.encode()
		got, err := parseToken(s)
		if tok.key == "!a:b\nc" {
			// A newline cannot round-trip: the token is refused, not
			// misread.
			if err == nil {
				t.Errorf("token with a newline in its key parsed: %+v", got)
			}
			continue
		}
		if err != nil || got != tok {
			t.Errorf("round trip of %+v: %+v, %v", tok, got, err)
		}
	}
	for _, bad := range []string{"", "!!", "czE", "czEKcmFuawoKCjEK", "czEKYm9ndXMKCgoxCjA", "YWxsCgpOb25lLDM1ODcwOA"} {
		if _, err := parseToken(bad); err == nil {
			t.Errorf("parseToken(%q) accepted", bad)
		}
	}
}
