package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"homeserver/config"
	"homeserver/internal/testserver"
)

const testSecret = "test-shared-secret"

// registerCmd runs "homeserver register-user args..." with stdin.
func registerCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"register-user"}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// isAdmin looks the account up on the server; ok is false if it does not
// exist.
func isAdmin(t *testing.T, s *testserver.Server, userID string) (admin, ok bool) {
	t.Helper()
	acc, err := s.Srv.Accounts().GetAccount(context.Background(), userID)
	if err != nil {
		return false, false
	}
	return acc.IsAdmin, true
}

func TestRegisterUser(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")

	t.Run("flags", func(t *testing.T) {
		code, stdout, stderr := registerCmd(t, "", "-u", "bob", "-p", "secret", "--no-admin", s.URL, "-k", testSecret)
		if code != 0 || !strings.Contains(stdout, "Success! Registered @bob:test.local") {
			t.Fatalf("exit %d; stdout %q; stderr %q", code, stdout, stderr)
		}
		if strings.Contains(stdout, "Make admin") {
			t.Errorf("--no-admin still asked: %q", stdout)
		}
		s.Login("bob", "secret")
		if admin, ok := isAdmin(t, s, "@bob:test.local"); !ok || admin {
			t.Errorf("bob: exists %v, admin %v; want a non-admin", ok, admin)
		}
	})

	t.Run("interactive", func(t *testing.T) {
		code, stdout, stderr := registerCmd(t, "carol\npw\npw\nyes\n", s.URL, "-k", testSecret)
		if code != 0 || !strings.Contains(stdout, "Success! Registered @carol:test.local") {
			t.Fatalf("exit %d; stdout %q; stderr %q", code, stdout, stderr)
		}
		for _, q := range []string{"New user localpart: ", "Password: ", "Confirm password: ", "Make admin [no]: "} {
			if !strings.Contains(stdout, q) {
				t.Errorf("stdout does not ask %q: %q", q, stdout)
			}
		}
		if admin, ok := isAdmin(t, s, "@carol:test.local"); !ok || !admin {
			t.Errorf("carol: exists %v, admin %v; want an admin", ok, admin)
		}
		s.Login("carol", "pw")
	})

	t.Run("admin prompt defaults to no at end of input", func(t *testing.T) {
		code, stdout, stderr := registerCmd(t, "heidi\npw\npw\n", s.URL, "-k", testSecret)
		if code != 0 {
			t.Fatalf("exit %d; stdout %q; stderr %q", code, stdout, stderr)
		}
		if admin, ok := isAdmin(t, s, "@heidi:test.local"); !ok || admin {
			t.Errorf("heidi: exists %v, admin %v; want a non-admin", ok, admin)
		}
	})

	t.Run("-a", func(t *testing.T) {
		code, stdout, stderr := registerCmd(t, "", "-u", "ivan", "-p", "pw", "-a", "-k", testSecret, s.URL)
		if code != 0 {
			t.Fatalf("exit %d; stdout %q; stderr %q", code, stdout, stderr)
		}
		if admin, ok := isAdmin(t, s, "@ivan:test.local"); !ok || !admin {
			t.Errorf("ivan: exists %v, admin %v; want an admin", ok, admin)
		}
	})

	t.Run("password mismatch", func(t *testing.T) {
		code, stdout, stderr := registerCmd(t, "dave\npw\nother\n", s.URL, "-k", testSecret)
		if code != 1 || !strings.Contains(stderr, "passwords do not match") {
			t.Errorf("exit %d; stdout %q; stderr %q; want 1 and a mismatch", code, stdout, stderr)
		}
		if _, ok := isAdmin(t, s, "@dave:test.local"); ok {
			t.Error("dave was registered despite the mismatch")
		}
	})

	t.Run("no localpart", func(t *testing.T) {
		code, _, stderr := registerCmd(t, "", "-p", "pw", "--no-admin", s.URL, "-k", testSecret)
		if code != 1 || !strings.Contains(stderr, "localpart is required") {
			t.Errorf("exit %d; stderr %q", code, stderr)
		}
	})

	t.Run("wrong shared secret", func(t *testing.T) {
		code, stdout, stderr := registerCmd(t, "", "-u", "eve", "-p", "pw", "--no-admin", s.URL, "-k", "not-the-secret")
		if code != 1 || !strings.Contains(stderr, "HMAC") {
			t.Errorf("exit %d; stdout %q; stderr %q; want 1 and an HMAC error", code, stdout, stderr)
		}
		if _, ok := isAdmin(t, s, "@eve:test.local"); ok {
			t.Error("eve was registered with a wrong secret")
		}
	})

	t.Run("existing user", func(t *testing.T) {
		args := []string{"-u", "frank", "-p", "pw", "--no-admin", s.URL, "-k", testSecret}
		if code, _, stderr := registerCmd(t, "", args...); code != 0 {
			t.Fatalf("first registration: exit %d; stderr %q", code, stderr)
		}
		code, _, stderr := registerCmd(t, "", args...)
		if code != 1 || !strings.Contains(stderr, "M_USER_IN_USE") {
			t.Errorf("again without --exists-ok: exit %d; stderr %q; want 1 and M_USER_IN_USE", code, stderr)
		}
		code, stdout, stderr := registerCmd(t, "", append([]string{"--exists-ok"}, args...)...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "already exists") {
			t.Errorf("again with --exists-ok: exit %d; stdout %q; stderr %q; want 0", code, stdout, stderr)
		}
	})

	t.Run("--exists-ok does not hide other errors", func(t *testing.T) {
		code, _, stderr := registerCmd(t, "", "--exists-ok", "-u", "bob", "-p", "pw", "--no-admin", s.URL, "-k", "not-the-secret")
		if code != 1 || !strings.Contains(stderr, "HMAC") {
			t.Errorf("exit %d; stderr %q; want 1 and an HMAC error", code, stderr)
		}
	})

	t.Run("config file", func(t *testing.T) {
		path := writeClientConfig(t, s, "registration_shared_secret: "+testSecret+"\n")
		code, stdout, stderr := registerCmd(t, "", "-c", path, "-u", "judy", "-p", "pw", "--admin")
		if code != 0 || !strings.Contains(stdout, "@judy:test.local") {
			t.Fatalf("exit %d; stdout %q; stderr %q", code, stdout, stderr)
		}
		if admin, ok := isAdmin(t, s, "@judy:test.local"); !ok || !admin {
			t.Errorf("judy: exists %v, admin %v; want an admin", ok, admin)
		}
	})

	t.Run("config file without secret", func(t *testing.T) {
		path := writeClientConfig(t, s, "")
		code, _, stderr := registerCmd(t, "", "-c", path, "-u", "mallory", "-p", "pw", "--no-admin")
		if code != 1 || !strings.Contains(stderr, "registration_shared_secret") {
			t.Errorf("exit %d; stderr %q; want 1 and a missing secret", code, stderr)
		}
		// --shared-secret makes up for it.
		code, _, stderr = registerCmd(t, "", "-c", path, "-u", "mallory", "-p", "pw", "--no-admin", "--shared-secret", testSecret)
		if code != 0 {
			t.Errorf("with --shared-secret: exit %d; stderr %q", code, stderr)
		}
	})
}

// writeClientConfig writes a config whose client listener is s's port, so
// that register-user -c finds s.
func writeClientConfig(t *testing.T, s *testserver.Server, extra string) string {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`server_name: test.local
listeners:
  - port: %s
    bind_addresses: ["0.0.0.0"]
    type: http
    resources:
      - names: [client]
signing_key_path: test.local.signing.key
%s`, u.Port(), extra)
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRegisterUserUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"too many arguments", []string{"-k", "x", "http://a", "http://b"}, 2, "too many arguments"},
		{"unknown flag", []string{"--nope"}, 2, "nope"},
		{"help", []string{"-h"}, 0, "usage:"},
		{"no secret", []string{"-u", "a", "-p", "b", "http://127.0.0.1:1"}, 1, "--shared-secret"},
		{"bad config", []string{"-c", filepath.Join(t.TempDir(), "missing.yaml")}, 1, "missing.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := registerCmd(t, "", tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

// cancelOnWrite cancels a context as soon as the text written to it
// contains a marker: here, when a prompt has been shown.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.marker) {
		w.cancel()
	}
	return n, err
}

// TestRegisterUserInterrupted checks that cancelling the context (Ctrl-C,
// in main) abandons a prompt that is waiting for input.
func TestRegisterUserInterrupted(t *testing.T) {
	t.Parallel()
	for _, marker := range []string{"New user localpart: ", "Password: ", "Make admin [no]: "} {
		t.Run(marker, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Input up to the marked prompt, then nothing, ever.
			stdinR, stdinW := io.Pipe()
			t.Cleanup(func() { stdinW.Close() }) // lets the abandoned read finish
			go func() {
				switch marker {
				case "Password: ":
					io.WriteString(stdinW, "grace\n")
				case "Make admin [no]: ":
					io.WriteString(stdinW, "grace\npw\npw\n")
				}
			}()
			out := &cancelOnWrite{marker: marker, cancel: cancel}
			var errOut bytes.Buffer
			code := run(ctx, []string{"register-user", "-k", testSecret, "http://127.0.0.1:1"}, stdinR, out, &errOut)
			if code != 1 || !strings.Contains(errOut.String(), "interrupted") {
				t.Errorf("exit %d, stderr %q; want 1 and interrupted", code, errOut.String())
			}
			if !errors.Is(ctx.Err(), context.Canceled) {
				t.Errorf("the prompt %q was never shown", marker)
			}
		})
	}
}

func TestClientURL(t *testing.T) {
	t.Parallel()
	client := []config.Resource{{Names: []string{"client", "federation"}}}
	tests := []struct {
		name      string
		listeners []config.Listener
		want      string
	}{
		{"loopback", []config.Listener{{Port: 8008, BindAddresses: []string{"127.0.0.1"}, Type: "http", Resources: client}}, "http://127.0.0.1:8008"},
		{"no bind address", []config.Listener{{Port: 8008, Type: "http", Resources: client}}, "http://127.0.0.1:8008"},
		{"all IPv4", []config.Listener{{Port: 8008, BindAddresses: []string{"0.0.0.0"}, Type: "http", Resources: client}}, "http://127.0.0.1:8008"},
		{"all IPv6", []config.Listener{{Port: 8008, BindAddresses: []string{"::"}, Type: "http", Resources: client}}, "http://[::1]:8008"},
		{"all IPv6, long form", []config.Listener{{Port: 8008, BindAddresses: []string{"0:0:0:0:0:0:0:0"}, Type: "http", Resources: client}}, "http://[::1]:8008"},
		{"all, IPv6 first", []config.Listener{{Port: 8008, BindAddresses: []string{"::", "0.0.0.0"}, Type: "http", Resources: client}}, "http://[::1]:8008"},
		{"IPv6 loopback", []config.Listener{{Port: 8008, BindAddresses: []string{"::1"}, Type: "http", Resources: client}}, "http://[::1]:8008"},
		{"specific address", []config.Listener{{Port: 8008, BindAddresses: []string{"192.0.2.7"}, Type: "http", Resources: client}}, "http://192.0.2.7:8008"},
		{"tls", []config.Listener{{Port: 8448, BindAddresses: []string{"127.0.0.1"}, Type: "http", TLS: true, Resources: client}}, "https://127.0.0.1:8448"},
		{"first client listener wins", []config.Listener{
			{Port: 8448, BindAddresses: []string{"127.0.0.1"}, Type: "http", Resources: []config.Resource{{Names: []string{"federation"}}}},
			{Port: 8008, BindAddresses: []string{"127.0.0.1"}, Type: "http", Resources: []config.Resource{{Names: []string{"media"}}, {Names: []string{"client"}}}},
			{Port: 8009, BindAddresses: []string{"127.0.0.1"}, Type: "http", Resources: client},
		}, "http://127.0.0.1:8008"},
		{"metrics listeners skipped", []config.Listener{
			{Port: 9000, BindAddresses: []string{"127.0.0.1"}, Type: "metrics", Resources: client},
			{Port: 8008, BindAddresses: []string{"127.0.0.1"}, Type: "http", Resources: client},
		}, "http://127.0.0.1:8008"},
		{"no client listener", []config.Listener{
			{Port: 9000, BindAddresses: []string{"127.0.0.1"}, Type: "metrics"},
			{Port: 8448, BindAddresses: []string{"127.0.0.1"}, Type: "http", Resources: []config.Resource{{Names: []string{"federation"}}}},
		}, ""},
		{"no listeners", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clientURL(&config.Config{Listeners: tt.listeners}); got != tt.want {
				t.Errorf("clientURL = %q, want %q", got, tt.want)
			}
		})
	}
}
