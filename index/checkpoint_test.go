package index

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/ttl"
)

// benchIndex is an index for a benchmark, with a source of new random
// 16-byte IDs marked in one generation of a 24 h TTL.
type benchIndex struct {
	*Index
	gen      ttl.Gen
	deadline ttl.Deadline
	rng      *rand.Rand
}

// openBenchIndex opens an index in dir of fs whose first filters are
// sized for expected marks and whose memtable for marks.
func openBenchIndex(b *testing.B, fs vfs.FS, dir string, expected, marks int) *benchIndex {
	ix, err := Open(dir, Options{FS: fs, ExpectedMarks: expected, FalsePositiveRate: 0.01, MemtableMarks: marks, CacheSize: 64 << 20})
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, ix.Close()) })
	d := ttl.DeadlineOf(testNow, 24*time.Hour)
	return &benchIndex{Index: ix, gen: ttl.GenOf(24*time.Hour, d), deadline: d, rng: rand.New(rand.NewPCG(1, 2))}
}

// newKey returns the key of a new random ID.
func (bx *benchIndex) newKey() Key {
	return bx.Key(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, bx.rng.Uint64()), bx.rng.Uint64()))
}

// markNew applies n marks of new random IDs in batches of 1024, from WAL
// record lsn+1 on, and returns the last record's LSN.
func (bx *benchIndex) markNew(n int, lsn uint64) uint64 {
	var batch Batch
	for i := 0; i < n; i += 1024 {
		batch.Reset()
		for range min(1024, n-i) {
			batch.Mark(bx.newKey(), bx.gen, bx.deadline, nil)
		}
		lsn++
		bx.Apply(&batch, lsn)
	}
	return lsn
}

// BenchmarkCheckpoint times the checkpoint of a memtable of 1Mi new random
// 16-byte IDs: its sort, its table write and the ingestion. The filters
// are sized for every mark, so no chain grows and no merge runs. One op
// is one mark.
func BenchmarkCheckpoint(b *testing.B) {
	const marks = 1 << 20
	bx := openBenchIndex(b, vfs.Default, b.TempDir(), max(b.N, marks), marks)
	lsn := uint64(0)
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		n := min(marks, b.N-done)
		lsn = bx.markNew(n, lsn)
		b.StartTimer()
		checkpointIndex(b, bx.Index)
		done += n
	}
}

// BenchmarkMergeChains times the merge of a chain of filters: b.N marks
// of new random 16-byte IDs in one generation, with filters sized for a
// sixteenth of them, written by checkpoints of 1Mi marks that do not
// merge. One op is one key read back from Pebble.
func BenchmarkMergeChains(b *testing.B) {
	const marks = 1 << 20
	keys := max(b.N, 2) // a chain needs two marks
	bx := openBenchIndex(b, vfs.Default, b.TempDir(), max(keys/16, 1), marks)
	lsn := uint64(0)
	var f *Frozen
	for done := 0; done < keys; {
		n := min(marks, keys-done)
		lsn = bx.markNew(n, lsn)
		f = bx.Freeze(testNow)
		require.NoError(b, bx.Persist(f))
		bx.EndCheckpoint(f)
		done += n
		if done < keys {
			bx.EndMerges(f) // no merge: the chain keeps growing
		}
	}
	require.True(b, f.Merging())
	b.ResetTimer()
	require.NoError(b, bx.MergeChains(f))
	b.StopTimer()
	bx.EndMerges(f)
	require.Len(b, bx.filters[bx.gen].filters, 1)
}

// BenchmarkMarkNew times what a batch of new IDs costs the index under
// the store's lock: LookupBatch and Apply of batches of 1024 new random
// 16-byte IDs, on top of 4Mi marks in filters sized for 1Mi. Checkpoints,
// as the store runs them every MemtableMarks marks, and the merges of the
// filter chains they start, are not timed. One op is one ID.
func BenchmarkMarkNew(b *testing.B) {
	const (
		prefill = 4 << 20
		marks   = 1 << 20
	)
	bx := openBenchIndex(b, vfs.NewMem(), "index", marks, marks)
	var batch Batch
	keys := make([]Key, 1024)
	out := make([]Result, 1024)
	lsn := uint64(0)
	mark := func(lookup bool) {
		batch.Reset()
		for i := range keys {
			keys[i] = bx.newKey()
		}
		if lookup {
			require.NoError(b, bx.LookupBatch(keys, ttl.NewFake(testNow), out))
		}
		for i, k := range keys {
			if !out[i].Live {
				batch.Mark(k, bx.gen, bx.deadline, nil)
			}
		}
		lsn++
		bx.Apply(&batch, lsn)
		if bx.MemMarks() >= marks {
			b.StopTimer()
			checkpointIndex(b, bx.Index)
			b.StartTimer()
		}
	}
	for range prefill / len(keys) {
		mark(false)
	}
	b.ResetTimer()
	for range (b.N + len(keys) - 1) / len(keys) {
		mark(true)
	}
}
