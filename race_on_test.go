//go:build race

package dedup_test

// raceDetector is true in a -race build, which runs the crash sweeps on a
// sample: the race detector makes each crash point about 30 times slower.
// CI runs the full sweeps in a build without it.
const raceDetector = true
