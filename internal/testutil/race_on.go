//go:build race

package testutil

// Race is true in a -race build, which runs the crash sweeps on a sample:
// the race detector makes each crash point many times slower. CI runs the
// full sweeps in a build without it.
const Race = true
