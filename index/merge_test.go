package index

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/ttl"
)

// TestMergeChains checks that a checkpoint merges a generation's chain of
// filters into one that still covers every mark: those in Pebble, and
// those added while the merge ran, before and after its Pebble scan. A
// chain that a drop or more marks overtook stays as it is.
func TestMergeChains(t *testing.T) {
	const d = time.Hour
	g := ttl.GenOf(d, ttl.DeadlineOf(testNow, d))
	ids := func(prefix string, n int) []mark {
		ms := make([]mark, n)
		for i := range ms {
			ms[i] = mark{id: fmt.Sprintf("%s-%d", prefix, i), ttl: d}
		}
		return ms
	}
	tests := []struct {
		name string
		// during adds marks while the merge runs: before its scan, and
		// between its scan and its end.
		beforeScan, afterScan int
		drop                  bool // the generation is dropped meanwhile
		merged                bool // one filter at the end
	}{
		{name: "quiet", merged: true},
		{name: "marks added meanwhile", beforeScan: 300, afterScan: 300, merged: true},
		{name: "more marks than the merged filter holds", beforeScan: 3000, afterScan: 3000, merged: false},
		{name: "generation dropped", beforeScan: 10, drop: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := vfs.NewMem()
			ix, closeIndex := openIndex(t, testOptions(fs)) // ExpectedMarks 1000
			lsn := uint64(0)
			apply := func(ms []mark) {
				lsn++
				ix.Apply(markBatch(ix, ms...), lsn)
			}
			first := ids("first", 2500) // a chain of 1000, 2000
			apply(first[:1200])
			checkpointIndex(t, ix)
			apply(first[1200:])
			require.Len(t, ix.filters[g].filters, 2)

			f := ix.Freeze(testNow)
			require.True(t, f.Merging())
			require.NoError(t, ix.Persist(f))
			ix.EndCheckpoint(f)
			before, after := ids("before", tt.beforeScan), ids("after", tt.afterScan)
			apply(before)
			require.NoError(t, ix.MergeChains(f))
			apply(after)
			if tt.drop {
				ix.dropGen(g)
			}
			ix.EndMerges(f)
			if tt.drop {
				assert.Nil(t, ix.filters[g])
				return
			}

			gf := ix.filters[g]
			if tt.merged {
				assert.Len(t, gf.filters, 1, "merged")
			} else {
				assert.Greater(t, len(gf.filters), 1, "a chain outgrew its merge: kept")
			}
			assert.Nil(t, gf.added, "recording stopped")
			all := append(append(first, before...), after...)
			assert.Equal(t, uint(len(all)), gf.marks)
			checkCovered := func(ix *Index) {
				t.Helper()
				for _, m := range all {
					if !ix.MayHold(ix.Key([]byte(m.id))) {
						assert.Failf(t, "false negative", "the filter misses %q", m.id)
						return
					}
				}
			}
			checkCovered(ix)
			// More marks after the merge go to the merged filter, or grow
			// a chain from it; a checkpoint snapshots it for the next Open.
			more := ids("more", 500)
			apply(more)
			all = append(all, more...)
			checkCovered(ix)
			checkpointIndex(t, ix)
			c, err := ix.Verify(testNow)
			require.NoError(t, err)
			assert.Equal(t, uint64(len(all)), c.Keys)
			assert.Empty(t, c.Uncovered)
			closeIndex()

			ix, _ = openIndex(t, testOptions(fs))
			checkCovered(ix)
			assert.Equal(t, uint(len(all)), ix.filters[g].marks)
		})
	}
}

// TestExtensionsDuringMergeStayCovered extends, while a merge of a chain
// runs, marks of a shorter generation into the chain's. At a high
// false-positive rate the chain tests positive for many of them, so they
// take no filter room; the merged filter must cover them all the same, or
// they read as new once their first generation ends.
func TestExtensionsDuringMergeStayCovered(t *testing.T) {
	const long, short = 2 * time.Hour, 10 * time.Minute
	opts := testOptions(vfs.NewMem())
	opts.FalsePositiveRate = 0.3
	ix, _ := openIndex(t, opts)
	lsn := uint64(0)
	apply := func(b *Batch) {
		lsn++
		ix.Apply(b, lsn)
	}
	var first, extended []mark
	for i := range 2500 {
		first = append(first, mark{id: fmt.Sprintf("first-%d", i), ttl: long})
	}
	for i := range 400 {
		extended = append(extended, mark{id: fmt.Sprintf("extended-%d", i), ttl: short})
	}
	apply(markBatch(ix, first[:1200]...))
	checkpointIndex(t, ix)
	apply(markBatch(ix, first[1200:]...)) // a chain of two filters
	apply(markBatch(ix, extended...))

	f := ix.Freeze(testNow)
	require.True(t, f.Merging())
	require.NoError(t, ix.Persist(f))
	ix.EndCheckpoint(f)
	var b Batch
	d := ttl.DeadlineOf(testNow, long)
	g := ttl.GenOf(long, d)
	positive := 0
	for _, m := range extended {
		k := ix.Key([]byte(m.id))
		if ix.filters[g].test(k.hash) {
			positive++
		}
		b.Extend(k, g, d, nil)
	}
	require.Positive(t, positive, "the chain must test positive for some extensions")
	apply(&b)
	require.NoError(t, ix.MergeChains(f))
	ix.EndMerges(f)
	require.Len(t, ix.filters[g].filters, 1, "merged")

	later := testNow.Add(2 * short) // the short generation has ended
	var asNew []string
	for _, m := range extended {
		if _, live := lookup(t, ix, m.id, later); !live {
			asNew = append(asNew, m.id)
		}
	}
	assert.Empty(t, asNew, "extended into the merged generation, yet new (%d of which the chain tested positive for)", positive)
}

// TestFailedMergeKeepsChain fails every read while a merge reads Pebble
// back: MergeChains reports it, and EndMerges leaves the chain, which
// still covers every mark, and stops recording.
func TestFailedMergeKeepsChain(t *testing.T) {
	fail := &readToggle{}
	opts := testOptions(errorfs.Wrap(vfs.NewMem(), fail))
	ix, _ := openIndex(t, opts)
	var b Batch
	g := ttl.GenOf(time.Hour, ttl.DeadlineOf(testNow, time.Hour))
	for i := range 3000 {
		b.Mark(ix.Key(fmt.Appendf(nil, "id-%d", i)), g, ttl.DeadlineOf(testNow, time.Hour), nil)
	}
	ix.Apply(&b, 1)
	f := ix.Freeze(testNow)
	require.True(t, f.Merging())
	require.NoError(t, ix.Persist(f))
	ix.EndCheckpoint(f)

	fail.on.Store(true)
	err := ix.MergeChains(f)
	fail.on.Store(false)
	require.ErrorIs(t, err, errorfs.ErrInjected)
	ix.EndMerges(f)
	gf := ix.filters[g]
	assert.Greater(t, len(gf.filters), 1, "the chain stays")
	assert.Nil(t, gf.added, "recording stopped")
	for _, op := range b.Ops {
		if !ix.MayHold(ix.Key(op.ID)) {
			assert.Failf(t, "false negative", "the chain misses %q", op.ID)
			return
		}
	}
}

// readToggle fails every file read while on.
type readToggle struct{ on atomic.Bool }

func (r *readToggle) String() string { return "readToggle" }

func (r *readToggle) MaybeError(op errorfs.Op) error {
	if r.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsRead {
		return errorfs.ErrInjected
	}
	return nil
}
