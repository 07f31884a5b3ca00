// Package appservice implements application services: registrations and
// their namespaces, the ordered, persistent transaction queue of each
// service, and the queries that let a service create users and rooms lazily.
package appservice

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"homeserver/mxhttp"
)

// Namespace is one regex of a registration.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
}

// Registration is an application service's registration file.
type Registration struct {
	ID              string `yaml:"id"`
	URL             string `yaml:"url"` // "" when null: nothing is pushed
	ASToken         string `yaml:"as_token"`
	HSToken         string `yaml:"hs_token"`
	SenderLocalpart string `yaml:"sender_localpart"`
	Namespaces      struct {
		Users   []Namespace `yaml:"users"`
		Aliases []Namespace `yaml:"aliases"`
		Rooms   []Namespace `yaml:"rooms"`
	} `yaml:"namespaces"`
	RateLimitedOpt   *bool    `yaml:"rate_limited"`
	Protocols        []string `yaml:"protocols"`
	ReceiveEphemeral bool     `yaml:"receive_ephemeral"`
	PushEphemeral    bool     `yaml:"de.sorunome.msc2409.push_ephemeral"`
	// MSC3202 asks for the device lists, one-time key counts and unused
	// fallback key types of the namespace's devices in transactions: what
	// an encrypting bridge would otherwise read from /sync.
	MSC3202 bool `yaml:"org.matrix.msc3202"`
	// MSC4190 says the service manages its users' devices itself; since
	// Matrix 1.17 every service may, so the key is accepted and implied.
	MSC4190 bool `yaml:"io.element.msc4190"`

	// File is where the registration was read from.
	File string `yaml:"-"`

	users, aliases, rooms matcher
}

// matcher matches any, or only the exclusive, namespaces of one kind with a
// single compiled regex each, so that hundreds of namespaces cost one pass.
// The exclusive one ignores case: registration folds localparts to lower
// case, so a reservation must also hold against the case variants of the
// IDs it covers, whichever case its regex is written in.
type matcher struct{ any, exclusive *regexp.Regexp }

func compile(nss []Namespace, field string) (matcher, error) {
	var all, excl []string
	for i, ns := range nss {
		if ns.Regex == "" {
			return matcher{}, fmt.Errorf("%s[%d].regex: missing", field, i)
		}
		// Anchored at the start like Synapse's re.match, the de-facto
		// reading of the spec's "regex". Compiled wrapped, as it is used:
		// some regexes compile alone but not inside a group (\Q without
		// \E, nesting at the limit).
		part := "^(?:" + ns.Regex + ")"
		if _, err := regexp.Compile(ns.Regex); err != nil {
			return matcher{}, fmt.Errorf("%s[%d].regex: invalid regex %q: %v", field, i, ns.Regex, err)
		}
		if _, err := regexp.Compile("(?i:" + part + ")"); err != nil {
			return matcher{}, fmt.Errorf("%s[%d].regex: invalid regex %q: %v", field, i, ns.Regex, err)
		}
		all = append(all, part)
		if ns.Exclusive {
			excl = append(excl, part)
		}
	}
	var m matcher
	var err error
	if len(all) > 0 {
		if m.any, err = regexp.Compile(strings.Join(all, "|")); err != nil {
			return matcher{}, fmt.Errorf("%s: the regexes together: %v", field, err)
		}
	}
	if len(excl) > 0 {
		if m.exclusive, err = regexp.Compile("(?i:" + strings.Join(excl, "|") + ")"); err != nil {
			return matcher{}, fmt.Errorf("%s: the exclusive regexes together: %v", field, err)
		}
	}
	return m, nil
}

func (m matcher) match(s string) bool       { return m.any != nil && m.any.MatchString(s) }
func (m matcher) exclusively(s string) bool { return m.exclusive != nil && m.exclusive.MatchString(s) }

// RateLimited reports whether the service's requests are rate limited
// (the default).
func (r *Registration) RateLimited() bool { return r.RateLimitedOpt == nil || *r.RateLimitedOpt }

// Ephemeral reports whether the service wants typing, receipts and
// presence, and the to-device messages of its users' devices.
func (r *Registration) Ephemeral() bool { return r.ReceiveEphemeral || r.PushEphemeral }

// DeviceData reports whether the service wants device lists and key
// counts (MSC3202).
func (r *Registration) DeviceData() bool { return r.MSC3202 }

// MatchesUser reports whether userID is in the user namespaces.
func (r *Registration) MatchesUser(userID string) bool { return r.users.match(userID) }

// MatchesAlias reports whether alias is in the alias namespaces.
func (r *Registration) MatchesAlias(alias string) bool { return r.aliases.match(alias) }

// MatchesRoom reports whether roomID is in the room namespaces.
func (r *Registration) MatchesRoom(roomID string) bool { return r.rooms.match(roomID) }

// ExclusiveUser reports whether userID is in an exclusive user namespace.
func (r *Registration) ExclusiveUser(userID string) bool { return r.users.exclusively(userID) }

// ExclusiveAlias reports whether alias is in an exclusive alias namespace.
func (r *Registration) ExclusiveAlias(alias string) bool { return r.aliases.exclusively(alias) }

// Sender is the service's own user.
func (r *Registration) Sender(serverName string) string {
	return "@" + r.SenderLocalpart + ":" + serverName
}

// Set is every loaded registration.
type Set struct {
	Regs    []*Registration
	byToken map[string]*Registration
	byID    map[string]*Registration
}

// ByASToken returns the service whose as_token this is, or nil.
func (s *Set) ByASToken(token string) *Registration {
	if s == nil {
		return nil
	}
	return s.byToken[token]
}

// ByID returns a service by ID, or nil.
func (s *Set) ByID(id string) *Registration {
	if s == nil {
		return nil
	}
	return s.byID[id]
}

// ExclusiveUserOwner returns a service holding userID exclusively, or nil.
func (s *Set) ExclusiveUserOwner(userID string) *Registration {
	if s == nil {
		return nil
	}
	for _, r := range s.Regs {
		if r.ExclusiveUser(userID) {
			return r
		}
	}
	return nil
}

// ExclusiveAliasOwner returns a service holding alias exclusively, or nil.
func (s *Set) ExclusiveAliasOwner(alias string) *Registration {
	if s == nil {
		return nil
	}
	for _, r := range s.Regs {
		if r.ExclusiveAlias(alias) {
			return r
		}
	}
	return nil
}

// MayActAs reports whether the service may act as (and create) userID: its
// own sender or a user in its user namespaces.
func (r *Registration) MayActAs(userID, serverName string) bool {
	return userID == r.Sender(serverName) || r.MatchesUser(userID)
}

// CheckUser decides whether a user may be created: by the service
// appServiceID ("" for anyone else) only inside its own namespaces, and by
// nobody inside another service's exclusive namespace. Errors are M_EXCLUSIVE.
func (s *Set) CheckUser(userID, appServiceID string) error {
	if s == nil {
		return nil
	}
	if appServiceID != "" {
		r := s.ByID(appServiceID)
		if r == nil || !r.MayActAs(userID, serverOf(userID)) {
			return mxhttp.Exclusive("User ID %s is not in the namespace of this application service", userID)
		}
	}
	for _, r := range s.Regs {
		if r.ID != appServiceID && r.ExclusiveUser(userID) {
			return mxhttp.Exclusive("User ID %s is reserved by an application service", userID)
		}
	}
	return nil
}

// CheckAlias decides whether a room alias may be created or deleted, as
// CheckUser does for users.
func (s *Set) CheckAlias(alias, appServiceID string) error {
	if s == nil {
		return nil
	}
	if appServiceID != "" {
		if r := s.ByID(appServiceID); r == nil || !r.MatchesAlias(alias) {
			return mxhttp.Exclusive("Room alias %s is not in the namespace of this application service", alias)
		}
	}
	for _, r := range s.Regs {
		if r.ID != appServiceID && r.ExclusiveAlias(alias) {
			return mxhttp.Exclusive("Room alias %s is reserved by an application service", alias)
		}
	}
	return nil
}

func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// Load reads every registration file. An error names the file and field.
// Registrations in the 2015 style, without id, get their file's base name.
func Load(paths []string, log *slog.Logger) (*Set, error) {
	set := &Set{byToken: map[string]*Registration{}, byID: map[string]*Registration{}}
	hsTokens := map[string]string{}
	for _, p := range paths {
		r, err := loadOne(p, log)
		if err != nil {
			return nil, err
		}
		if prev, dup := set.byID[r.ID]; dup {
			return nil, fmt.Errorf("%s: id: %q is already used by %s", p, r.ID, prev.File)
		}
		if prev, dup := set.byToken[r.ASToken]; dup {
			return nil, fmt.Errorf("%s: as_token: already used by %s", p, prev.File)
		}
		if prev, dup := hsTokens[r.HSToken]; dup {
			return nil, fmt.Errorf("%s: hs_token: already used by %s", p, prev)
		}
		set.byID[r.ID], set.byToken[r.ASToken], hsTokens[r.HSToken] = r, r, p
		set.Regs = append(set.Regs, r)
	}
	return set, nil
}

func loadOne(path string, log *slog.Logger) (*Registration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var r Registration
	if err := yaml.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: invalid YAML: %v", path, oneLine(err.Error()))
	}
	r.File = path
	if r.ID == "" {
		r.ID = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		if log != nil {
			log.Warn("application service registration has no id; using its file name", "file", path, "id", r.ID)
		}
	}
	if r.ASToken == "" {
		return nil, fmt.Errorf("%s: as_token: missing", path)
	}
	if r.HSToken == "" {
		return nil, fmt.Errorf("%s: hs_token: missing", path)
	}
	if r.ASToken == r.HSToken {
		return nil, fmt.Errorf("%s: hs_token: must differ from as_token", path)
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: url: %q is not an http(s) URL", path, r.URL)
		}
		r.URL = strings.TrimRight(r.URL, "/")
	}
	if r.SenderLocalpart == "" {
		r.SenderLocalpart = r.ID
		if log != nil {
			log.Warn("application service registration has no sender_localpart; using its id", "file", path, "sender_localpart", r.ID)
		}
	}
	if strings.ContainsAny(r.SenderLocalpart, ":@ ") {
		return nil, fmt.Errorf("%s: sender_localpart: invalid %q", path, r.SenderLocalpart)
	}
	for _, k := range []struct {
		nss   []Namespace
		field string
		dst   *matcher
	}{
		{r.Namespaces.Users, "namespaces.users", &r.users},
		{r.Namespaces.Aliases, "namespaces.aliases", &r.aliases},
		{r.Namespaces.Rooms, "namespaces.rooms", &r.rooms},
	} {
		m, err := compile(k.nss, k.field)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		*k.dst = m
	}
	return &r, nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ErrNoURL is returned when pushing to a service registered without a URL.
var ErrNoURL = errors.New("appservice: no url")
