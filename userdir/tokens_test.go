package userdir

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTokens(t *testing.T) {
	got := tokens("@Alice.Smith:Example.org", "Ålice  Smith-Jones")
	want := []string{"alice", "smith", "example", "org", "alicesmith", "ålice", "jones"}
	if !slices.Equal(got, want) {
		t.Errorf("tokens = %q, want %q", got, want)
	}
	// A remote server's display name cannot put huge or many entries in
	// the index, and a cut never splits a rune.
	long := strings.Repeat("é", 100) + " " + strings.Repeat("w ", 100) + strings.Repeat("x", 500)
	got = tokens("@bob:remote", long)
	if len(got) > maxTokens {
		t.Errorf("%d tokens, want at most %d", len(got), maxTokens)
	}
	for _, tok := range got {
		if len(tok) > maxTokenBytes || !utf8.ValidString(tok) {
			t.Errorf("token %q: %d bytes, valid %v", tok, len(tok), utf8.ValidString(tok))
		}
	}
	if !slices.Contains(got, "bob") {
		t.Errorf("the localpart was dropped: %q", got)
	}
	if w := splitWords(strings.Repeat("y", 200)); len(w) != 1 || len(w[0]) != maxTokenBytes {
		t.Errorf("a long search word is not cut like a token: %q", w)
	}
}
