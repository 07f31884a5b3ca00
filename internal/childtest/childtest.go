// Package childtest runs a package's build-tagged tests in a child
// `go test`, for tests that need what a plain `go test ./...` cannot give
// them (a build tag, an experiment of the toolchain), so that they still
// run with everything else.
package childtest

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// Options of Run.
type Options struct {
	// Tag is the build tag of the child's tests; some *_test.go file of
	// Sources must start with "//go:build <Tag>".
	Tag string
	// Env is added to the child's environment (e.g. GOEXPERIMENT=...).
	Env []string
	// Sources are the package's files, embedded by the caller, so that go
	// test's cache notices edits to the tagged files, which the parent
	// binary does not compile.
	Sources fs.FS
	// Race builds the child with -race (pass the parent's race setting).
	Race bool
}

// Run runs `go test -tags <Tag> .` in the caller's package directory and
// fails t if it fails or runs no test.
func Run(t *testing.T, o Options) {
	t.Helper()
	// Read here, the variable that moves the child's servers to PostgreSQL
	// becomes part of go test's cache key.
	if dsn := os.Getenv(testserver.PostgresEnv); dsn != "" {
		t.Logf("child tests run on PostgreSQL (%s is set)", testserver.PostgresEnv)
	}
	requireTagged(t, o)
	args := []string{"test", "-tags", o.Tag, "-count=1"}
	if o.Race {
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
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.Stdout, cmd.Stderr = out, out
	// If the go command is killed, a test binary it started may still hold
	// the pipes open; do not wait for it forever.
	cmd.WaitDelay = 10 * time.Second
	t.Logf("running %s %s %s", strings.Join(o.Env, " "), goTool, strings.Join(args, " "))
	err := cmd.Run()
	out.flush()
	output := out.String()
	switch {
	case err != nil && testing.Verbose():
		t.Fatalf("go test -tags %s failed: %v (its output is above)", o.Tag, err)
	case err != nil:
		t.Fatalf("go test -tags %s failed: %v\n%s", o.Tag, err, output)
	case strings.Contains(output, "[no tests to run]") || strings.Contains(output, "no test files"):
		// An ok without tests would prove nothing.
		t.Fatalf("go test -tags %s ran no tests:\n%s", o.Tag, output)
	}
}

// requireTagged fails unless some test file is built only with the tag:
// without one the child would pass without testing anything.
func requireTagged(t *testing.T, o Options) {
	t.Helper()
	names, err := fs.Glob(o.Sources, "*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		src, err := fs.ReadFile(o.Sources, name)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(src, []byte("//go:build "+o.Tag+"\n")) {
			return
		}
	}
	t.Fatalf("no test file of this package has //go:build %s among %v", o.Tag, names)
}

// findGo returns the go command of the toolchain that built this test
// binary, so that the child builds with the same Go version; PATH is the
// fallback. Without any, the test fails: skipping would silently drop the
// child's tests.
func findGo(t *testing.T) string {
	t.Helper()
	exe := "go"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	// runtime.GOROOT is deprecated because a binary may be copied to another
	// machine; a test binary is built by go test where it runs.
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", exe)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot find the go command to run the child tests: %v", err)
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
