//go:build unix

package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinarySIGTERM builds the real command and checks that SIGTERM makes a
// running server shut down gracefully and exit 0.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build with: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "homeserver")
	build := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A safety net against a hung process, not a measured limit.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	port := freePort(t)
	path := filepath.Join(dir, "homeserver.yaml")
	gen := exec.CommandContext(ctx, bin, "--generate-config", "--server-name", "example.org",
		"-c", path, "--port", strconv.Itoa(port), "--report-stats", "no")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("--generate-config: %v\n%s", err, out)
	}

	logs := new(syncBuffer)
	cmd := exec.CommandContext(ctx, bin, "-c", path)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	var waitErr error
	go func() {
		defer close(stopped)
		waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		// Only if the test failed before the process ended: do not leave it
		// running.
		select {
		case <-stopped:
		default:
			_ = cmd.Process.Kill()
			<-stopped
		}
	})

	waitForVersions(t, fmt.Sprintf("http://127.0.0.1:%d", port), stopped, logs)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-stopped
	if waitErr != nil {
		t.Fatalf("after SIGTERM: %v (context: %v); log:\n%s", waitErr, ctx.Err(), logs)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d, want 0; log:\n%s", code, logs)
	}
	if log := logs.String(); !strings.Contains(log, "shutting down") {
		t.Errorf("log does not mention shutting down:\n%s", log)
	}
}
