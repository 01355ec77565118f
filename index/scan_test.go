package index

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scanSteps scans ix at now in steps of at most keys keys, as the store
// does, and returns what each step yielded.
func scanSteps(t *testing.T, ix *Index, all bool, keys int) [][]Mark {
	t.Helper()
	var steps [][]Mark
	var after []byte
	for {
		var step []Mark
		last, err := ix.Scan(testNow, all, after, keys, func(m Mark) bool {
			step = append(step, m)
			return true
		})
		require.NoError(t, err)
		steps = append(steps, step)
		if last == nil {
			return steps
		}
		require.Positive(t, bytes.Compare(last, after), "a step moves on")
		after = last
	}
}

// TestScanInStepsYieldsAsOneScan checks that scanning in steps of a few
// keys yields the same versions, in the same order, as one scan, with
// versions in Pebble, a frozen memtable and the active one, in two
// generations, superseded and forgotten, and that no step yields more
// keys than it is given.
func TestScanInStepsYieldsAsOneScan(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	var lsn uint64
	apply := func(b *Batch) { lsn++; ix.Apply(b, lsn) }
	apply(markBatch(ix, generationMarks(6, time.Hour, time.Minute)...))
	checkpointIndex(t, ix)
	apply(markBatch(ix, generationMarks(3, 2*time.Hour)...))
	apply(forgetBatch("1h0m0s-1", "1m0s-2"))
	apply(markBatch(ix, mark{id: "1h0m0s-1", ttl: 10 * time.Second, value: "again"}))
	apply(forgetBatch("1h0m0s-4"))
	// Re-marked under the key of its version in Pebble.
	apply(markBatch(ix, mark{id: "1h0m0s-4", ttl: time.Hour}))
	// Stays frozen: its versions are in no table yet.
	ix.Freeze(testNow)
	apply(forgetBatch("1h0m0s-3", "2h0m0s-0", "unknown"))
	apply(markBatch(ix, mark{id: "1h0m0s-1", ttl: 2 * time.Hour}, mark{id: "new", ttl: time.Hour}))

	for _, all := range []bool{false, true} {
		one := scanSteps(t, ix, all, 1<<20)
		require.Len(t, one, 1, "all in one step")
		want := one[0]
		require.NotEmpty(t, want)
		for i := 1; i < len(want); i++ {
			a, b := want[i-1], want[i]
			assert.LessOrEqual(t, compareKey(a.Entry.Gen, a.ID, append(b.Entry.Gen.Append(nil), b.ID...)), 0, "%s before %s: in key order", a.ID, b.ID)
		}
		ids := map[string]int{}
		for _, m := range want {
			if m.Live {
				ids[string(m.ID)]++
			}
		}
		for id, n := range ids {
			assert.Equal(t, 1, n, "%s live once", id)
		}
		for _, keys := range []int{1, 2, 3, 7} {
			t.Run(fmt.Sprintf("all=%v keys=%d", all, keys), func(t *testing.T) {
				var got []Mark
				for _, step := range scanSteps(t, ix, all, keys) {
					distinct := map[string]bool{}
					for _, m := range step {
						distinct[string(m.ID)] = true
					}
					assert.LessOrEqual(t, len(distinct), keys, "IDs in one step")
					got = append(got, step...)
				}
				assert.Equal(t, want, got)
			})
		}
	}
}
