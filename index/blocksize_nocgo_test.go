//go:build !cgo

package index

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCachedDataBlocksFillOneGoSizeClassEach checkpoints random 16-byte
// IDs and reads the layout of every table: each data block, as Pebble's
// block cache allocates it on the Go heap, fits the 8 KiB size class,
// which holds one object per span, and fills most of it.
func TestCachedDataBlocksFillOneGoSizeClassEach(t *testing.T) {
	const sizeClass = 8192
	fs := vfs.NewMem()
	opts := testOptions(fs)
	opts.ExpectedMarks, opts.MemtableMarks = 20000, 20000
	ix, _ := openIndex(t, opts)
	rng := rand.New(rand.NewPCG(1, 2))
	marks := make([]mark, 20000)
	for i := range marks {
		id := make([]byte, 16)
		for j := range id {
			id[j] = byte(rng.Uint32())
		}
		marks[i] = mark{id: string(id), ttl: time.Hour}
	}
	ix.Apply(markBatch(ix, marks...), 1)
	checkpointIndex(t, ix)
	require.NoError(t, ix.Compact(context.Background()))

	dir := fs.PathJoin(testDir, pebbleDir)
	names, err := fs.List(dir)
	require.NoError(t, err)
	var blocks, bytes int
	for _, n := range names {
		if !strings.HasSuffix(n, ".sst") {
			continue
		}
		f, err := fs.Open(fs.PathJoin(dir, n))
		require.NoError(t, err)
		readable, err := sstable.NewSimpleReadable(f)
		require.NoError(t, err)
		r, err := sstable.NewReader(context.Background(), readable, sstable.ReaderOptions{})
		require.NoError(t, err)
		layout, err := r.Layout()
		require.NoError(t, err)
		for _, h := range layout.Data {
			alloc := block.MetadataSize + int(h.Length) + block.TrailerLen
			assert.LessOrEqual(t, alloc, sizeClass, "%s: a data block of %d bytes", n, h.Length)
			blocks++
			bytes += alloc
		}
		require.NoError(t, r.Close())
	}
	require.Greater(t, blocks, 10, "setup: tables of many data blocks")
	assert.Greater(t, bytes/blocks, sizeClass*85/100, "mean cached data block")
}
