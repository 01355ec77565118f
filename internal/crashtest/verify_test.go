package crashtest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// TestVerify checks that Verify reads a healthy store clean, marks in the
// WAL and in Pebble alike, and that it finds a damaged Pebble table that
// Open and the reads so far have not touched.
func TestVerify(t *testing.T) {
	const marks = 120
	var log testutil.Log
	dir := markedStore(t, damageOptions(log.Logger()), marks)

	s, err := dedup.Open(dir, damageOptions(log.Logger()))
	require.NoError(t, err)
	storetest.MarkAll(t, s, storetest.IDs("wal-only", 10), 0)
	r, err := s.Verify()
	require.NoError(t, err)
	assert.Positive(t, r.WALRecords, "the WAL records after the checkpoint are read")
	assert.Positive(t, r.IndexKeys, "the marks in Pebble are read")
	assert.Empty(t, r.Uncovered, "every key is covered by its filter")
	require.NoError(t, s.Close())

	tables := storeFiles(t, dir, "index/db/*.sst")
	require.NotEmpty(t, tables)
	flipByte(t, tables[0], 64)
	s, err = dedup.Open(dir, damageOptions(log.Logger()))
	require.NoError(t, err, "Open reads no table block")
	defer s.Close()
	_, err = s.Verify()
	assert.ErrorIs(t, err, dedup.ErrCorrupt)
}
