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

// BenchmarkCheckpoint times the checkpoint of a memtable of 1Mi new random
// 16-byte IDs: its sort, its table write and the ingestion. One op is one
// mark.
func BenchmarkCheckpoint(b *testing.B) {
	const marks = 1 << 20
	opts := Options{FS: vfs.Default, ExpectedMarks: marks, FalsePositiveRate: 0.01, MemtableMarks: marks, CacheSize: 8 << 20}
	ix, err := Open(b.TempDir(), opts)
	require.NoError(b, err)
	defer func() { require.NoError(b, ix.Close()) }()
	d := ttl.DeadlineOf(testNow, 24*time.Hour)
	g := ttl.GenOf(24*time.Hour, d)
	rng := rand.New(rand.NewPCG(1, 2))
	var batch Batch
	lsn := uint64(0)
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		n := min(marks, b.N-done)
		for i := 0; i < n; i += 1024 {
			batch.Reset()
			for range min(1024, n-i) {
				id := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, rng.Uint64()), rng.Uint64())
				batch.Mark(ix.Key(id), g, d, nil)
			}
			lsn++
			ix.Apply(&batch, lsn)
		}
		b.StartTimer()
		f := ix.Freeze(testNow)
		require.NoError(b, ix.Persist(f))
		ix.Release(f)
		done += n
	}
}

// BenchmarkMarkNew times what a batch of new IDs costs the index under
// the store's lock: LookupBatch and Apply of batches of 1024 new random
// 16-byte IDs, on top of 4Mi marks in a chain of filters. Checkpoints, as
// the store runs them every MemtableMarks marks, are not timed. One op is
// one ID.
func BenchmarkMarkNew(b *testing.B) {
	const (
		prefill = 4 << 20
		marks   = 1 << 20
	)
	opts := Options{FS: vfs.NewMem(), ExpectedMarks: marks, FalsePositiveRate: 0.01, MemtableMarks: marks, CacheSize: 64 << 20}
	ix, err := Open("index", opts)
	require.NoError(b, err)
	defer func() { require.NoError(b, ix.Close()) }()
	d := ttl.DeadlineOf(testNow, 24*time.Hour)
	g := ttl.GenOf(24*time.Hour, d)
	rng := rand.New(rand.NewPCG(1, 2))
	var batch Batch
	keys := make([]Key, 1024)
	out := make([]Result, 1024)
	lsn := uint64(0)
	mark := func(lookup bool) {
		batch.Reset()
		for i := range keys {
			keys[i] = ix.Key(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, rng.Uint64()), rng.Uint64()))
		}
		if lookup {
			require.NoError(b, ix.LookupBatch(keys, ttl.NewFake(testNow), out))
		}
		for i, k := range keys {
			if !out[i].Live {
				batch.Mark(k, g, d, nil)
			}
		}
		lsn++
		ix.Apply(&batch, lsn)
		if ix.MemMarks() >= marks {
			b.StopTimer()
			f := ix.Freeze(testNow)
			require.NoError(b, ix.Persist(f))
			ix.Release(f)
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
