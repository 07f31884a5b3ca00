package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"homeserver/internal/testserver"
)

// TestSmoke runs the send, register and sliding-sync scenarios, tiny, against the real
// server started in-process (its rate limits are off).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	srv := testserver.Start(t, "")
	for _, args := range [][]string{
		{"-hs", srv.URL, "-q", "-json", "-send-users", "2", "-send-messages", "3", "-send-concurrency", "2", "-register-count", "2", "-register-concurrency", "2", "send", "register"},
		{"-hs", srv.URL, "-q", "-json", "-shared-secret", "test-shared-secret", "-register-count", "2", "register"},
		{"-hs", srv.URL, "-q", "-json", "-shared-secret", "test-shared-secret", "-sliding-rooms", "3", "-sliding-events", "1", "sliding-sync"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("hsbench %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, &stdout, &stderr)
		}
		results := map[string]Result{}
		for _, line := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(line, "{") {
				var r Result
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatal(err)
				}
				results[r.Scenario] = r
			}
		}
		if r, ok := results["send"]; ok {
			if r.Events != 2*2*3 {
				t.Errorf("send handled %d events, want 12", r.Events)
			}
			if !strings.Contains(stdout.String(), "| one room: events/s |") {
				t.Errorf("no send table in:\n%s", &stdout)
			}
		}
		if r, ok := results["sliding-sync"]; ok && r.Events != 20 {
			t.Errorf("sliding-sync: %d updates, want 20 (%s)", r.Events, &stdout)
		}
		if r, ok := results["register"]; ok && r.Events != 2 {
			t.Errorf("register: %d registrations, want 2 (%s)", r.Events, &stdout)
		}
	}
}

// TestMeasuredNothingFails: a scenario that cannot reach a server fails.
func TestUnreachableFails(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-hs", "http://127.0.0.1:1", "-q", "-register-count", "1", "register"}, &stdout, &stderr); code == 0 {
		t.Fatalf("exit 0 against no server:\n%s", &stdout)
	}
}

// TestSmokeCluster runs send and sync-wake against two processes of one
// homeserver: tokens spread over both, so a send through one process must
// wake long-polls held by the other.
func TestSmokeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	c := testserver.NewCluster(t, "")
	a, b := c.Start("a"), c.Start("b")
	args := []string{"-hs", a.URL + "," + b.URL, "-q", "-json", "-send-users", "4", "-send-messages", "2", "-send-concurrency", "2",
		"-wake-members", "4", "-wake-sends", "3", "send", "sync-wake"}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("hsbench %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, &stdout, &stderr)
	}
	for _, want := range []string{"| one room: events/s |", "sync-wake"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %q in:\n%s", want, &stdout)
		}
	}
}

// TestTokensStick: one token always goes to the same process, tokenless
// requests to the first, and the tokens spread over all of them.
func TestTokensStick(t *testing.T) {
	c := NewClient("http://a/, http://b,http://c", "")
	if len(c.Bases) != 3 || c.base("") != "http://a" {
		t.Fatalf("bases %v, tokenless to %s", c.Bases, c.base(""))
	}
	seen := map[string]bool{}
	for i := range 60 {
		tok := fmt.Sprintf("token%d", i)
		if c.base(tok) != c.base(tok) {
			t.Fatalf("token %s moves between processes", tok)
		}
		seen[c.base(tok)] = true
	}
	if len(seen) != 3 {
		t.Errorf("60 tokens went to %d of 3 processes", len(seen))
	}
}
