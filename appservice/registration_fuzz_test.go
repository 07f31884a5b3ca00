package appservice

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// FuzzNamespaces loads registrations with arbitrary user namespace regexes:
// loading must not panic (a bad regex is an error naming the field), and
// matching must be what each regex means on its own, anchored at the start
// like Synapse's re.match, with exclusive namespaces reserving at least
// what they match.
func FuzzNamespaces(f *testing.F) {
	for _, s := range [][3]string{
		{`@irc_.*`, `@slack_.*:example\.org`, "@irc_alice:example.org"},
		{`@.*`, ``, "@anyone:x"},
		{`(?i)@Bot`, `x|@y`, "@bot:x"},
		{`a)|(b`, `b`, "b"},
		{`\Qa.b\E.*`, `$^`, "a.bc"},
		{`[[:alpha:]]+`, `\pL{2,5}`, "ab"},
		{`@a`, `@b$`, "@bc"},
		{`(((((x)))))`, `x{2,1000}`, "xx"},
		{`\Qabc`, ``, "abc"},
	} {
		f.Add(s[0], s[1], true, s[2])
		f.Add(s[0], s[1], false, s[2])
	}
	f.Fuzz(func(t *testing.T, re1, re2 string, exclusive bool, userID string) {
		if !utf8.ValidString(re1) || !utf8.ValidString(re2) {
			return // YAML would carry them as binary; regexp refuses them anyway
		}
		nss := []Namespace{{Exclusive: exclusive, Regex: re1}}
		if re2 != "" {
			nss = append(nss, Namespace{Regex: re2})
		}
		var reg struct {
			ID         string `yaml:"id"`
			ASToken    string `yaml:"as_token"`
			HSToken    string `yaml:"hs_token"`
			Namespaces struct {
				Users []Namespace `yaml:"users"`
			} `yaml:"namespaces"`
		}
		reg.ID, reg.ASToken, reg.HSToken = "fuzz", "as", "hs"
		reg.Namespaces.Users = nss
		data, err := yaml.Marshal(reg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		set, err := Load([]string{path}, nil)

		var compiled []*regexp.Regexp
		for _, ns := range nss {
			re, cerr := regexp.Compile(ns.Regex)
			if cerr == nil {
				// Used inside a group: a regex that compiles alone but
				// not there (\Q without \E) is refused too.
				_, cerr = regexp.Compile("(?i:^(?:" + ns.Regex + "))")
			}
			if cerr != nil || ns.Regex == "" {
				if err == nil {
					t.Fatalf("namespace %q loaded although it does not compile", ns.Regex)
				}
				return
			}
			compiled = append(compiled, re)
		}
		if err != nil {
			t.Fatalf("namespaces %q, %q that compile were refused: %v", re1, re2, err)
		}
		r := set.Regs[0]
		want := false
		for _, re := range compiled {
			loc := re.FindStringIndex(userID)
			want = want || (loc != nil && loc[0] == 0)
		}
		if got := r.MatchesUser(userID); got != want {
			t.Fatalf("namespaces %q, %q: MatchesUser(%q) = %v, want %v", re1, re2, userID, got, want)
		}
		if loc := compiled[0].FindStringIndex(userID); exclusive && loc != nil && loc[0] == 0 && !r.ExclusiveUser(userID) {
			t.Fatalf("exclusive namespace %q matches %q but does not reserve it", re1, userID)
		}
		if !exclusive && r.ExclusiveUser(userID) {
			t.Fatalf("no exclusive namespace, yet %q is reserved", userID)
		}
	})
}
