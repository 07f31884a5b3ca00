// Package jsinterop_test drives the homeserver with matrix-js-sdk under
// Node: real third-party client code, as Element Web runs it. The SDK is
// installed from the pinned lock file into the user's cache directory on
// first use; without node and npm, or without the registry, the tests
// skip.
package jsinterop_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// sdkDir returns a directory holding js/ and its installed packages.
func sdkDir(t *testing.T) string {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNPM := exec.LookPath("npm")
	if errNode != nil || errNPM != nil {
		t.Skip("node and npm are needed for matrix-js-sdk")
	}
	_ = node
	lock, err := os.ReadFile("js/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "homeserver-jsinterop", hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk", "package.json")); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"package.json", "package-lock.json"} {
			copyFile(t, filepath.Join("js", f), filepath.Join(dir, f))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("installing matrix-js-sdk (npm ci): %v\n%s", err, out)
		}
	}
	// The scripts are copied each time: they live beside their packages.
	entries, err := os.ReadDir("js")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".mjs") {
			copyFile(t, filepath.Join("js", e.Name()), filepath.Join(dir, e.Name()))
		}
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runScript runs a script of js/ with env, and returns what it reported
// on its RESULT line ("OK", or "FAIL" and why).
func runScript(t *testing.T, dir, script string, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out.String())
	}
	result := "FAIL: no RESULT line"
	for _, line := range strings.Split(out.String(), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			result = r
		}
	}
	if result != "OK" {
		t.Logf("node %s said:\n%s", script, out.String())
	}
	return result
}

// matrix-js-sdk's sliding sync (the MSC4186 client Element Web uses) lists
// the user's rooms, names them, and gets a message sent meanwhile.
func TestMatrixJSSDKSlidingSync(t *testing.T) {
	dir := sdkDir(t)
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw-alice-123")
	bob := s.Register("bob", "pw-bob-12345")
	var rooms []string
	for _, name := range []string{"first", "second", "third"} {
		id := s.CreateRoom(bob, map[string]any{"name": name, "preset": "public_chat"})
		s.Join(alice, id)
		s.SendText(bob, id, "hello "+name)
		rooms = append(rooms, id)
	}
	got := runScript(t, dir, "slidingsync.mjs", map[string]string{
		"HS_URL": s.URL, "ALICE_ID": alice.ID, "ALICE_TOKEN": alice.Token, "ALICE_DEVICE": alice.DeviceID,
		"BOB_TOKEN": bob.Token, "ROOMS": strings.Join(rooms, ","),
	})
	if got != "OK" {
		t.Fatal(got)
	}
}
