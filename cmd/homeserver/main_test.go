package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"homeserver/config"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"version", "--version", "-v"} {
		code, stdout, stderr := runCmd(context.Background(), arg)
		if code != 0 || stderr != "" {
			t.Errorf("%s: exit %d, stderr %q", arg, code, stderr)
		}
		if want := "homeserver " + fullVersion() + "\n"; stdout != want {
			t.Errorf("%s: stdout %q, want %q", arg, stdout, want)
		}
		if !strings.HasPrefix(stdout, "homeserver "+version) {
			t.Errorf("%s: stdout %q does not start with the version %q", arg, stdout, version)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "homeserver.yaml")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no arguments", nil, 2, "--config-path (-c) is required"},
		{"generate without -c", []string{"--generate-config", "--server-name", "example.org"}, 2, "--config-path (-c) is required"},
		{"generate without --server-name", []string{"--generate-config", "-c", cfg}, 2, "--generate-config needs --server-name"},
		{"unknown flag", []string{"--no-such-flag"}, 2, "no-such-flag"},
		{"help", []string{"-h"}, 0, "usage:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCmd(cancelledContext(), tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr does not mention %q:\n%s", tt.wantErr, stderr)
			}
		})
	}
	if _, err := os.Stat(cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed --generate-config left %s behind (stat: %v)", cfg, err)
	}
}

// generate writes a config for serverName into dir with --generate-config
// and returns its path.
func generate(t *testing.T, dir, serverName string, extra ...string) string {
	t.Helper()
	path := filepath.Join(dir, "homeserver.yaml")
	args := append([]string{"--generate-config", "--server-name", serverName, "-c", path}, extra...)
	code, stdout, stderr := runCmd(cancelledContext(), args...)
	if code != 0 {
		t.Fatalf("--generate-config: exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stdout, path) {
		t.Errorf("--generate-config output does not name the file:\n%s", stdout)
	}
	return path
}

var signingKeyLine = regexp.MustCompile(`^ed25519 (a_[A-Za-z0-9]{4}) ([A-Za-z0-9+/]+)\n?$`)

func TestGenerateConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := generate(t, dir, "example.org")

	keyPath := filepath.Join(dir, "example.org.signing.key")
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatalf("signing key: %v", err)
	}
	m := signingKeyLine.FindSubmatch(key)
	if m == nil {
		t.Fatalf("signing key %q is not \"ed25519 a_XXXX <base64>\"", key)
	}
	if seed, err := base64.RawStdEncoding.DecodeString(string(m[2])); err != nil || len(seed) != 32 {
		t.Errorf("signing key seed %q: %d bytes, err %v; want 32 bytes of unpadded base64", m[2], len(seed), err)
	}

	cfg, warnings, err := config.Load(path)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("generated config has warnings: %q", warnings)
	}
	if cfg.ServerName != "example.org" {
		t.Errorf("server_name = %q", cfg.ServerName)
	}
	if cfg.SigningKeyPath != keyPath {
		t.Errorf("signing_key_path = %q, want %q", cfg.SigningKeyPath, keyPath)
	}
	if cfg.RegistrationSharedSecret == "" {
		t.Error("no registration_shared_secret generated")
	}
	if cfg.EnableRegistration {
		t.Error("registration open without --enable-registration")
	}
	if got := clientURL(cfg); got != "http://127.0.0.1:8008" {
		t.Errorf("client URL %q, want the default port 8008", got)
	}
	if info, err := os.Stat(path); err == nil && runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		t.Errorf("config holding a shared secret has mode %v", info.Mode().Perm())
	}

	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(cancelledContext(), "--generate-config", "--server-name", "other.example", "-c", path)
	if code == 0 {
		t.Fatal("--generate-config overwrote an existing config")
	}
	if !strings.Contains(stderr, path) {
		t.Errorf("refusal does not name the file:\n%s", stderr)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("config changed by the refused --generate-config")
	}
	if after, _ := os.ReadFile(keyPath); string(after) != string(key) {
		t.Error("signing key changed by the refused --generate-config")
	}
	if _, err := os.Stat(filepath.Join(dir, "other.example.signing.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused --generate-config still wrote a key (stat: %v)", err)
	}
}

func TestGenerateConfigOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := generate(t, dir, "example.org", "--port", "18008", "--enable-registration")
	cfg, warnings, err := config.Load(path)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("generated config: err %v, warnings %q", err, warnings)
	}
	if !cfg.EnableRegistration || !cfg.EnableRegistrationWithoutVerification {
		t.Errorf("--enable-registration: enable_registration %v, without verification %v",
			cfg.EnableRegistration, cfg.EnableRegistrationWithoutVerification)
	}
	if got := clientURL(cfg); got != "http://127.0.0.1:18008" {
		t.Errorf("client URL %q, want port 18008", got)
	}

	code, _, stderr := runCmd(cancelledContext(), "--generate-config", "--server-name", "bad name", "-c", filepath.Join(dir, "bad.yaml"))
	if code != 1 || !strings.Contains(stderr, "bad name") {
		t.Errorf("invalid server name: exit %d, stderr %q", code, stderr)
	}
}

// TestInvalidConfig checks that a broken config stops the server before it
// does anything, with one line naming the file and the key.
func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	generated, err := os.ReadFile(generate(t, t.TempDir(), "example.org"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, key string
	}{
		{"missing server_name", `server_name: "example.org"`, ``, "server_name"},
		{"invalid server_name", `server_name: "example.org"`, `server_name: "exa mple.org"`, "server_name"},
		{"bcrypt_rounds out of range", `bcrypt_rounds: 12`, `bcrypt_rounds: 3`, "bcrypt_rounds"},
		{"port not a number", `  - port: 8008`, `  - port: http`, "listeners[0].port"},
		{"bool not a bool", `allow_guest_access: false`, `allow_guest_access: maybe`, "allow_guest_access"},
		{"bad size", `max_upload_size: 50M`, `max_upload_size: 50Q`, "max_upload_size"},
		{"bad log level", `log_level: info`, `log_level: loud`, "log_level"},
		{"bad database", `  name: sqlite3`, `  name: mysql`, "database.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(string(generated), tt.old) {
				t.Fatalf("generated config has no %q", tt.old)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "homeserver.yaml")
			broken := strings.Replace(string(generated), tt.old, tt.new, 1)
			if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCmd(cancelledContext(), "-c", path)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			msg := strings.TrimSuffix(stderr, "\n")
			if msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("stderr is not one line:\n%s", stderr)
			}
			if !strings.Contains(msg, path) || !strings.Contains(msg, tt.key) {
				t.Errorf("stderr %q does not name the file %s and the key %s", msg, path, tt.key)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("the server created files despite the invalid config: %v", entries)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "nope.yaml")
		code, _, stderr := runCmd(cancelledContext(), "-c", path)
		msg := strings.TrimSuffix(stderr, "\n")
		if code != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, path) {
			t.Errorf("exit %d, stderr %q; want 1 and one line naming %s", code, stderr, path)
		}
	})
}

// startServe runs serve on configPath in the background. Cancelling the
// returned function stops it; the channel is closed once serve has
// returned, after which *code holds its result.
func startServe(t *testing.T, configPath string) (cancel context.CancelFunc, stopped <-chan struct{}, code *int, logs *syncBuffer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	code, logs = new(int), new(syncBuffer)
	go func() {
		defer close(done)
		*code = serve(ctx, configPath, processOptions{}, logs)
	}()
	// Also when the test fails half-way: never leave a server running.
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cancel, done, code, logs
}

func TestServeGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	path := generate(t, dir, "example.org", "--port", strconv.Itoa(port), "--enable-registration")
	// Also check the pid file's life cycle.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\npid_file: homeserver.pid\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "homeserver.pid")

	cancel, stopped, code, logs := startServe(t, path)
	baseURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitForVersions(t, baseURL, stopped, logs)

	if pid, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid_file: %q, %v; want %d", pid, err, os.Getpid())
	}
	if got := registerDummy(t, baseURL, "alice", "correct horse"); got != "@alice:example.org" {
		t.Errorf("registered %q, want @alice:example.org", got)
	}
	if status, body := login(t, baseURL, "alice", "correct horse"); status != 200 {
		t.Errorf("login: HTTP %d %v", status, body)
	}

	cancel()
	<-stopped
	if *code != 0 {
		t.Fatalf("serve returned %d after cancellation, want 0; log:\n%s", *code, logs)
	}
	log := logs.String()
	for _, want := range []string{"homeserver running", "shutting down"} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not mention %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "level=ERROR") || strings.Contains(log, "level=WARN") {
		t.Errorf("log has warnings or errors:\n%s", log)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pid_file left behind after shutdown (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "homeserver.db")); err != nil {
		t.Errorf("database: %v", err)
	}
}

func TestServePortInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	path := generate(t, dir, "example.org", "--port", strconv.Itoa(port))
	l, err := listenOn(port)
	if err != nil {
		t.Skipf("could not hold port %d: %v", port, err)
	}
	defer l.Close()

	_, stopped, code, logs := startServe(t, path)
	<-stopped
	if *code != 1 {
		t.Errorf("serve on a busy port returned %d, want 1", *code)
	}
	if log := logs.String(); !strings.Contains(log, "start-up failed") || !strings.Contains(log, strconv.Itoa(port)) {
		t.Errorf("log does not explain the failure:\n%s", log)
	}
}
