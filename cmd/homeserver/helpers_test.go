package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that a server's goroutines may write to while
// the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// runCmd calls run with empty stdin and returns the exit status and output.
func runCmd(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// cancelledContext makes a run that should fail before serving return even
// if, by mistake, it starts a server.
func cancelledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// httpClient has a timeout only so that a hung server fails the test
// instead of hanging it.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// Polling for a starting server: up to maxPolls attempts, pollInterval
// apart. These bound the wait; nothing is asserted about how long it takes.
const (
	maxPolls     = 1200
	pollInterval = 50 * time.Millisecond
)

// waitForVersions polls GET /_matrix/client/versions until it answers 200.
// stopped is closed when the server has exited, which fails the test at
// once; logs is shown on failure.
func waitForVersions(t *testing.T, baseURL string, stopped <-chan struct{}, logs *syncBuffer) {
	t.Helper()
	var lastErr string
	for range maxPolls {
		select {
		case <-stopped:
			t.Fatalf("server exited before answering; log:\n%s", logs)
		default:
		}
		resp, err := httpClient.Get(baseURL + "/_matrix/client/versions")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				var v struct {
					Versions []string `json:"versions"`
				}
				if err := json.Unmarshal(body, &v); err != nil || len(v.Versions) == 0 {
					t.Fatalf("/versions answered %s", body)
				}
				return
			}
			lastErr = "HTTP " + strconv.Itoa(resp.StatusCode) + ": " + string(body)
		} else {
			lastErr = err.Error()
		}
		select {
		case <-stopped:
			t.Fatalf("server exited before answering; log:\n%s", logs)
		case <-time.After(pollInterval):
		}
	}
	t.Fatalf("server never answered /versions (last: %s); log:\n%s", lastErr, logs)
}

// postJSON sends body as JSON and decodes the JSON answer.
func postJSON(t *testing.T, url string, body any) (int, map[string]any) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: HTTP %d, not JSON: %s", url, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// registerDummy registers localpart through the dummy flow and returns the
// user ID.
func registerDummy(t *testing.T, baseURL, localpart, password string) string {
	t.Helper()
	url := baseURL + "/_matrix/client/v3/register"
	body := map[string]any{"username": localpart, "password": password}
	status, first := postJSON(t, url, body)
	session, _ := first["session"].(string)
	if status != http.StatusUnauthorized || session == "" {
		t.Fatalf("first register request: HTTP %d %v, want 401 with a session", status, first)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
	status, second := postJSON(t, url, body)
	if status != http.StatusOK {
		t.Fatalf("register with dummy auth: HTTP %d %v", status, second)
	}
	if tok, _ := second["access_token"].(string); tok == "" {
		t.Errorf("register: no access_token in %v", second)
	}
	userID, _ := second["user_id"].(string)
	return userID
}

// login logs localpart in with a password and returns the HTTP status.
func login(t *testing.T, baseURL, localpart, password string) (int, map[string]any) {
	t.Helper()
	return postJSON(t, baseURL+"/_matrix/client/v3/login", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password":   password,
	})
}

// listenOn binds 127.0.0.1:port.
func listenOn(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}
