//go:build race

package fedinterop_test

// raceEnabled builds the child go test with -race too.
const raceEnabled = true
