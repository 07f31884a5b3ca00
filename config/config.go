// Package config loads homeserver.yaml. Key names follow Synapse's wherever
// Synapse has the same setting, so that admins' habits and tools carry over;
// unknown keys are reported as warnings rather than silently ignored.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the parsed homeserver.yaml. After Load or Parse, relative paths
// are already resolved against the directory of the configuration file.
type Config struct {
	// Path is the file the configuration was loaded from.
	Path string `yaml:"-"`

	ServerName    string `yaml:"server_name"`
	PublicBaseURL string `yaml:"public_baseurl"` // empty if unset; otherwise ends in "/"
	PidFile       string `yaml:"pid_file"`

	Listeners          []Listener `yaml:"listeners"`
	TLSCertificatePath string     `yaml:"tls_certificate_path"`
	TLSPrivateKeyPath  string     `yaml:"tls_private_key_path"`

	Database       Database `yaml:"database"`
	SigningKeyPath string   `yaml:"signing_key_path"`

	RegistrationSharedSecret              string `yaml:"registration_shared_secret"`
	EnableRegistration                    bool   `yaml:"enable_registration"`
	EnableRegistrationWithoutVerification bool   `yaml:"enable_registration_without_verification"`
	RegistrationRequiresToken             bool   `yaml:"registration_requires_token"`
	// RegistrationTokens are static tokens accepted by
	// m.login.registration_token, for ever. This is our extension, beside
	// the tokens of the database that the admin API manages (Synapse's
	// only kind).
	RegistrationTokens []string `yaml:"registration_tokens"`
	AllowGuestAccess   bool     `yaml:"allow_guest_access"`
	BcryptRounds       int      `yaml:"bcrypt_rounds"`

	// ServerNotices enables the server notices room and
	// /_synapse/admin/v1/send_server_notice (Synapse's block; nil: off).
	ServerNotices *ServerNotices `yaml:"server_notices"`

	MediaStorePath string   `yaml:"media_store_path"`
	MaxUploadSize  ByteSize `yaml:"max_upload_size"`
	// MaxImagePixels is the largest image (in pixels) that is thumbnailed;
	// larger ones are stored but not decoded. A ByteSize so that Synapse's
	// "32M" reads the same.
	MaxImagePixels ByteSize        `yaml:"max_image_pixels"`
	ThumbnailSizes []ThumbnailSize `yaml:"thumbnail_sizes"`
	// DynamicThumbnails makes thumbnails of the size each request asks
	// for (Synapse's dynamic_thumbnails, off by default: a request is
	// served the nearest of thumbnail_sizes).
	DynamicThumbnails bool `yaml:"dynamic_thumbnails"`
	// EnableIdenticons serves GET /_matrix/media/v1/identicon/{name} and
	// gives each newly registered user an identicon avatar, as Synapse did
	// in 2015 (off by default; when off the path answers 404).
	EnableIdenticons bool `yaml:"enable_identicons"`
	// EnableAuthenticatedMedia (Synapse's key, default true) marks media
	// uploaded or fetched while it is on as authenticated: the legacy
	// unauthenticated /_matrix/media/*/download and /thumbnail endpoints
	// answer 404 for it.
	EnableAuthenticatedMedia bool `yaml:"enable_authenticated_media"`
	// MediaUploadLimits are per-user upload quotas (Synapse's
	// media_upload_limits): at most MaxSize bytes uploaded in any
	// TimePeriod. Empty: no quota.
	MediaUploadLimits []MediaUploadLimit `yaml:"media_upload_limits"`

	// URL previews, as in Synapse. When enabled, url_preview_ip_range_blacklist
	// is required (CIDR ranges, or single addresses); a whitelisted address is
	// allowed even if blacklisted. URLPreviewURLBlacklist entries map URL
	// components (scheme, netloc, hostname, port, path, query, fragment,
	// username, password, params) to globs, or to regular expressions when
	// they start with "^"; a URL matching every component of an entry is
	// refused.
	URLPreviewEnabled          bool             `yaml:"url_preview_enabled"`
	URLPreviewIPRangeBlacklist []string         `yaml:"url_preview_ip_range_blacklist"`
	URLPreviewIPRangeWhitelist []string         `yaml:"url_preview_ip_range_whitelist"`
	URLPreviewURLBlacklist     []map[string]any `yaml:"url_preview_url_blacklist"`
	MaxSpiderSize              ByteSize         `yaml:"max_spider_size"`
	URLPreviewAcceptLanguage   []string         `yaml:"url_preview_accept_language"`

	// UserDirectory is Synapse's user_directory section.
	UserDirectory UserDirectory `yaml:"user_directory"`

	AppServiceConfigFiles []string `yaml:"app_service_config_files"`
	DefaultRoomVersion    string   `yaml:"default_room_version"`
	// FederationDomainWhitelist is nil when unset (federate with everyone);
	// an empty, non-nil list disables federation, as in Synapse.
	FederationDomainWhitelist []string `yaml:"federation_domain_whitelist"`
	// FederationVerifyCertificates checks other servers' TLS certificates
	// (default true; false is for test set-ups only).
	FederationVerifyCertificates *bool `yaml:"federation_verify_certificates"`
	// FederationCustomCAList are PEM files of certificate authorities
	// trusted for federation besides the system's.
	FederationCustomCAList []string `yaml:"federation_custom_ca_list"`
	// IPRangeBlacklist are the addresses outbound federation (and other
	// requests a user can aim) must not reach; nil means the private and
	// reserved ranges. federation_ip_range_blacklist is Synapse's older
	// name for it. IPRangeWhitelist overrides it.
	IPRangeBlacklist           []string `yaml:"ip_range_blacklist"`
	FederationIPRangeBlacklist []string `yaml:"federation_ip_range_blacklist"`
	IPRangeWhitelist           []string `yaml:"ip_range_whitelist"`
	// TrustedKeyServers are notaries asked for other servers' keys when
	// those cannot be fetched directly (Synapse's key; empty by default
	// here: keys are fetched from their servers).
	TrustedKeyServers []TrustedKeyServer `yaml:"trusted_key_servers"`
	// OldSigningKeys are this server's former keys, still published so
	// that what they signed stays verifiable.
	OldSigningKeys map[string]OldSigningKey `yaml:"old_signing_keys"`
	// KeyRefreshInterval is how long other servers may cache our key
	// (default 1d).
	KeyRefreshInterval Duration `yaml:"key_refresh_interval"`
	// Federation holds Synapse's federation section: request timeouts and
	// the backoff of unreachable destinations.
	Federation FederationSettings `yaml:"federation"`
	// AllowPublicRoomsOverFederation lets other servers list the room
	// directory (default false, as in Synapse).
	AllowPublicRoomsOverFederation bool `yaml:"allow_public_rooms_over_federation"`
	// FederationHostOverrides maps server names to host:port, bypassing
	// discovery (.well-known and SRV): for tests and closed networks.
	FederationHostOverrides map[string]string `yaml:"federation_host_overrides"`

	EnableMetrics bool `yaml:"enable_metrics"`

	// RunBackgroundTasksOn names the processes (their --instance-name)
	// that may run background readers: application service queues, the
	// push evaluator and pushers, presence's idle sweep. Empty: every
	// process, each reader in one at a time. One name, as in Synapse, or a
	// list.
	RunBackgroundTasksOn NameList `yaml:"run_background_tasks_on"`
	// InstanceName names this process among a deployment's (the
	// --instance-name flag; not a key of the file, which every process
	// shares). Empty: "main".
	InstanceName string `yaml:"-"`
	// ReaderLease is how long a background reader's lease lasts unrenewed:
	// how soon a surviving process takes over a dead one's readers
	// (default 10s).
	ReaderLease Duration `yaml:"reader_lease"`
	// ReportStats is accepted for compatibility and ignored: we never phone home.
	ReportStats bool `yaml:"report_stats"`
	// LogLevel is one of debug, info, warn, warning or error, lower-cased.
	LogLevel string `yaml:"log_level"`

	ServeServerWellknown        bool           `yaml:"serve_server_wellknown"`
	ExtraWellKnownClientContent map[string]any `yaml:"extra_well_known_client_content"`
	// AdminContact is Synapse's admin_contact (an email address, with or
	// without "mailto:"): served as an m.role.admin contact in
	// /.well-known/matrix/support. SupportContacts and SupportPage are our
	// keys for the rest of that document; with none of the three set it
	// answers 404.
	AdminContact    string           `yaml:"admin_contact"`
	SupportContacts []SupportContact `yaml:"support_contacts"`
	SupportPage     string           `yaml:"support_page"`

	// TURN servers handed to VoIP clients, with Synapse's keys: time-limited
	// credentials derived from TurnSharedSecret (coturn's
	// use-auth-secret), else the fixed TurnUsername and TurnPassword.
	TurnURIs         []string `yaml:"turn_uris"`
	TurnSharedSecret string   `yaml:"turn_shared_secret"`
	TurnUsername     string   `yaml:"turn_username"`
	TurnPassword     string   `yaml:"turn_password"`
	// TurnUserLifetime is how long shared-secret credentials last (default 1h).
	TurnUserLifetime Duration `yaml:"turn_user_lifetime"`
	// TurnAllowGuests lets guests have TURN credentials (default true).
	TurnAllowGuests bool `yaml:"turn_allow_guests"`

	RefreshableAccessTokenLifetime Duration `yaml:"refreshable_access_token_lifetime"`
	// RefreshTokenLifetime is how long a refresh token stays usable unless
	// exchanged first, so that idle sessions end; 0 (unset) is for ever,
	// as in Synapse.
	RefreshTokenLifetime Duration `yaml:"refresh_token_lifetime"`
	// LoginViaExistingSession lets a logged-in client issue login tokens
	// for a new one (/login/get_token), as Synapse's key of that name.
	LoginViaExistingSession LoginViaExistingSession `yaml:"login_via_existing_session"`

	RcMessage      RateLimit `yaml:"rc_message"`
	RcRegistration RateLimit `yaml:"rc_registration"`
	RcLogin        RcLogin   `yaml:"rc_login"`
	RcJoins        RcJoins   `yaml:"rc_joins"`
	RcInvites      RcInvites `yaml:"rc_invites"`
	RcMediaCreate  RateLimit `yaml:"rc_media_create"`
	// RcMediaThumbnail limits the thumbnails generated on request, per
	// user (or client address on the unauthenticated endpoints, or origin
	// server over federation). Our key: Synapse has none.
	RcMediaThumbnail RateLimit `yaml:"rc_media_thumbnail"`
	// RcFederation limits each other server's requests.
	RcFederation RcFederation `yaml:"rc_federation"`
	// LongPolls bounds the long-polls (/sync, /events) waiting at once.
	// Our keys: Synapse has none.
	LongPolls LongPolls `yaml:"long_polls"`
}

// LongPolls bounds waiting long-polls: per user (a further one answers the
// user's oldest at once) and on the process (a further one gets 429).
type LongPolls struct {
	PerUser int `yaml:"per_user"`
	// Max is the process's limit; 0 is none.
	Max int `yaml:"max"`
}

// RcFederation is Synapse's rc_federation: per origin, sleep_limit
// requests per window_size go at once, later ones wait sleep_delay each,
// more than reject_limit are refused, at most concurrent at a time. The
// times are milliseconds, as in Synapse (or durations with a unit).
type RcFederation struct {
	WindowSize  Duration `yaml:"window_size"`
	SleepLimit  int      `yaml:"sleep_limit"`
	SleepDelay  Duration `yaml:"sleep_delay"`
	RejectLimit int      `yaml:"reject_limit"`
	Concurrent  int      `yaml:"concurrent"`
}

// SupportContact is one contact of /.well-known/matrix/support: a role
// (m.role.admin, m.role.security or a namespaced one) and a Matrix ID or
// an email address, or both.
type SupportContact struct {
	MatrixID     string `yaml:"matrix_id"`
	EmailAddress string `yaml:"email_address"`
	Role         string `yaml:"role"`
}

// TrustedKeyServer is a notary for other servers' keys.
type TrustedKeyServer struct {
	ServerName string            `yaml:"server_name"`
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// OldSigningKey is a former signing key of this server.
type OldSigningKey struct {
	Key       string `yaml:"key"`
	ExpiredTS int64  `yaml:"expired_ts"`
}

// FederationSettings is Synapse's federation section.
type FederationSettings struct {
	ClientTimeout               Duration `yaml:"client_timeout"`
	DestinationMinRetryInterval Duration `yaml:"destination_min_retry_interval"`
	DestinationRetryMultiplier  float64  `yaml:"destination_retry_multiplier"`
	DestinationMaxRetryInterval Duration `yaml:"destination_max_retry_interval"`
}

// Listener is one port the server listens on.
type Listener struct {
	Port int `yaml:"port"`
	// BindAddresses defaults to ["127.0.0.1"], so that nothing is exposed
	// beyond the machine unless asked for.
	BindAddresses []string   `yaml:"bind_addresses"`
	Type          string     `yaml:"type"` // "http" or "metrics"
	TLS           bool       `yaml:"tls"`
	XForwarded    bool       `yaml:"x_forwarded"`
	Resources     []Resource `yaml:"resources"`
}

// Resource is a group of APIs served by an http listener.
// Serves reports whether the listener serves the named resource (client,
// federation, media, metrics).
func (l Listener) Serves(name string) bool {
	for _, r := range l.Resources {
		for _, n := range r.Names {
			if n == name {
				return true
			}
		}
	}
	return false
}

type Resource struct {
	// Names are Synapse's resource names: client, federation, media, keys,
	// metrics, health, openid, static, consent or replication.
	Names    []string `yaml:"names"`
	Compress bool     `yaml:"compress"`
}

// ThumbnailSize is one size generated for every uploaded image.
type ThumbnailSize struct {
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	Method string `yaml:"method"` // crop or scale
}

// MediaUploadLimit is one per-user upload quota.
type MediaUploadLimit struct {
	TimePeriod Duration `yaml:"time_period"`
	MaxSize    ByteSize `yaml:"max_size"`
}

// Database selects and configures the database.
type Database struct {
	Name string       `yaml:"name"` // sqlite3, psycopg2 or postgres
	Args DatabaseArgs `yaml:"args"`
}

// DatabaseArgs holds the connection parameters. For sqlite3 only Database
// (the file name, or ":memory:") is used.
type DatabaseArgs struct {
	Database string `yaml:"database"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	SSLMode  string `yaml:"sslmode"`
	CPMin    int    `yaml:"cp_min"`
	CPMax    int    `yaml:"cp_max"`
}

// ServerNotices is Synapse's server_notices block: the local user that
// sends the notices (created on first use) and the room they arrive in.
type ServerNotices struct {
	SystemMXIDLocalpart   string `yaml:"system_mxid_localpart"`
	SystemMXIDDisplayName string `yaml:"system_mxid_display_name"`
	SystemMXIDAvatarURL   string `yaml:"system_mxid_avatar_url"`
	// RoomName defaults to "Server Notices", as in Synapse.
	RoomName      string `yaml:"room_name"`
	RoomAvatarURL string `yaml:"room_avatar_url"`
	RoomTopic     string `yaml:"room_topic"`
	// AutoJoin joins the user to the room instead of inviting them.
	AutoJoin bool `yaml:"auto_join"`
}

// UserDirectory configures /user_directory/search (Synapse's keys and
// defaults).
type UserDirectory struct {
	// Enabled false answers every search with no results.
	Enabled bool `yaml:"enabled"`
	// SearchAllUsers lists every local user, not only those who share a
	// room with the searcher or are in a public room.
	SearchAllUsers bool `yaml:"search_all_users"`
	// PreferLocalUsers ranks local users before remote ones.
	PreferLocalUsers bool `yaml:"prefer_local_users"`
}

// RateLimit is a token bucket: BurstCount actions at once, refilling at
// PerSecond actions per second.
type RateLimit struct {
	PerSecond  float64 `yaml:"per_second"`
	BurstCount int     `yaml:"burst_count"`
}

// LoginViaExistingSession is Synapse's login_via_existing_session: whether
// /login/get_token issues m.login.token tokens, whether it asks for the
// user's password first, and how long a token stays valid.
type LoginViaExistingSession struct {
	Enabled       bool     `yaml:"enabled"`
	RequireUIAuth bool     `yaml:"require_ui_auth"`
	TokenTimeout  Duration `yaml:"token_timeout"`
}

// RcLogin limits logins per client address, per account, and failed
// attempts per account.
type RcLogin struct {
	Address        RateLimit `yaml:"address"`
	Account        RateLimit `yaml:"account"`
	FailedAttempts RateLimit `yaml:"failed_attempts"`
}

// RcJoins limits joins to rooms this server is in (Local) and joins that
// need another server (Remote).
type RcJoins struct {
	Local  RateLimit `yaml:"local"`
	Remote RateLimit `yaml:"remote"`
}

// RcInvites limits invites sent into one room (PerRoom) and invites
// received by one user (PerUser).
type RcInvites struct {
	PerRoom RateLimit `yaml:"per_room"`
	PerUser RateLimit `yaml:"per_user"`
}

// Defaults returns a Config holding the default of every key that has one.
// It is not valid on its own: server_name, listeners and signing_key_path
// have no defaults.
func Defaults() *Config {
	return &Config{
		Database:                       Database{Name: "sqlite3"},
		BcryptRounds:                   12,
		MediaStorePath:                 "media_store",
		MaxUploadSize:                  50 << 20,
		MaxImagePixels:                 32 << 20,
		EnableAuthenticatedMedia:       true,
		MaxSpiderSize:                  10 << 20,
		DefaultRoomVersion:             "10",
		UserDirectory:                  UserDirectory{Enabled: true},
		LogLevel:                       "info",
		RefreshableAccessTokenLifetime: Duration(5 * time.Minute),
		LoginViaExistingSession:        LoginViaExistingSession{RequireUIAuth: true, TokenTimeout: Duration(5 * time.Minute)},
		KeyRefreshInterval:             Duration(24 * time.Hour),
		TurnUserLifetime:               Duration(time.Hour),
		TurnAllowGuests:                true,
		RcFederation: RcFederation{WindowSize: Duration(time.Second), SleepLimit: 10, SleepDelay: Duration(500 * time.Millisecond),
			RejectLimit: 50, Concurrent: 3},
		Federation: FederationSettings{
			ClientTimeout:               Duration(60 * time.Second),
			DestinationMinRetryInterval: Duration(10 * time.Minute),
			DestinationRetryMultiplier:  2,
			DestinationMaxRetryInterval: Duration(7 * 24 * time.Hour),
		},
		// Synapse's defaults.
		RcMessage:      RateLimit{PerSecond: 0.2, BurstCount: 10},
		RcRegistration: RateLimit{PerSecond: 0.17, BurstCount: 3},
		RcLogin: RcLogin{
			Address:        RateLimit{PerSecond: 0.003, BurstCount: 5},
			Account:        RateLimit{PerSecond: 0.003, BurstCount: 5},
			FailedAttempts: RateLimit{PerSecond: 0.17, BurstCount: 3},
		},
		RcJoins: RcJoins{
			Local:  RateLimit{PerSecond: 0.1, BurstCount: 10},
			Remote: RateLimit{PerSecond: 0.01, BurstCount: 10},
		},
		RcInvites: RcInvites{
			PerRoom: RateLimit{PerSecond: 0.3, BurstCount: 10},
			PerUser: RateLimit{PerSecond: 0.003, BurstCount: 5},
		},
		RcMediaCreate: RateLimit{PerSecond: 10, BurstCount: 50},
		// An idle long-poll holds about 40 KiB of the server's memory
		// (BENCHMARKS.md, "Idle long-polls"): 10,000 of them, some
		// 400 MiB.
		LongPolls: LongPolls{PerUser: 10, Max: 10000},
		// Each generated thumbnail decodes its original: up to a second of
		// CPU and hundreds of megabytes for the largest images.
		RcMediaThumbnail: RateLimit{PerSecond: 0.5, BurstCount: 20},
		// Synapse's default thumbnail_sizes.
		ThumbnailSizes: []ThumbnailSize{
			{Width: 32, Height: 32, Method: "crop"},
			{Width: 96, Height: 96, Method: "crop"},
			{Width: 320, Height: 240, Method: "scale"},
			{Width: 640, Height: 480, Method: "scale"},
			{Width: 800, Height: 600, Method: "scale"},
		},
	}
}

// Load reads the configuration file at path; see Parse.
func Load(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse parses a configuration file's contents: it applies defaults,
// validates, and resolves relative paths against the directory of path.
// path is also used to name the file in messages.
//
// The warnings are about keys that are not understood (typos, or Synapse
// settings this server does not have) and about settings that are valid but
// probably not what was meant. Errors are always a single line naming the
// file and the key.
func Parse(data []byte, path string) (*Config, []string, error) {
	name := path
	if name == "" {
		name = "config"
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}

	c := Defaults()
	d := &decoder{file: name}
	// An empty file has no content node; it gets the defaults, and validation
	// then names the first missing key.
	if len(root.Content) > 0 {
		doc := resolveAlias(root.Content[0])
		if !isNull(doc) && doc.Kind != yaml.MappingNode {
			return nil, nil, fmt.Errorf("%s: want a mapping of keys at the top level, got %s", name, describe(doc))
		}
		if err := d.decode(doc, reflect.ValueOf(c).Elem(), ""); err != nil {
			return nil, d.warnings, err
		}
	}
	c.Path = path

	c.applyImplicitDefaults()
	if err := c.validate(d); err != nil {
		return nil, d.warnings, err
	}
	c.resolvePaths(filepath.Dir(path))
	return c, d.warnings, nil
}

// applyImplicitDefaults fills in defaults that depend on other settings or
// live inside lists, where they cannot be preset before decoding.
func (c *Config) applyImplicitDefaults() {
	for i := range c.Listeners {
		if len(c.Listeners[i].BindAddresses) == 0 {
			c.Listeners[i].BindAddresses = []string{"127.0.0.1"}
		}
	}
	if c.DatabaseIsSQLite() && c.Database.Args.Database == "" {
		c.Database.Args.Database = "homeserver.db"
	}
	c.LogLevel = strings.ToLower(strings.TrimSpace(c.LogLevel))
	if c.PublicBaseURL != "" && !strings.HasSuffix(c.PublicBaseURL, "/") {
		// Synapse does the same, so URLs can be built by appending paths.
		c.PublicBaseURL += "/"
	}
}

// resolvePaths makes relative paths relative to dir, so the server behaves
// the same whatever directory it is started from.
func (c *Config) resolvePaths(dir string) {
	resolve := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	resolve(&c.SigningKeyPath)
	resolve(&c.MediaStorePath)
	resolve(&c.TLSCertificatePath)
	resolve(&c.TLSPrivateKeyPath)
	resolve(&c.PidFile)
	for i := range c.FederationCustomCAList {
		resolve(&c.FederationCustomCAList[i])
	}
	for i := range c.AppServiceConfigFiles {
		resolve(&c.AppServiceConfigFiles[i])
	}
	// ":memory:" and "file:" URIs are not file names.
	if db := c.Database.Args.Database; c.DatabaseIsSQLite() && db != ":memory:" && !strings.HasPrefix(db, "file:") {
		resolve(&c.Database.Args.Database)
	}
}

// SlogLevel returns log_level as a slog.Level.
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// DatabaseIsSQLite reports whether the database is SQLite rather than
// PostgreSQL.
func (c *Config) DatabaseIsSQLite() bool {
	return c.Database.Name == "sqlite3"
}
