package dedup_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// TestRepair damages a record in the middle of the WAL: Open fails, Repair
// without apply only reports, and with apply cuts the log at the last good
// record, after which Open succeeds with every mark before the damage.
func TestRepair(t *testing.T) {
	dir := t.TempDir()
	opts := &dedup.Options{SegmentSize: 64 << 10}
	s, err := dedup.Open(dir, opts)
	require.NoError(t, err)
	ids := storetest.IDs("rep", 300)
	for _, id := range ids { // one record each
		_, err := s.CheckAndMark(id, 0)
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())

	segments, err := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	require.NoError(t, err)
	require.Len(t, segments, 1)
	b, err := os.ReadFile(segments[0])
	require.NoError(t, err)
	// Records follow a 32-byte segment header; each is a 24-byte header,
	// whose length field is at offset 4, and its payload, padded to 8.
	record := (24 + int(binary.LittleEndian.Uint32(b[32+4:])) + 7) &^ 7
	b[32+100*record+30] ^= 0xff // inside record 101
	require.NoError(t, os.WriteFile(segments[0], b, 0o644))
	_, err = dedup.Open(dir, opts)
	require.ErrorIs(t, err, dedup.ErrCorrupt)

	d, err := dedup.Repair(dir, opts, false)
	require.NoError(t, err)
	require.NotNil(t, d)
	assert.Equal(t, uint64(101), d.FirstLost, "records 1-100 are good")
	assert.Equal(t, uint64(300), d.LastLost)
	assert.Equal(t, 199, d.Lost, "record 101 is unreadable; 102-300 are counted")
	_, err = dedup.Open(dir, opts)
	require.ErrorIs(t, err, dedup.ErrCorrupt, "without apply nothing changes")

	_, err = dedup.Repair(dir, opts, true)
	require.NoError(t, err)
	_, err = os.Stat(segments[0] + ".broken")
	require.NoError(t, err, "the damaged segment is kept aside")
	s = storetest.OpenAt(t, dir, opts)
	assert.Equal(t, 100, storetest.SeenAll(t, s, ids[:100]), "the marks before the damage survive")
	assert.Zero(t, storetest.SeenAll(t, s, ids[100:]), "the cut records are gone")

	d, err = dedup.Repair(dir, opts, false)
	assert.ErrorIs(t, err, dedup.ErrLocked, "an open store is not repaired")
	assert.Nil(t, d)
}

// TestSnapshot checks that a snapshot is a store of its own: it holds
// every mark made before it, none made after, and opens anywhere.
func TestSnapshot(t *testing.T) {
	dir := t.TempDir()
	s := storetest.OpenAt(t, dir, nil)
	before, after := storetest.IDs("before", 200), storetest.IDs("after", 10)
	storetest.MarkAll(t, s, before[:100], 0)
	require.NoError(t, s.Checkpoint())
	storetest.MarkAll(t, s, before[100:], 0)

	snap := filepath.Join(t.TempDir(), "snap")
	require.NoError(t, s.Snapshot(snap))
	assert.Error(t, s.Snapshot(snap), "a snapshot never overwrites")
	storetest.MarkAll(t, s, after, 0)

	moved := filepath.Join(t.TempDir(), "moved")
	require.NoError(t, os.Rename(snap, moved), "a snapshot can be moved whole")
	c := storetest.OpenAt(t, moved, nil)
	assert.Equal(t, len(before), storetest.SeenAll(t, c, before))
	assert.Zero(t, storetest.SeenAll(t, c, after), "marks made after the snapshot are not in it")
	r, err := c.Verify()
	require.NoError(t, err)
	assert.Empty(t, r.Uncovered)
}
