// Package testserver starts the real homeserver in-process on a loopback
// port for integration tests, and speaks HTTP to it.
package testserver

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/config"
	"homeserver/server"
	"homeserver/storage"
)

// ServerName of every test server.
const ServerName = "test.local"

// BaseConfig is the homeserver.yaml of a test server: open registration,
// cheap bcrypt, no rate limits unless a test adds them, and no federation
// (no test may depend on DNS): the federation tests start servers of their
// own with NewFederation.
const BaseConfig = `
server_name: test.local
public_baseurl: http://test.local/
listeners:
  - port: 8008
    type: http
    resources:
      - names: [client, federation, media]
` + SQLiteDatabase + `signing_key_path: test.local.signing.key
` + testSettings + NoFederation

// testSettings are the parts of every test server's configuration beyond
// its name, listeners and database: open registration, cheap bcrypt, quiet
// logs and no rate limits unless a test adds them.
const testSettings = `enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: test-shared-secret
bcrypt_rounds: 4
log_level: error
rc_message: {per_second: 0, burst_count: 0}
rc_registration: {per_second: 0, burst_count: 0}
rc_joins:
  local: {per_second: 0, burst_count: 0}
  remote: {per_second: 0, burst_count: 0}
rc_invites:
  per_room: {per_second: 0, burst_count: 0}
  per_user: {per_second: 0, burst_count: 0}
rc_login:
  address: {per_second: 0, burst_count: 0}
  account: {per_second: 0, burst_count: 0}
  failed_attempts: {per_second: 0, burst_count: 0}
`

// NoFederation is the part of BaseConfig that turns federation off.
const NoFederation = "federation_domain_whitelist: []\n"

// SQLiteDatabase is the database section of BaseConfig. When
// HOMESERVER_TEST_POSTGRES holds a DSN, test servers replace it with a fresh
// PostgreSQL database of their own, so that the same tests run on both engines.
const SQLiteDatabase = `database:
  name: sqlite3
  args:
    database: homeserver.db
`

// PostgresEnv names the variable holding the PostgreSQL DSN for tests.
const PostgresEnv = "HOMESERVER_TEST_POSTGRES"

// Server is a running test homeserver.
type Server struct {
	t      testing.TB
	Dir    string
	Config *config.Config
	Srv    *server.Server
	URL    string
	Client *http.Client
	yaml   string
	// Instance, when set, is the process's --instance-name (clusters).
	Instance string
	// fedListener and fedAddr serve the second listener (federation over
	// TLS) of a Federation's servers, on the same address across restarts.
	fedListener net.Listener
	fedAddr     string
	// logs, when set, receives every log record of the server.
	logs slog.Handler
}

func newClient() *http.Client { return &http.Client{Timeout: 30 * time.Second} }

// Start starts a server configured with BaseConfig plus extra YAML. YAML
// forbids duplicate keys, so extra may only add keys BaseConfig lacks; use
// StartYAML for anything else.
func Start(t testing.TB, extra string) *Server {
	return StartYAML(t, BaseConfig+extra)
}

// StartLogged is Start with every log record of the server, at every
// level, handed to logs: for tests of what reaches the logs.
func StartLogged(t testing.TB, extra string, logs slog.Handler) *Server {
	t.Helper()
	return startYAML(t, BaseConfig+extra, logs)
}

// StartYAML starts a server with exactly this homeserver.yaml.
func StartYAML(t testing.TB, yaml string) *Server {
	t.Helper()
	return startYAML(t, yaml, nil)
}

func startYAML(t testing.TB, yaml string, logs slog.Handler) *Server {
	t.Helper()
	if dsn := os.Getenv(PostgresEnv); dsn != "" && strings.Contains(yaml, SQLiteDatabase) {
		yaml = strings.Replace(yaml, SQLiteDatabase, PostgresDatabase(t, dsn), 1)
	}
	s := &Server{t: t, Dir: t.TempDir(), yaml: yaml, Client: &http.Client{Timeout: 30 * time.Second}, logs: logs}
	path := filepath.Join(s.Dir, "homeserver.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	cfg, _, err := config.Load(filepath.Join(s.Dir, "homeserver.yaml"))
	if err != nil {
		s.t.Fatalf("test config: %v", err)
	}
	cfg.InstanceName = s.Instance
	s.Config = cfg
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	switch {
	case s.logs != nil:
		log = slog.New(s.logs)
	case testing.Verbose():
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := server.New(context.Background(), cfg, log)
	if err != nil {
		s.t.Fatalf("starting test server: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	if err := srv.Serve(l, cfg.Listeners[0]); err != nil {
		s.t.Fatal(err)
	}
	if s.fedAddr != "" {
		fl := s.fedListener
		s.fedListener = nil
		if fl == nil {
			if fl, err = net.Listen("tcp", s.fedAddr); err != nil {
				s.t.Fatalf("federation listener: %v", err)
			}
		}
		if err := srv.Serve(fl, cfg.Listeners[1]); err != nil {
			s.t.Fatal(err)
		}
	}
	s.Srv = srv
	s.URL = "http://" + l.Addr().String()
}

// Cluster is one deployment served by several processes: one PostgreSQL
// database and one configuration directory (media store, signing key).
type Cluster struct {
	t   testing.TB
	Dir string
	// DSN reaches the cluster's database, for tests that look into it.
	DSN  string
	yaml string
}

// NewCluster prepares a deployment whose processes start with Start; extra
// is added to BaseConfig. It skips the test unless HOMESERVER_TEST_POSTGRES
// names a PostgreSQL server: a SQLite database serves one process.
func NewCluster(t testing.TB, extra string) *Cluster {
	t.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		t.Skipf("several processes need PostgreSQL; set %s", PostgresEnv)
	}
	name := CreatePostgresDB(t, dsn)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	u.Path = "/" + name
	c := &Cluster{t: t, Dir: t.TempDir(), DSN: u.String()}
	c.yaml = strings.Replace(BaseConfig+extra, SQLiteDatabase, postgresSection(t, dsn, name), 1)
	if err := os.WriteFile(c.ConfigPath(), []byte(c.yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// ConfigPath is the homeserver.yaml every process of the cluster reads.
func (c *Cluster) ConfigPath() string { return filepath.Join(c.Dir, "homeserver.yaml") }

// Start starts a process of the cluster, in this test binary, with this
// --instance-name.
func (c *Cluster) Start(instance string) *Server {
	c.t.Helper()
	s := &Server{t: c.t, Dir: c.Dir, yaml: c.yaml, Client: &http.Client{Timeout: 30 * time.Second}, Instance: instance}
	s.start()
	c.t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down; safe to call twice.
func (s *Server) Stop() {
	if s.Srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Srv.Shutdown(ctx); err != nil {
		s.t.Errorf("shutdown: %v", err)
	}
	s.Srv = nil
}

// Restart stops the server and starts it again on the same data directory
// (on a new port).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Response is a decoded answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// Errcode is the Matrix errcode of the answer, if any.
func (r *Response) Errcode() string {
	c, _ := r.JSON["errcode"].(string)
	return c
}

// String returns JSON field k as a string.
func (r *Response) String(k string) string {
	v, _ := r.JSON[k].(string)
	return v
}

// Do sends a request. body may be nil, a string or []byte (sent as is), or
// any value (sent as JSON). token, when set, goes in the Authorization header.
func (s *Server) Do(method, path, token string, body any) *Response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return send(s.t, s.Client, req)
}

// send sends req and reads the answer.
func send(t testing.TB, c *http.Client, req *http.Request) *Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
	_ = json.Unmarshal(data, &r.JSON)
	return r
}

// MustDo is Do that fails the test unless the status is want.
func (s *Server) MustDo(want int, method, path, token string, body any) *Response {
	s.t.Helper()
	r := s.Do(method, path, token, body)
	if r.Status != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// User is a registered, logged-in test user.
type User struct {
	ID, Token, DeviceID, Password string
}

// Register registers localpart through the dummy flow.
func (s *Server) Register(localpart, password string) User {
	s.t.Helper()
	body := map[string]any{"username": localpart, "password": password}
	first := s.MustDo(http.StatusUnauthorized, "POST", "/_matrix/client/v3/register", "", body)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.String("session")}
	r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/register", "", body)
	return User{ID: r.String("user_id"), Token: r.String("access_token"), DeviceID: r.String("device_id"), Password: password}
}

// Login logs an existing user in on a new device.
func (s *Server) Login(localpart, password string) User {
	s.t.Helper()
	r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart}, "password": password,
	})
	return User{ID: r.String("user_id"), Token: r.String("access_token"), DeviceID: r.String("device_id"), Password: password}
}

// txnCounter makes the transaction IDs of the helpers below unique within
// a test binary.
var txnCounter atomic.Int64

// NextTxn returns a transaction ID not used before in this test binary.
func NextTxn() string { return "tstxn" + strconv.FormatInt(txnCounter.Add(1), 10) }

// RoomPath is the path of a room's endpoint: RoomPath(id, "/send/...").
func RoomPath(roomID, rest string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + rest
}

// CreateRoom creates a room (body nil: no options) and returns its ID.
func (s *Server) CreateRoom(u User, body map[string]any) string {
	s.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/createRoom", u.Token, body)
	id := r.String("room_id")
	if !strings.HasPrefix(id, "!") {
		s.t.Fatalf("createRoom answered room_id %q: %s", id, r.Body)
	}
	return id
}

// CreatePublicRoom creates a room with the public_chat preset.
func (s *Server) CreatePublicRoom(u User) string {
	s.t.Helper()
	return s.CreateRoom(u, map[string]any{"preset": "public_chat"})
}

// Send sends a message event and returns its ID.
func (s *Server) Send(u User, roomID, eventType string, content any) string {
	s.t.Helper()
	return s.MustDo(http.StatusOK, "PUT", RoomPath(roomID, "/send/"+url.PathEscape(eventType)+"/"+NextTxn()), u.Token, content).String("event_id")
}

// SendText sends an m.text message with this body and returns its ID.
func (s *Server) SendText(u User, roomID, body string) string {
	s.t.Helper()
	return s.Send(u, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

// Join joins u to a room.
func (s *Server) Join(u User, roomID string) {
	s.t.Helper()
	r := s.MustDo(http.StatusOK, "POST", RoomPath(roomID, "/join"), u.Token, map[string]any{})
	if r.String("room_id") != roomID {
		s.t.Fatalf("join answered room_id %q, want %s", r.String("room_id"), roomID)
	}
}

// ExecSQL runs a statement on the server's own database, for tests that
// must simulate what no API does (a peer that lost its queue); use it
// while the server is stopped.
func (s *Server) ExecSQL(query string, args ...any) {
	s.t.Helper()
	opts := server.StorageOptions(s.Config.Database)
	driver, dsn := "sqlite", opts.Path
	if opts.Engine == storage.Postgres {
		driver, dsn = "pgx", opts.DSN
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
}
