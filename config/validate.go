package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// validate returns the first problem found, as a one-line error naming the
// key. It may add warnings to d for settings that are legal but suspicious.
func (c *Config) validate(d *decoder) error {
	if c.ServerName == "" {
		return d.errorf("server_name", "required")
	}
	if err := validateServerName(c.ServerName); err != nil {
		return d.errorf("server_name", "invalid server name %q: %v", c.ServerName, err)
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return d.errorf("public_baseurl", "invalid URL %q (want http:// or https:// and a host)", c.PublicBaseURL)
		}
	}
	if err := c.validateListeners(d); err != nil {
		return err
	}

	if c.SigningKeyPath == "" {
		return d.errorf("signing_key_path", "required")
	}
	if err := c.validateDatabase(d); err != nil {
		return err
	}

	if c.EnableRegistration && !c.EnableRegistrationWithoutVerification && !c.RegistrationRequiresToken {
		return d.errorf("enable_registration",
			"open registration without verification is dangerous; set enable_registration_without_verification: true to allow it (or require a token with registration_requires_token: true)")
	}
	for i, tok := range c.RegistrationTokens {
		if err := validateRegistrationToken(tok); err != nil {
			return d.errorf(fmt.Sprintf("registration_tokens[%d]", i), "%v", err)
		}
	}
	if err := c.validateServerNotices(d); err != nil {
		return err
	}
	if c.BcryptRounds < 4 || c.BcryptRounds > 31 {
		return d.errorf("bcrypt_rounds", "must be between 4 and 31, got %d", c.BcryptRounds)
	}
	if c.LoginViaExistingSession.TokenTimeout <= 0 {
		return d.errorf("login_via_existing_session.token_timeout", "must be more than 0")
	}
	if err := c.validateSupportAndTurn(d); err != nil {
		return err
	}

	if c.MediaStorePath == "" {
		return d.errorf("media_store_path", "must not be empty")
	}
	if c.MaxUploadSize <= 0 {
		return d.errorf("max_upload_size", "must be more than 0")
	}
	if c.MaxImagePixels <= 0 {
		return d.errorf("max_image_pixels", "must be more than 0")
	}
	for i, t := range c.ThumbnailSizes {
		path := fmt.Sprintf("thumbnail_sizes[%d]", i)
		if t.Width < 1 || t.Width > 10000 {
			return d.errorf(path+".width", "must be between 1 and 10000, got %d", t.Width)
		}
		if t.Height < 1 || t.Height > 10000 {
			return d.errorf(path+".height", "must be between 1 and 10000, got %d", t.Height)
		}
		if t.Method != "crop" && t.Method != "scale" {
			return d.errorf(path+".method", "unsupported %q (want crop or scale)", t.Method)
		}
	}
	if err := c.validateMediaLimits(d); err != nil {
		return err
	}
	if err := c.validateFederation(d); err != nil {
		return err
	}
	if err := c.validateURLPreview(d); err != nil {
		return err
	}
	for i, f := range c.AppServiceConfigFiles {
		if f == "" {
			return d.errorf(fmt.Sprintf("app_service_config_files[%d]", i), "empty file name")
		}
	}
	if n, err := strconv.Atoi(c.DefaultRoomVersion); err != nil || n < 1 || n > 12 || strconv.Itoa(n) != c.DefaultRoomVersion {
		return d.errorf("default_room_version", "unsupported %q (want \"1\" to \"12\")", c.DefaultRoomVersion)
	}
	for i, s := range c.FederationDomainWhitelist {
		if err := validateServerName(s); err != nil {
			return d.errorf(fmt.Sprintf("federation_domain_whitelist[%d]", i), "invalid server name %q: %v", s, err)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "warning", "error":
	default:
		return d.errorf("log_level", "unsupported %q (want debug, info, warn, warning or error)", c.LogLevel)
	}

	limits := []struct {
		path string
		rl   RateLimit
	}{
		{"rc_message", c.RcMessage},
		{"rc_registration", c.RcRegistration},
		{"rc_login.address", c.RcLogin.Address},
		{"rc_login.account", c.RcLogin.Account},
		{"rc_login.failed_attempts", c.RcLogin.FailedAttempts},
		{"rc_joins.local", c.RcJoins.Local},
		{"rc_joins.remote", c.RcJoins.Remote},
		{"rc_invites.per_room", c.RcInvites.PerRoom},
		{"rc_invites.per_user", c.RcInvites.PerUser},
		{"rc_media_create", c.RcMediaCreate},
	}
	for _, l := range limits {
		// Written this way round so that NaN fails too.
		if !(l.rl.PerSecond >= 0) || math.IsInf(l.rl.PerSecond, 0) {
			return d.errorf(l.path+".per_second", "must be a non-negative number, got %v", l.rl.PerSecond)
		}
		if l.rl.BurstCount < 0 {
			return d.errorf(l.path+".burst_count", "must not be negative, got %d", l.rl.BurstCount)
		}
	}
	return nil
}

func (c *Config) validateListeners(d *decoder) error {
	haveHTTP := false
	for i, l := range c.Listeners {
		path := fmt.Sprintf("listeners[%d]", i)
		if l.Port == 0 {
			return d.errorf(path+".port", "required")
		}
		if l.Port < 1 || l.Port > 65535 {
			return d.errorf(path+".port", "must be between 1 and 65535, got %d", l.Port)
		}
		for j, a := range l.BindAddresses {
			if _, err := netip.ParseAddr(a); err != nil {
				return d.errorf(fmt.Sprintf("%s.bind_addresses[%d]", path, j), "invalid IP address %q", a)
			}
		}
		switch l.Type {
		case "":
			return d.errorf(path+".type", "required (http or metrics)")
		case "http":
			haveHTTP = true
			if len(l.Resources) == 0 {
				return d.errorf(path+".resources", "an http listener needs at least one resource (such as names: [client, federation])")
			}
		case "metrics":
			if !c.EnableMetrics {
				// Synapse only warns about this too.
				d.warnf(path, "metrics listener configured, but enable_metrics is false")
			}
		default:
			return d.errorf(path+".type", "unsupported %q (want http or metrics)", l.Type)
		}
		for j, r := range l.Resources {
			for k, name := range r.Names {
				if !knownResource(name) {
					return d.errorf(fmt.Sprintf("%s.resources[%d].names[%d]", path, j, k),
						"unknown resource %q (want client, federation, media, keys, metrics, health, openid, static, consent or replication)", name)
				}
			}
		}
		if l.TLS {
			if c.TLSCertificatePath == "" {
				return d.errorf("tls_certificate_path", "required because %s has tls: true", path)
			}
			if c.TLSPrivateKeyPath == "" {
				return d.errorf("tls_private_key_path", "required because %s has tls: true", path)
			}
		}
	}
	if !haveHTTP {
		return d.errorf("listeners", "at least one listener with type: http is required")
	}
	return nil
}

// knownResource accepts Synapse's resource names, so that a listener block
// copied from a Synapse config is not rejected outright.
func knownResource(name string) bool {
	switch name {
	case "client", "federation", "media", "keys", "metrics", "health", "openid", "static", "consent", "replication":
		return true
	}
	return false
}

func (c *Config) validateDatabase(d *decoder) error {
	db := c.Database
	switch db.Name {
	case "sqlite3":
	case "psycopg2", "postgres":
		if db.Args.Database == "" {
			return d.errorf("database.args.database", "required for %s", db.Name)
		}
	default:
		return d.errorf("database.name", "unsupported %q (want sqlite3, psycopg2 or postgres)", db.Name)
	}
	if db.Args.Port < 0 || db.Args.Port > 65535 {
		return d.errorf("database.args.port", "must be between 1 and 65535, got %d", db.Args.Port)
	}
	if db.Args.CPMin < 0 {
		return d.errorf("database.args.cp_min", "must not be negative, got %d", db.Args.CPMin)
	}
	if db.Args.CPMax < 0 {
		return d.errorf("database.args.cp_max", "must not be negative, got %d", db.Args.CPMax)
	}
	if db.Args.CPMax > 0 && db.Args.CPMin > db.Args.CPMax {
		return d.errorf("database.args.cp_min", "must not exceed cp_max (%d > %d)", db.Args.CPMin, db.Args.CPMax)
	}
	return nil
}

// validateServerName checks the grammar of a Matrix server name: a DNS
// name, IPv4 address or bracketed IPv6 address, optionally followed by
// ":port".
func validateServerName(s string) error {
	host, port, hasPort := s, "", false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return errors.New("missing ] after IPv6 address")
		}
		addr, err := netip.ParseAddr(s[1:end])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return fmt.Errorf("invalid IPv6 address %q", s[1:end])
		}
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return fmt.Errorf("unexpected %q after IPv6 address", rest)
			}
			port, hasPort = rest[1:], true
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port, hasPort = s[:i], s[i+1:], true
		}
		if err := validateHostname(host); err != nil {
			return err
		}
	}
	if hasPort {
		n, ok := parseUint(port)
		if !ok || len(port) > 5 || n < 1 || n > 65535 {
			return fmt.Errorf("invalid port %q", port)
		}
	}
	return nil
}

// validateHostname accepts dot-separated labels of letters, digits and
// hyphens, which covers DNS names and IPv4 addresses alike.
func validateHostname(h string) error {
	if h == "" {
		return errors.New("empty host name")
	}
	if len(h) > 255 {
		return errors.New("host name longer than 255 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return errors.New("empty label in host name")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("invalid character %q in host name", r)
			}
		}
	}
	return nil
}

// validateRegistrationToken applies the spec's rule for registration tokens
// (m.login.registration_token): 1 to 64 characters from [A-Za-z0-9._~-].
func validateRegistrationToken(t string) error {
	if t == "" || len(t) > 64 {
		return fmt.Errorf("token must be 1 to 64 characters, got %d", len(t))
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._~-", r)) {
			return fmt.Errorf("invalid character %q in token (want A-Z, a-z, 0-9, '.', '_', '~' or '-')", r)
		}
	}
	return nil
}

// validateServerNotices checks the server_notices block and fills in
// Synapse's default room name.
func (c *Config) validateServerNotices(d *decoder) error {
	n := c.ServerNotices
	if n == nil {
		return nil
	}
	if n.SystemMXIDLocalpart == "" {
		return d.errorf("server_notices.system_mxid_localpart", "required")
	}
	for _, r := range n.SystemMXIDLocalpart {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-/+", r)) {
			return d.errorf("server_notices.system_mxid_localpart", "invalid character %q (want a-z, 0-9, '.', '_', '=', '-', '/' or '+')", r)
		}
	}
	for _, f := range []struct{ key, url string }{{"system_mxid_avatar_url", n.SystemMXIDAvatarURL}, {"room_avatar_url", n.RoomAvatarURL}} {
		if f.url != "" && !strings.HasPrefix(f.url, "mxc://") {
			return d.errorf("server_notices."+f.key, "must be an mxc:// URL, got %q", f.url)
		}
	}
	if n.RoomName == "" {
		n.RoomName = "Server Notices"
	}
	return nil
}

func (c *Config) validateMediaLimits(d *decoder) error {
	for i, l := range c.MediaUploadLimits {
		path := fmt.Sprintf("media_upload_limits[%d]", i)
		if l.TimePeriod <= 0 {
			return d.errorf(path+".time_period", "required, and more than 0")
		}
		if l.MaxSize <= 0 {
			return d.errorf(path+".max_size", "required, and more than 0")
		}
	}
	return nil
}

// URLPreviewComponents are the URL components url_preview_url_blacklist
// entries may match, as in Synapse (Python's urlparse attributes).
var URLPreviewComponents = []string{"scheme", "netloc", "hostname", "port", "path", "params", "query", "fragment", "username", "password"}

// ParseIPRange parses a CIDR range or a single address (a /32 or /128).
func ParseIPRange(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("write IPv4-mapped range %q as IPv4", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *Config) validateFederation(d *decoder) error {
	for name, list := range map[string][]string{"ip_range_blacklist": c.IPRangeBlacklist, "federation_ip_range_blacklist": c.FederationIPRangeBlacklist, "ip_range_whitelist": c.IPRangeWhitelist} {
		for i, r := range list {
			if _, err := ParseIPRange(r); err != nil {
				return d.errorf(fmt.Sprintf("%s[%d]", name, i), "invalid IP range %q: %v", r, err)
			}
		}
	}
	for i, t := range c.TrustedKeyServers {
		if t.ServerName == "" {
			return d.errorf(fmt.Sprintf("trusted_key_servers[%d].server_name", i), "required")
		}
	}
	f := c.Federation
	if f.ClientTimeout < 0 || f.DestinationMinRetryInterval < 0 || f.DestinationMaxRetryInterval < 0 {
		return d.errorf("federation", "durations must not be negative")
	}
	if f.DestinationRetryMultiplier != 0 && f.DestinationRetryMultiplier != 2 {
		return d.errorf("federation.destination_retry_multiplier", "only 2 is supported, got %v", f.DestinationRetryMultiplier)
	}
	return nil
}

func (c *Config) validateURLPreview(d *decoder) error {
	if c.URLPreviewEnabled && c.URLPreviewIPRangeBlacklist == nil {
		return d.errorf("url_preview_ip_range_blacklist",
			"required when url_preview_enabled is true: for security, list the IP ranges previews must never fetch from (see the sample config)")
	}
	for name, list := range map[string][]string{"url_preview_ip_range_blacklist": c.URLPreviewIPRangeBlacklist, "url_preview_ip_range_whitelist": c.URLPreviewIPRangeWhitelist} {
		for i, r := range list {
			if _, err := ParseIPRange(r); err != nil {
				return d.errorf(fmt.Sprintf("%s[%d]", name, i), "invalid IP range %q: %v", r, err)
			}
		}
	}
	for i, entry := range c.URLPreviewURLBlacklist {
		path := fmt.Sprintf("url_preview_url_blacklist[%d]", i)
		if len(entry) == 0 {
			return d.errorf(path, "empty entry (it would block every URL)")
		}
		for k, v := range entry {
			known := false
			for _, comp := range URLPreviewComponents {
				known = known || k == comp
			}
			if !known {
				return d.errorf(path+"."+k, "unknown URL component (want one of %s)", strings.Join(URLPreviewComponents, ", "))
			}
			s, ok := v.(string)
			if !ok {
				return d.errorf(path+"."+k, "want a string (a glob, or a regular expression starting with ^)")
			}
			if strings.HasPrefix(s, "^") {
				if _, err := regexp.Compile(s); err != nil {
					return d.errorf(path+"."+k, "invalid regular expression: %v", err)
				}
			}
		}
	}
	if c.MaxSpiderSize <= 0 {
		return d.errorf("max_spider_size", "must be more than 0")
	}
	return nil
}
