//go:build race

package cryptointerop_test

// raceEnabled builds the child go test with -race too.
const raceEnabled = true
