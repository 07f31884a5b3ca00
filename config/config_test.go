package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration; tests append keys to it.
const minimal = `
server_name: example.org
signing_key_path: example.org.signing.key
listeners:
  - port: 8008
    type: http
    resources:
      - names: [client, federation]
`

const testFile = "/etc/matrix/homeserver.yaml"

func mustParse(t *testing.T, yaml string) (*Config, []string) {
	t.Helper()
	c, warnings, err := Parse([]byte(yaml), testFile)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c, warnings
}

func TestSampleConfigLoadsClean(t *testing.T) {
	c, warnings, err := Load("../homeserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if c.ServerName != "localhost" || !c.EnableRegistration || !c.DatabaseIsSQLite() {
		t.Errorf("unexpected sample values: %+v", c)
	}
	if want := filepath.Join("..", "localhost.signing.key"); c.SigningKeyPath != want {
		t.Errorf("SigningKeyPath = %q, want %q", c.SigningKeyPath, want)
	}
	if got := c.Listeners[0].Resources[0].Names; !reflect.DeepEqual(got, []string{"client", "federation", "media"}) {
		t.Errorf("resources = %q", got)
	}
	if c.AppServiceConfigFiles == nil || len(c.AppServiceConfigFiles) != 0 {
		t.Errorf("AppServiceConfigFiles = %#v, want empty", c.AppServiceConfigFiles)
	}
	// The sample spells out the defaults; they must agree with Defaults().
	d := Defaults()
	if c.RcMessage != d.RcMessage || c.RcRegistration != d.RcRegistration || c.RcLogin != d.RcLogin ||
		c.RcJoins != d.RcJoins || c.RcInvites != d.RcInvites || c.RcMediaCreate != d.RcMediaCreate ||
		c.MaxUploadSize != d.MaxUploadSize || c.RefreshableAccessTokenLifetime != d.RefreshableAccessTokenLifetime ||
		c.BcryptRounds != d.BcryptRounds || c.DefaultRoomVersion != d.DefaultRoomVersion ||
		c.MaxImagePixels != d.MaxImagePixels || !reflect.DeepEqual(c.ThumbnailSizes, d.ThumbnailSizes) ||
		c.MaxSpiderSize != d.MaxSpiderSize || c.URLPreviewEnabled != d.URLPreviewEnabled || len(c.MediaUploadLimits) != 0 {
		t.Errorf("sample values differ from Defaults()")
	}
}

func TestParseDefaults(t *testing.T) {
	c, warnings := mustParse(t, minimal)
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	want := Defaults()
	want.Path = testFile
	want.ServerName = "example.org"
	want.SigningKeyPath = "/etc/matrix/example.org.signing.key"
	want.MediaStorePath = "/etc/matrix/media_store"
	want.Database.Args.Database = "/etc/matrix/homeserver.db"
	want.Listeners = []Listener{{
		Port:          8008,
		BindAddresses: []string{"127.0.0.1"},
		Type:          "http",
		Resources:     []Resource{{Names: []string{"client", "federation"}}},
	}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", c, want)
	}

	// Spot-check the values Defaults() promises, so a typo there is caught.
	checks := []struct {
		name      string
		got, want any
	}{
		{"bcrypt_rounds", c.BcryptRounds, 12},
		{"max_upload_size", c.MaxUploadSize, ByteSize(50 << 20)},
		{"max_image_pixels", c.MaxImagePixels, ByteSize(32 << 20)},
		{"thumbnail_sizes", fmt.Sprint(c.ThumbnailSizes), "[{32 32 crop} {96 96 crop} {320 240 scale} {640 480 scale} {800 600 scale}]"},
		{"default_room_version", c.DefaultRoomVersion, "10"},
		{"log_level", c.LogLevel, "info"},
		{"database.name", c.Database.Name, "sqlite3"},
		{"refreshable_access_token_lifetime", c.RefreshableAccessTokenLifetime, Duration(5 * time.Minute)},
		{"rc_message", c.RcMessage, RateLimit{0.2, 10}},
		{"rc_registration", c.RcRegistration, RateLimit{0.17, 3}},
		{"rc_login.address", c.RcLogin.Address, RateLimit{0.003, 5}},
		{"rc_login.account", c.RcLogin.Account, RateLimit{0.003, 5}},
		{"rc_login.failed_attempts", c.RcLogin.FailedAttempts, RateLimit{0.17, 3}},
		{"rc_joins.local", c.RcJoins.Local, RateLimit{0.1, 10}},
		{"rc_joins.remote", c.RcJoins.Remote, RateLimit{0.01, 10}},
		{"rc_invites.per_room", c.RcInvites.PerRoom, RateLimit{0.3, 10}},
		{"rc_invites.per_user", c.RcInvites.PerUser, RateLimit{0.003, 5}},
		{"rc_media_create", c.RcMediaCreate, RateLimit{10, 50}},
		{"enable_registration", c.EnableRegistration, false},
		{"public_baseurl", c.PublicBaseURL, ""},
		{"federation_domain_whitelist", c.FederationDomainWhitelist == nil, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseValues(t *testing.T) {
	c, warnings := mustParse(t, minimal+`
public_baseurl: https://matrix.example.org
pid_file: /run/hs.pid
default_room_version: 11
log_level: WARNING
max_upload_size: 10K
refreshable_access_token_lifetime: 60000
federation_domain_whitelist: []
extra_well_known_client_content:
  org.example: {nested: [1, 2.5, "x", true, ~, 2024-01-01, {3: y}]}
rc_login:
  address: {per_second: 1}
rc_joins:
  remote: {burst_count: 3}
database:
  name: psycopg2
  args: {database: synapse, user: u, password: p, host: db, port: 5433, sslmode: require, cp_min: 1, cp_max: 4}
`)
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"public_baseurl gets a trailing slash", c.PublicBaseURL, "https://matrix.example.org/"},
		{"absolute pid_file kept", c.PidFile, "/run/hs.pid"},
		{"unquoted room version", c.DefaultRoomVersion, "11"},
		{"log level lower-cased", c.LogLevel, "warning"},
		{"slog level", c.SlogLevel(), slog.LevelWarn},
		{"size", c.MaxUploadSize, ByteSize(10 << 10)},
		{"integer duration is ms", c.RefreshableAccessTokenLifetime, Duration(time.Minute)},
		{"empty whitelist is non-nil", c.FederationDomainWhitelist != nil && len(c.FederationDomainWhitelist) == 0, true},
		{"partial rate limit keeps other default", c.RcLogin.Address, RateLimit{1, 5}},
		{"sibling rate limit untouched", c.RcLogin.Account, RateLimit{0.003, 5}},
		{"partial rate limit keeps other default (2)", c.RcJoins.Remote, RateLimit{0.01, 3}},
		{"postgres", c.DatabaseIsSQLite(), false},
		{"postgres database not resolved as a path", c.Database.Args.Database, "synapse"},
		{"db args", c.Database.Args, DatabaseArgs{"synapse", "u", "p", "db", 5433, "require", 1, 4}},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	// Free-form content must be JSON-encodable as written: string keys only,
	// and dates kept as strings.
	got, err := json.Marshal(c.ExtraWellKnownClientContent)
	if want := `{"org.example":{"nested":[1,2.5,"x",true,null,"2024-01-01",{"3":"y"}]}}`; err != nil || string(got) != want {
		t.Errorf("extra_well_known_client_content as JSON = %s, %v; want %s", got, err, want)
	}
}

func TestParseYAMLFeatures(t *testing.T) {
	t.Run("null keeps default", func(t *testing.T) {
		c, _ := mustParse(t, minimal+"bcrypt_rounds:\nmedia_store_path: ~\nrc_message: null\n")
		if c.BcryptRounds != 12 || c.MediaStorePath != "/etc/matrix/media_store" || c.RcMessage != (RateLimit{0.2, 10}) {
			t.Errorf("nulls changed defaults: %d %q %v", c.BcryptRounds, c.MediaStorePath, c.RcMessage)
		}
	})
	t.Run("anchors and merge keys", func(t *testing.T) {
		c, warnings := mustParse(t, minimal+`
rc_joins:
  local: &lim {per_second: 2, burst_count: 20}
  remote:
    <<: *lim
    burst_count: 7
rc_message: *lim
`)
		if len(warnings) != 0 {
			t.Errorf("warnings: %q", warnings)
		}
		if c.RcJoins.Local != (RateLimit{2, 20}) || c.RcJoins.Remote != (RateLimit{2, 7}) || c.RcMessage != (RateLimit{2, 20}) {
			t.Errorf("got %v %v %v", c.RcJoins.Local, c.RcJoins.Remote, c.RcMessage)
		}
	})
	t.Run("empty file reports the first missing key", func(t *testing.T) {
		_, _, err := Parse(nil, "homeserver.yaml")
		if err == nil || err.Error() != "homeserver.yaml: server_name: required" {
			t.Errorf("err = %v", err)
		}
	})
}

func TestParseErrors(t *testing.T) {
	const f = testFile + ": "
	tests := []struct {
		name string
		yaml string
		want string // the whole error must contain this
	}{
		{"syntax", "server_name: a\n  bad: indent\n", f + "yaml: line 2: "},
		{"top level not a mapping", "- a\n- b\n", f + "want a mapping of keys at the top level, got a list"},
		{"duplicate key", minimal + "server_name: other.org\n", f + "server_name: duplicate key (lines 2 and 9)"},
		{"url previews without blacklist", minimal + "url_preview_enabled: true\n", f + "url_preview_ip_range_blacklist: required when url_preview_enabled is true"},
		{"url preview bad range", minimal + "url_preview_ip_range_blacklist: ['10.0.0.0/33']\n", f + `url_preview_ip_range_blacklist[0]: invalid IP range "10.0.0.0/33"`},
		{"url preview bad whitelist", minimal + "url_preview_ip_range_whitelist: [example.org]\n", f + `url_preview_ip_range_whitelist[0]: invalid IP range "example.org"`},
		{"url blacklist component", minimal + "url_preview_url_blacklist: [{host: x}]\n", f + "url_preview_url_blacklist[0].host: unknown URL component"},
		{"url blacklist value", minimal + "url_preview_url_blacklist: [{netloc: [x]}]\n", f + "url_preview_url_blacklist[0].netloc: want a string"},
		{"url blacklist regexp", minimal + "url_preview_url_blacklist: [{netloc: '^(x'}]\n", f + "url_preview_url_blacklist[0].netloc: invalid regular expression"},
		{"url blacklist empty entry", minimal + "url_preview_url_blacklist: [{}]\n", f + "url_preview_url_blacklist[0]: empty entry"},
		{"max_spider_size", minimal + "max_spider_size: 0\n", f + "max_spider_size: must be more than 0"},
		{"media_upload_limits period", minimal + "media_upload_limits: [{max_size: 1M}]\n", f + "media_upload_limits[0].time_period: required"},
		{"media_upload_limits size", minimal + "media_upload_limits: [{time_period: 1h}]\n", f + "media_upload_limits[0].max_size: required"},

		{"server_name missing", "signing_key_path: k\nlisteners: [{port: 1, type: http, resources: [{names: [client]}]}]\n", f + "server_name: required"},
		{"server_name invalid", strings.Replace(minimal, "example.org\n", "exa_mple.org\n", 1), f + `server_name: invalid server name "exa_mple.org": invalid character '_'`},
		{"server_name bad port", strings.Replace(minimal, "example.org\n", "example.org:99999\n", 1), f + `server_name: invalid server name "example.org:99999": invalid port "99999"`},
		{"public_baseurl", minimal + "public_baseurl: matrix.example.org\n", f + `public_baseurl: invalid URL "matrix.example.org/"`},

		{"no listeners", "server_name: a\nsigning_key_path: k\n", f + "listeners: at least one listener with type: http is required"},
		{"only metrics", "server_name: a\nsigning_key_path: k\nenable_metrics: true\nlisteners: [{port: 9000, type: metrics}]\n", f + "listeners: at least one listener with type: http is required"},
		{"listeners not a list", "server_name: a\nsigning_key_path: k\nlisteners: {port: 1}\n", f + "listeners: want a list, got a mapping"},
		{"port missing", "server_name: a\nsigning_key_path: k\nlisteners: [{type: http}]\n", f + "listeners[0].port: required"},
		{"port range", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 70000, type: http}]\n", f + "listeners[0].port: must be between 1 and 65535, got 70000"},
		{"port not a number", "server_name: a\nsigning_key_path: k\nlisteners: [{port: http, type: http}]\n", f + `listeners[0].port: want an integer, got "http"`},
		{"type missing", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 1}]\n", f + "listeners[0].type: required"},
		{"type unknown", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 1, type: manhole}]\n", f + `listeners[0].type: unsupported "manhole" (want http or metrics)`},
		{"no resources", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 1, type: http}]\n", f + "listeners[0].resources: an http listener needs at least one resource"},
		{"resource unknown", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 1, type: http, resources: [{names: [client, webclient]}]}]\n", f + `listeners[0].resources[0].names[1]: unknown resource "webclient"`},
		{"bind address", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 1, type: http, bind_addresses: [localhost], resources: [{names: [client]}]}]\n", f + `listeners[0].bind_addresses[0]: invalid IP address "localhost"`},
		{"tls without cert", "server_name: a\nsigning_key_path: k\nlisteners: [{port: 1, type: http, tls: true, resources: [{names: [client]}]}]\n", f + "tls_certificate_path: required because listeners[0] has tls: true"},
		{"tls without key", "server_name: a\nsigning_key_path: k\ntls_certificate_path: c\nlisteners: [{port: 1, type: http, tls: true, resources: [{names: [client]}]}]\n", f + "tls_private_key_path: required because listeners[0] has tls: true"},
		{"bool", minimal + "enable_metrics: maybe\n", f + `enable_metrics: want true or false, got "maybe"`},

		{"signing_key_path", "server_name: a\nlisteners: [{port: 1, type: http, resources: [{names: [client]}]}]\n", f + "signing_key_path: required"},

		{"database name", minimal + "database: {name: mysql}\n", f + `database.name: unsupported "mysql" (want sqlite3, psycopg2 or postgres)`},
		{"postgres needs database", minimal + "database: {name: postgres, args: {user: u}}\n", f + "database.args.database: required for postgres"},
		{"psycopg2 needs database", minimal + "database: {name: psycopg2}\n", f + "database.args.database: required for psycopg2"},
		{"cp_min > cp_max", minimal + "database: {name: psycopg2, args: {database: d, cp_min: 5, cp_max: 2}}\n", f + "database.args.cp_min: must not exceed cp_max (5 > 2)"},
		{"database args not a mapping", minimal + "database: {args: homeserver.db}\n", f + `database.args: want a mapping, got "homeserver.db"`},

		{"open registration", minimal + "enable_registration: true\n", f + "enable_registration: open registration without verification is dangerous; set enable_registration_without_verification: true to allow it"},
		{"registration token", minimal + "registration_tokens: [ok, 'not ok']\n", f + `registration_tokens[1]: invalid character ' ' in token`},
		{"bcrypt low", minimal + "bcrypt_rounds: 3\n", f + "bcrypt_rounds: must be between 4 and 31, got 3"},
		{"bcrypt high", minimal + "bcrypt_rounds: 32\n", f + "bcrypt_rounds: must be between 4 and 31, got 32"},
		{"max_upload_size", minimal + "max_upload_size: abc\n", f + `max_upload_size: invalid size "abc"`},
		{"max_upload_size negative", minimal + "max_upload_size: -1\n", f + `max_upload_size: invalid size "-1"`},
		{"max_upload_size zero", minimal + "max_upload_size: 0\n", f + "max_upload_size: must be more than 0"},
		{"max_image_pixels zero", minimal + "max_image_pixels: 0\n", f + "max_image_pixels: must be more than 0"},
		{"thumbnail method", minimal + "thumbnail_sizes: [{width: 32, height: 32, method: stretch}]\n", f + `thumbnail_sizes[0].method: unsupported "stretch" (want crop or scale)`},
		{"thumbnail width", minimal + "thumbnail_sizes: [{height: 32, method: crop}]\n", f + "thumbnail_sizes[0].width: must be between 1 and 10000, got 0"},
		{"duration", minimal + "refreshable_access_token_lifetime: 5 minutes\n", f + `refreshable_access_token_lifetime: invalid duration "5 minutes"`},
		{"room version", minimal + "default_room_version: 13\n", f + `default_room_version: unsupported "13" (want "1" to "12")`},
		{"room version not canonical", minimal + "default_room_version: '010'\n", f + `default_room_version: unsupported "010"`},
		{"whitelist entry", minimal + "federation_domain_whitelist: ['bad name']\n", f + `federation_domain_whitelist[0]: invalid server name "bad name"`},
		{"log level", minimal + "log_level: verbose\n", f + `log_level: unsupported "verbose" (want debug, info, warn, warning or error)`},
		{"rate per_second", minimal + "rc_message: {per_second: -1}\n", f + "rc_message.per_second: must be a non-negative number, got -1"},
		{"rate NaN", minimal + "rc_login: {failed_attempts: {per_second: .nan}}\n", f + "rc_login.failed_attempts.per_second: must be a non-negative number, got NaN"},
		{"rate burst", minimal + "rc_invites: {per_user: {burst_count: -5}}\n", f + "rc_invites.per_user.burst_count: must not be negative, got -5"},
		{"rate not a number", minimal + "rc_media_create: {per_second: fast}\n", f + `rc_media_create.per_second: want a number, got "fast"`},
		{"list of strings", minimal + "app_service_config_files: a.yaml\n", f + `app_service_config_files: want a list, got "a.yaml"`},
		{"string given a mapping", minimal + "pid_file: {a: b}\n", f + "pid_file: want a single value, got a mapping"},
		{"free-form map with infinity", minimal + "extra_well_known_client_content: {a: {b: [.inf]}}\n", f + `extra_well_known_client_content.a.b[0]: ".inf" is not a number JSON can represent`},
		{"free-form map given a list", minimal + "extra_well_known_client_content: [a]\n", f + "extra_well_known_client_content: want a mapping, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.yaml), testFile)
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q\nwant one line containing %q", msg, tt.want)
			}
		})
	}
}

func TestRegistrationCombinationsAllowed(t *testing.T) {
	for _, extra := range []string{
		"enable_registration: true\nenable_registration_without_verification: true\n",
		"enable_registration: true\nregistration_requires_token: true\nregistration_tokens: [abc.DEF_~-1]\n",
		"enable_registration: false\n",
	} {
		if _, _, err := Parse([]byte(minimal+extra), testFile); err != nil {
			t.Errorf("%q: %v", extra, err)
		}
	}
}

func TestUnknownKeyWarnings(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"none", minimal, nil},
		{
			"top level, with suggestion",
			minimal + "enable_registation: false\n",
			[]string{testFile + `: enable_registation: unknown key (line 9), ignored; did you mean "enable_registration"?`},
		},
		{
			"nested in a list",
			"server_name: a\nsigning_key_path: k\nlisteners:\n  - port: 1\n    type: http\n    resources: [{names: [client]}]\n    resorces: []\n",
			[]string{testFile + `: listeners[0].resorces: unknown key (line 7), ignored; did you mean "resources"?`},
		},
		{
			"deeply nested, no close match",
			minimal + "database:\n  args:\n    keepalives_idle: 10\nrc_login:\n  address: {per_second: 1, burst: 2}\n",
			[]string{
				testFile + ": database.args.keepalives_idle: unknown key (line 11), ignored",
				testFile + `: rc_login.address.burst: unknown key (line 13), ignored`,
			},
		},
		{
			"synapse key we lack",
			minimal + "macaroon_secret_key: x\n",
			[]string{testFile + ": macaroon_secret_key: unknown key (line 9), ignored"},
		},
		{
			"free-form map contents are not checked",
			minimal + "extra_well_known_client_content: {anything: {goes: here}}\n",
			nil,
		},
		{
			"metrics listener without enable_metrics",
			minimal + "  - port: 9000\n    type: metrics\n",
			[]string{testFile + ": listeners[1]: metrics listener configured, but enable_metrics is false"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warnings := mustParse(t, tt.yaml)
			if !reflect.DeepEqual(warnings, tt.want) {
				t.Errorf("warnings =\n%q\nwant\n%q", warnings, tt.want)
			}
		})
	}
}

func TestRelativePaths(t *testing.T) {
	const yaml = minimal + `
media_store_path: media
pid_file: run/hs.pid
tls_certificate_path: tls/cert.pem
tls_private_key_path: /abs/key.pem
app_service_config_files: [bridges/irc.yaml, /abs/slack.yaml]
database: {args: {database: data/hs.db}}
`
	tests := []struct {
		name, path, base string
	}{
		{"absolute config path", "/srv/hs/homeserver.yaml", "/srv/hs"},
		{"relative config path", "conf/homeserver.yaml", "conf"},
		{"bare file name", "homeserver.yaml", ""},
		{"no path", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Parse([]byte(yaml), tt.path)
			if err != nil {
				t.Fatal(err)
			}
			j := func(p string) string { return filepath.Join(tt.base, p) }
			got := []string{c.SigningKeyPath, c.MediaStorePath, c.PidFile, c.TLSCertificatePath, c.TLSPrivateKeyPath,
				c.AppServiceConfigFiles[0], c.AppServiceConfigFiles[1], c.Database.Args.Database}
			want := []string{j("example.org.signing.key"), j("media"), j("run/hs.pid"), j("tls/cert.pem"), "/abs/key.pem",
				j("bridges/irc.yaml"), "/abs/slack.yaml", j("data/hs.db")}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("paths =\n%q\nwant\n%q", got, want)
			}
		})
	}

	for _, db := range []string{":memory:", "file:test.db?mode=memory"} {
		c, _ := mustParse(t, minimal+"database: {args: {database: '"+db+"'}}\n")
		if c.Database.Args.Database != db {
			t.Errorf("sqlite database %q resolved to %q", db, c.Database.Args.Database)
		}
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr bool
	}{
		{"512", 512, false},
		{"0", 0, false},
		{"10K", 10 << 10, false},
		{"10k", 10 << 10, false},
		{"50M", 50 << 20, false},
		{"1G", 1 << 30, false},
		{"2T", 2 << 40, false},
		{"", 0, true},
		{"M", 0, true},
		{"abc", 0, true},
		{"-1", 0, true},
		{"1.5M", 0, true},
		{"50MB", 0, true},
		{" 50M", 0, true},
		{"99999999999T", 0, true}, // overflows int64
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), `invalid size "`+tt.in+`"`) {
			t.Errorf("ParseByteSize(%q) error = %q", tt.in, err)
		}
	}

	// In YAML, integers are bytes and quoted or suffixed values are strings.
	for in, want := range map[string]ByteSize{"1048576": 1 << 20, `"2048"`: 2048, "3M": 3 << 20} {
		c, _ := mustParse(t, minimal+"max_upload_size: "+in+"\n")
		if c.MaxUploadSize != want {
			t.Errorf("max_upload_size: %s = %d, want %d", in, c.MaxUploadSize, want)
		}
	}

	for in, want := range map[ByteSize]string{0: "0", 512: "512", 1536: "1536", 50 << 20: "50M", 1 << 30: "1G", 3 << 40: "3T"} {
		if got := in.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(in), got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"0", 0, false},
		{"1500", 1500 * time.Millisecond, false},
		{"500ms", 500 * time.Millisecond, false},
		{"30s", 30 * time.Second, false},
		{"5m", 5 * time.Minute, false},
		{"1h", time.Hour, false},
		{"2d", 2 * day, false},
		{"1w", 7 * day, false},
		{"1y", 365 * day, false},
		{"", 0, true},
		{"m", 0, true},
		{"5 m", 0, true},
		{"1h30m", 0, true},
		{"-5m", 0, true},
		{"1.5h", 0, true},
		{"5M", 0, true}, // suffixes are lower case, so M (months?) is not guessed at
		{"999999999y", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.wantErr || time.Duration(got) != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), `invalid duration "`+tt.in+`"`) {
			t.Errorf("ParseDuration(%q) error = %q", tt.in, err)
		}
	}

	for in, want := range map[string]time.Duration{"300000": 5 * time.Minute, `"1000"`: time.Second, "1h": time.Hour} {
		c, _ := mustParse(t, minimal+"refreshable_access_token_lifetime: "+in+"\n")
		if time.Duration(c.RefreshableAccessTokenLifetime) != want {
			t.Errorf("refreshable_access_token_lifetime: %s = %v, want %v", in, c.RefreshableAccessTokenLifetime, want)
		}
	}
	if got := Duration(90 * time.Second).String(); got != "1m30s" {
		t.Errorf("String() = %q", got)
	}
}

func TestValidateServerName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"example.org", true},
		{"matrix.example.org:8448", true},
		{"localhost", true},
		{"a-b.c", true},
		{"1.2.3.4", true},
		{"1.2.3.4:443", true},
		{"[::1]", true},
		{"[2001:db8::1]:8448", true},
		{"", false},
		{"example.org:", false},
		{"example.org:0", false},
		{"example.org:65536", false},
		{"example.org:http", false},
		{"example..org", false},
		{"example.org.", false},
		{"ex_ample.org", false},
		{"exa mple.org", false},
		{"::1", false},
		{"[::1", false},
		{"[1.2.3.4]", false},
		{"[::1]x", false},
		{"[fe80::1%eth0]", false},
		{"@user:example.org", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		if err := validateServerName(tt.name); (err == nil) != tt.ok {
			t.Errorf("validateServerName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	tests := map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn,
		"warning": slog.LevelWarn, "error": slog.LevelError, "Error": slog.LevelError,
	}
	for in, want := range tests {
		c, _ := mustParse(t, minimal+"log_level: "+in+"\n")
		if got := c.SlogLevel(); got != want {
			t.Errorf("log_level %q: SlogLevel() = %v, want %v", in, got, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, _, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want it to name %s", err, path)
	}
}

func TestParseURLPreviewAndQuota(t *testing.T) {
	c, warnings := mustParse(t, minimal+`
url_preview_enabled: true
url_preview_ip_range_blacklist: ['127.0.0.0/8', '::1', '10.1.2.3/8']
url_preview_ip_range_whitelist: ['127.0.0.1']
url_preview_url_blacklist:
  - netloc: '*.example.com'
    scheme: http
max_spider_size: 1M
url_preview_accept_language: [fr, 'en;q=0.5']
media_upload_limits:
  - time_period: 1d
    max_size: 1G
`)
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if !c.URLPreviewEnabled || len(c.URLPreviewIPRangeBlacklist) != 3 || c.MaxSpiderSize != 1<<20 ||
		c.URLPreviewURLBlacklist[0]["netloc"] != "*.example.com" || len(c.URLPreviewAcceptLanguage) != 2 {
		t.Errorf("got %+v", c)
	}
	if want := []MediaUploadLimit{{TimePeriod: Duration(24 * time.Hour), MaxSize: 1 << 30}}; !reflect.DeepEqual(c.MediaUploadLimits, want) {
		t.Errorf("media_upload_limits = %+v", c.MediaUploadLimits)
	}
	for in, want := range map[string]string{"::1": "::1/128", "10.1.2.3/8": "10.0.0.0/8", "::ffff:1.2.3.4": "1.2.3.4/32"} {
		if p, err := ParseIPRange(in); err != nil || p.String() != want {
			t.Errorf("ParseIPRange(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	// An explicitly empty blacklist is accepted, as in Synapse.
	mustParse(t, minimal+"url_preview_enabled: true\nurl_preview_ip_range_blacklist: []\n")
	if d := Defaults(); d.URLPreviewEnabled || d.MaxSpiderSize != 10<<20 {
		t.Errorf("defaults: enabled %v, max_spider_size %v", d.URLPreviewEnabled, d.MaxSpiderSize)
	}
}

// Optional keys held as pointers (unset is not the same as false) decode
// when set and stay nil when not.
func TestParseOptionalBool(t *testing.T) {
	c, _ := mustParse(t, minimal)
	if c.FederationVerifyCertificates != nil {
		t.Errorf("unset federation_verify_certificates: %v", *c.FederationVerifyCertificates)
	}
	c, _ = mustParse(t, minimal+"federation_verify_certificates: false\n")
	if c.FederationVerifyCertificates == nil || *c.FederationVerifyCertificates {
		t.Errorf("federation_verify_certificates: false decoded as %v", c.FederationVerifyCertificates)
	}
	if _, _, err := Parse([]byte(minimal+"federation_verify_certificates: maybe\n"), testFile); err == nil {
		t.Error("federation_verify_certificates: maybe parsed")
	}
}
