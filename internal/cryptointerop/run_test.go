//go:build !goolm

package cryptointerop_test

import (
	"bytes"
	"context"
	"embed"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	// The child links the server and mautrix; linking them here too makes
	// this binary's build ID, and so go test's cached result, change with
	// them (see childSources).
	_ "maunium.net/go/mautrix"

	"homeserver/internal/testserver"
)

// childSources are the files the child compiles. go test caches a passing
// result by test binary and by the files and environment variables the test
// read; the goolm files are not compiled into this binary, so without
// embedding them an edit to them would be answered by a stale cached "ok".
//
//go:embed *.go
var childSources embed.FS

// TestGoolmInterop runs this package's goolm-tagged tests in a child
// `go test -tags goolm`, so that plain `go test ./...` runs them without
// libolm.
func TestGoolmInterop(t *testing.T) {
	// Read here, the variable that moves the child's servers to PostgreSQL
	// becomes part of go test's cache key for this test.
	if dsn := os.Getenv(testserver.PostgresEnv); dsn != "" {
		t.Logf("child tests run on PostgreSQL (%s is set)", testserver.PostgresEnv)
	}
	requireGoolmTests(t)

	args := []string{"test", "-tags", "goolm", "-count=1"}
	if raceEnabled {
		args = append(args, "-race")
	}
	if testing.Verbose() {
		args = append(args, "-v")
	}
	if testing.Short() {
		args = append(args, "-short")
	}
	ctx := context.Background()
	if deadline, ok := t.Deadline(); ok {
		// The child's own -timeout ends first, so that a hung child test
		// panics with its goroutine dump and we report it before our own
		// deadline panics. -timeout does not cover the child's build, so
		// the command itself is killed a little later still.
		remaining := time.Until(deadline)
		margin := max(remaining/10, 5*time.Second)
		if remaining <= 2*margin {
			t.Fatalf("only %v left before the test deadline: not enough for the child go test", remaining)
		}
		args = append(args, "-timeout="+(remaining-margin).Truncate(time.Second).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-margin/2))
		defer cancel()
	} else {
		args = append(args, "-timeout=0")
	}
	args = append(args, "-run", ".", ".")

	goTool := findGo(t)
	out := &lineLogger{t: t, live: testing.Verbose()}
	// The working directory of a test is its package directory, which is
	// what "." names; the environment (HOMESERVER_TEST_POSTGRES, GOFLAGS,
	// ...) is inherited.
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// If the go command is killed, a test binary it started may still hold
	// the pipes open; do not wait for it forever.
	cmd.WaitDelay = 10 * time.Second
	t.Logf("running %s %s", goTool, strings.Join(args, " "))
	err := cmd.Run()
	out.flush()
	output := out.String()
	switch {
	case err != nil && testing.Verbose():
		t.Fatalf("go test -tags goolm failed: %v (its output is above)", err)
	case err != nil:
		t.Fatalf("go test -tags goolm failed: %v\n%s", err, output)
	case strings.Contains(output, "[no tests to run]") || strings.Contains(output, "no test files"):
		// An ok without tests would prove nothing.
		t.Fatalf("go test -tags goolm ran no tests:\n%s", output)
	}
}

// requireGoolmTests fails unless some file of the package is built only with
// the goolm tag: without one the child would pass without testing anything.
func requireGoolmTests(t *testing.T) {
	t.Helper()
	names, err := fs.Glob(childSources, "*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		src, err := childSources.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(src, []byte("//go:build goolm\n")) {
			return
		}
	}
	t.Fatalf("no test file of this package has //go:build goolm among %v", names)
}

// findGo returns the go command of the toolchain that built this test
// binary, so that the child builds with the same Go version; PATH is the
// fallback. Without any, the test fails: skipping would silently drop the
// interoperability tests.
func findGo(t *testing.T) string {
	t.Helper()
	exe := "go"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	// runtime.GOROOT is deprecated because a binary may be copied to another
	// machine; a test binary is built by go test where it runs, so the
	// build-time root (or $GOROOT) is the toolchain running us.
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", exe)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot find the go command to run the goolm tests: %v", err)
	}
	return p
}

// lineLogger collects the child's output and, when live, passes each line to
// t.Log as it arrives: a verbose run then shows progress, and the child's
// "=== RUN"/"--- PASS" lines stay indented under this test instead of being
// taken for this binary's own by go test -json.
type lineLogger struct {
	t    *testing.T
	live bool

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	if l.live {
		l.partial = append(l.partial, p...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			l.t.Log(string(l.partial[:i]))
			l.partial = l.partial[i+1:]
		}
	}
	return len(p), nil
}

// flush logs a last line that had no newline.
func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live && len(l.partial) > 0 {
		l.t.Log(string(l.partial))
		l.partial = nil
	}
}

func (l *lineLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}
