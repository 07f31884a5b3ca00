//go:build !goolm

package cryptointerop_test

import (
	"embed"
	"testing"

	// The child links the server and mautrix; linking them here too makes
	// this binary's build ID, and so go test's cached result, change with
	// them.
	_ "maunium.net/go/mautrix"

	"homeserver/internal/childtest"
)

//go:embed *.go
var childSources embed.FS

// TestGoolmInterop runs this package's goolm-tagged tests in a child
// `go test -tags goolm`, so that plain `go test ./...` runs them without
// libolm.
func TestGoolmInterop(t *testing.T) {
	childtest.Run(t, childtest.Options{Tag: "goolm", Sources: childSources, Race: raceEnabled})
}
