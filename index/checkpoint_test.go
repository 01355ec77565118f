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
