//go:build !fedinterop

package fedinterop_test

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

// TestMautrixFederation runs this package's fedinterop-tagged tests in a
// child `go test` with Go's experimental encoding/json/v2, which
// mautrix-go's PDU code needs.
func TestMautrixFederation(t *testing.T) {
	childtest.Run(t, childtest.Options{Tag: "fedinterop", Env: []string{"GOEXPERIMENT=jsonv2"}, Sources: childSources})
}
