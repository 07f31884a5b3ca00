//go:build !race

package cryptointerop_test

// raceEnabled tells TestGoolmInterop to build its child with -race too.
const raceEnabled = false
