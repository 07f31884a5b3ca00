//go:build race

// Package racedetect tells tests whether the race detector is on, so that
// the heaviest scale down where it multiplies their cost.
package racedetect

// Enabled is true in binaries built with -race.
const Enabled = true
