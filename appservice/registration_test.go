package appservice_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"homeserver/appservice"
	"homeserver/mxhttp"
)

// regYAML is a valid registration; tests derive bad ones from it.
func regYAML(id, as, hs string) string {
	return fmt.Sprintf(`id: %s
url: http://localhost:9999
as_token: %s
hs_token: %s
sender_localpart: _%s_bot
namespaces:
  users:
    - exclusive: true
      regex: "@_%s_.*"
  aliases:
    - exclusive: false
      regex: "#_%s_.*"
  rooms: []
`, id, as, hs, id, id, id)
}

func writeFiles(t *testing.T, files ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, f := range files {
		p := filepath.Join(dir, fmt.Sprintf("reg%d.yaml", i))
		if err := os.WriteFile(p, []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func TestLoadRejectsMalformedRegistrations(t *testing.T) {
	good := regYAML("irc", "as1", "hs1")
	for _, tc := range []struct {
		name  string
		files []string
		// file is the index of the file the error must name.
		file int
		want string
	}{
		{"missing as_token", []string{strings.Replace(good, "as_token: as1\n", "", 1)}, 0, "as_token: missing"},
		{"missing hs_token", []string{strings.Replace(good, "hs_token: hs1\n", "", 1)}, 0, "hs_token: missing"},
		{"same tokens", []string{strings.Replace(good, "hs_token: hs1", "hs_token: as1", 1)}, 0, "hs_token: must differ from as_token"},
		{"bad user regex", []string{strings.Replace(good, `"@_irc_.*"`, `"@_irc_(.*"`, 1)}, 0, "namespaces.users[0].regex: invalid regex"},
		{"bad alias regex", []string{strings.Replace(good, `"#_irc_.*"`, `"#[z-a]"`, 1)}, 0, "namespaces.aliases[0].regex: invalid regex"},
		{"empty regex", []string{strings.Replace(good, `regex: "@_irc_.*"`, `regex: ""`, 1)}, 0, "namespaces.users[0].regex: missing"},
		{"non-http url", []string{strings.Replace(good, "http://localhost:9999", "ftp://localhost:9999", 1)}, 0, `url: "ftp://localhost:9999" is not an http(s) URL`},
		{"url without host", []string{strings.Replace(good, "http://localhost:9999", "http://", 1)}, 0, "url:"},
		{"invalid YAML", []string{"id: [unclosed\n"}, 0, "invalid YAML"},
		{"bad sender_localpart", []string{strings.Replace(good, "_irc_bot", "'bad:bot'", 1)}, 0, "sender_localpart: invalid"},
		{"duplicate id", []string{good, regYAML("irc", "as2", "hs2")}, 1, `id: "irc" is already used by`},
		{"duplicate as_token", []string{good, regYAML("slack", "as1", "hs2")}, 1, "as_token: already used by"},
		{"duplicate hs_token", []string{good, regYAML("slack", "as2", "hs1")}, 1, "hs_token: already used by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			paths := writeFiles(t, tc.files...)
			set, err := appservice.Load(paths, nil)
			if err == nil {
				t.Fatalf("Load succeeded with %d registrations", len(set.Regs))
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, paths[tc.file]+": ") {
				t.Fatalf("error %q, want %q naming %s", msg, tc.want, paths[tc.file])
			}
			if strings.Contains(msg, "\n") {
				t.Fatalf("error spans lines: %q", msg)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.yaml")
	if _, err := appservice.Load([]string{p}, nil); err == nil || !strings.HasPrefix(err.Error(), p+": ") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadDefaultsAndOptions(t *testing.T) {
	dir := t.TempDir()
	// A 2015-style registration: no id, url null, no sender_localpart.
	old := filepath.Join(dir, "old-bridge.yaml")
	if err := os.WriteFile(old, []byte(`url: null
as_token: a
hs_token: h
namespaces:
  users: [{exclusive: false, regex: "@old_.*"}]
de.sorunome.msc2409.push_ephemeral: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	modern := filepath.Join(dir, "modern.yaml")
	if err := os.WriteFile(modern, []byte(regYAML("irc", "a2", "h2")+"receive_ephemeral: true\nrate_limited: false\nurl_extra: ignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.yaml")
	if err := os.WriteFile(plain, []byte(regYAML("plain", "a3", "h3")), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := appservice.Load([]string{old, modern, plain}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := set.ByID("old-bridge")
	if o == nil || o.URL != "" || o.SenderLocalpart != "old-bridge" || o.File != old {
		t.Fatalf("2015-style registration: %+v", o)
	}
	if !o.Ephemeral() || !o.RateLimited() {
		t.Errorf("old: Ephemeral %v RateLimited %v, want true true", o.Ephemeral(), o.RateLimited())
	}
	m := set.ByASToken("a2")
	if m == nil || m.ID != "irc" || m.URL != "http://localhost:9999" {
		t.Fatalf("ByASToken(a2) = %+v", m)
	}
	if !m.Ephemeral() || m.RateLimited() {
		t.Errorf("modern: Ephemeral %v RateLimited %v, want true false", m.Ephemeral(), m.RateLimited())
	}
	if p := set.ByID("plain"); p.Ephemeral() || !p.RateLimited() {
		t.Errorf("plain: Ephemeral %v RateLimited %v, want false true", p.Ephemeral(), p.RateLimited())
	}
	if set.ByASToken("h2") != nil || set.ByASToken("") != nil || set.ByID("nope") != nil {
		t.Error("lookup of an unknown token or id found a registration")
	}
	if got := m.Sender("test.local"); got != "@_irc_bot:test.local" {
		t.Errorf("Sender = %s", got)
	}
}

func TestNamespaces(t *testing.T) {
	// Hundreds of namespaces, a few exclusive, still match in one pass each.
	var b strings.Builder
	b.WriteString("id: big\nurl: http://localhost\nas_token: a\nhs_token: h\nsender_localpart: big\nnamespaces:\n  users:\n")
	for i := range 500 {
		fmt.Fprintf(&b, "    - {exclusive: %v, regex: \"@net%d_.*:test\\\\.local\"}\n", i%100 == 0, i)
	}
	b.WriteString("  aliases:\n    - {exclusive: true, regex: \"#big_.*\"}\n  rooms:\n    - {exclusive: false, regex: \"!bigroom:.*\"}\n")
	set, err := appservice.Load(writeFiles(t, b.String(), regYAML("irc", "a2", "h2")), nil)
	if err != nil {
		t.Fatal(err)
	}
	big := set.ByID("big")
	for _, tc := range []struct {
		user             string
		match, exclusive bool
	}{
		{"@net0_x:test.local", true, true},
		{"@net1_x:test.local", true, false},
		{"@net499_x:test.local", true, false},
		{"@net400_x:test.local", true, true},
		{"@net500_x:test.local", false, false},
		{"@xnet1_x:test.local", false, false}, // anchored at the start
		{"@net1_x:other.org", false, false},
	} {
		if got := big.MatchesUser(tc.user); got != tc.match {
			t.Errorf("MatchesUser(%s) = %v", tc.user, got)
		}
		if got := big.ExclusiveUser(tc.user); got != tc.exclusive {
			t.Errorf("ExclusiveUser(%s) = %v", tc.user, got)
		}
	}
	if !big.MatchesAlias("#big_chan:test.local") || !big.ExclusiveAlias("#big_chan:test.local") || big.MatchesAlias("#other:test.local") {
		t.Error("alias namespace")
	}
	if !big.MatchesRoom("!bigroom:test.local") || big.MatchesRoom("!small:test.local") {
		t.Error("room namespace")
	}
	if !big.MayActAs("@big:test.local", "test.local") {
		t.Error("a service may not act as its own sender")
	}
	if set.ExclusiveUserOwner("@net0_x:test.local") != big || set.ExclusiveUserOwner("@net1_x:test.local") != nil {
		t.Error("ExclusiveUserOwner")
	}
	irc := set.ByID("irc")
	if set.ExclusiveUserOwner("@_irc_x:test.local") != irc || set.ExclusiveAliasOwner("#_irc_x:test.local") != nil {
		t.Error("exclusive owners of irc's namespaces")
	}
}

func wantExclusive(t *testing.T, what string, err error) {
	t.Helper()
	me, ok := err.(*mxhttp.Error)
	if !ok || me.Status != http.StatusBadRequest || me.Code != "M_EXCLUSIVE" {
		t.Errorf("%s: err = %v, want 400 M_EXCLUSIVE", what, err)
	}
}

func TestCheckUserAndAlias(t *testing.T) {
	set, err := appservice.Load(writeFiles(t, regYAML("irc", "a1", "h1"), regYAML("slack", "a2", "h2")), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Anyone may create what no service reserves.
	if err := set.CheckUser("@alice:test.local", ""); err != nil {
		t.Errorf("CheckUser(alice) = %v", err)
	}
	wantExclusive(t, "a user in an exclusive namespace", set.CheckUser("@_irc_bob:test.local", ""))
	wantExclusive(t, "a service outside its namespace", set.CheckUser("@alice:test.local", "irc"))
	wantExclusive(t, "a service in another's exclusive namespace", set.CheckUser("@_slack_x:test.local", "irc"))
	wantExclusive(t, "an unknown service", set.CheckUser("@_irc_x:test.local", "nope"))
	for _, u := range []string{"@_irc_bob:test.local", "@_irc_bot:test.local"} {
		if err := set.CheckUser(u, "irc"); err != nil {
			t.Errorf("CheckUser(%s, irc) = %v", u, err)
		}
	}
	// The alias namespaces are not exclusive: anyone may create those.
	if err := set.CheckAlias("#_irc_chan:test.local", ""); err != nil {
		t.Errorf("CheckAlias(non-exclusive) = %v", err)
	}
	if err := set.CheckAlias("#_irc_chan:test.local", "irc"); err != nil {
		t.Errorf("CheckAlias(own) = %v", err)
	}
	wantExclusive(t, "a service creating an alias outside its namespace", set.CheckAlias("#general:test.local", "irc"))

	var none *appservice.Set
	if none.CheckUser("@_irc_x:test.local", "") != nil || none.CheckAlias("#x:test.local", "") != nil || none.ByASToken("a1") != nil {
		t.Error("a nil set reserves something")
	}
}

// Registration folds user IDs to lower case, so an exclusive namespace
// reserves every case variant of what it covers, whichever case its regex
// is written in; non-exclusive interest stays as written.
func TestExclusiveNamespacesIgnoreCase(t *testing.T) {
	reg := `id: bridge
url: http://localhost
as_token: a
hs_token: h
sender_localpart: bridgebot
namespaces:
  users:
    - {exclusive: true, regex: "@bridge_.*"}
    - {exclusive: true, regex: "@Upper_.*"}
    - {exclusive: false, regex: "@shared_.*"}
  aliases:
    - {exclusive: true, regex: "#bridge_.*"}
`
	set, err := appservice.Load(writeFiles(t, reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"@Bridge_x:test.local", "@BRIDGE_X:test.local", "@upper_x:test.local", "@UPPER_x:test.local"} {
		wantExclusive(t, "user "+user, set.CheckUser(user, ""))
	}
	for _, alias := range []string{"#Bridge_alias:test.local", "#BRIDGE_ALIAS:test.local"} {
		wantExclusive(t, "alias "+alias, set.CheckAlias(alias, ""))
	}
	if err := set.CheckUser("@Shared_x:test.local", ""); err != nil {
		t.Errorf("non-exclusive namespace: %v", err)
	}
	if err := set.CheckUser("@bridge_x:test.local", "bridge"); err != nil {
		t.Errorf("the service's own user: %v", err)
	}
	if set.ByID("bridge").MatchesUser("@Shared_x:test.local") {
		t.Error("interest became case-insensitive")
	}
}
