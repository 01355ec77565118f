package testutil

import (
	"math/rand/v2"
	"os"
	"slices"
)

// CrashFullEnv set to 1 makes the crash and fault sweeps visit every
// operation instead of a sample.
const CrashFullEnv = "DEDUP_CRASH_FULL"

// SweepPoints returns the operation indexes, out of n, at which a sweep
// crashes or injects a failure: every one if CrashFullEnv is 1 or there are
// at most limit, else a fixed random sample of limit of them (a stride
// could keep hitting the same kind of operation in a repeating pattern).
func SweepPoints(n, limit int) []int {
	if os.Getenv(CrashFullEnv) == "1" {
		limit = n
	}
	limit = min(limit, n)
	points := rand.New(rand.NewPCG(uint64(n), 0)).Perm(n)[:limit]
	slices.Sort(points)
	return points
}
