package crashtest_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// The WAL damage tests write one record per mark, so that record k holds
// mark k, damage the segment files with os file operations, and reopen.

// walOptions never checkpoints on its own: the tests checkpoint where
// they need to.
func walOptions(logger *slog.Logger) *dedup.Options {
	return &dedup.Options{MemtableMarks: 1 << 20, SegmentSize: 64 << 10, Logger: logger}
}

// walStore marks n IDs, one WAL record each, checkpointing after the
// first checkpointAt of them (if not 0), closes the store and returns it
// with the IDs.
func walStore(t *testing.T, n, checkpointAt int) (string, [][]byte) {
	t.Helper()
	dir := t.TempDir()
	s, err := dedup.Open(dir, walOptions(testutil.NewLog(t).Logger()))
	require.NoError(t, err)
	ids := storetest.IDs("wal", n)
	for i, id := range ids {
		isNew, err := s.CheckAndMark(id, 0)
		require.NoError(t, err)
		require.True(t, isNew)
		if i+1 == checkpointAt {
			require.NoError(t, s.Checkpoint())
		}
	}
	st := s.Stats()
	require.EqualValues(t, n, st.LastLSN, "one record per mark")
	require.EqualValues(t, checkpointAt, st.CheckpointLSN)
	require.NoError(t, s.Close())
	return dir, ids
}

// newestSegment returns the path of the store's newest WAL segment.
func newestSegment(t *testing.T, dir string) string {
	t.Helper()
	segs := storeFiles(t, dir, "wal/*.wal")
	require.NotEmpty(t, segs)
	return segs[len(segs)-1]
}

// recordOffset returns the offset of the k-th record (from 1) of segment
// b: records follow the 32-byte header, each a 24-byte header (the length
// at offset 4) and the payload, padded to 8 bytes.
func recordOffset(b []byte, k int) int {
	off := 32
	for range k - 1 {
		off += (24 + int(binary.LittleEndian.Uint32(b[off+4:])) + 7) &^ 7
	}
	return off
}

// requireOpenFails checks that Open, writable and read-only (as dedupctl
// verify opens), fails with ErrCorrupt naming file.
func requireOpenFails(t *testing.T, dir, file string) {
	t.Helper()
	for _, readOnly := range []bool{false, true} {
		opts := walOptions(testutil.NewLog(t).Logger())
		opts.ReadOnly = readOnly
		s, err := dedup.Open(dir, opts)
		if s != nil {
			assert.NoError(t, s.Close())
		}
		require.ErrorIs(t, err, dedup.ErrCorrupt, "ReadOnly %v", readOnly)
		assert.Contains(t, err.Error(), file, "the error must name the damaged file")
	}
}

// reopenAfterRepair repairs the store in dir, opens it, checks that every
// ID in kept is seen and that a new mark gets an LSN above every one the
// damaged log used (so fencing tokens keep rising), and closes it.
func reopenAfterRepair(t *testing.T, dir string, kept [][]byte, highest uint64) *dedup.Store {
	t.Helper()
	_, err := dedup.Repair(dir, walOptions(testutil.NewLog(t).Logger()), true)
	require.NoError(t, err)
	s := storetest.OpenAt(t, dir, walOptions(testutil.NewLog(t).Logger()))
	assert.Equal(t, len(kept), storetest.SeenAll(t, s, kept))
	_, err = s.CheckAndMark([]byte("after-repair"), 0)
	require.NoError(t, err)
	assert.Greater(t, s.Stats().LastLSN, highest, "LSNs after a repair must pass every LSN used before it")
	r, err := s.Verify()
	require.NoError(t, err)
	assert.Empty(t, r.Uncovered)
	return s
}

// TestZeroedHeaderWithRecordsFailsOpen zeroes the header of the only (so
// the newest) WAL segment, leaving its records. Open, Verify and Repair
// must all call that damage; only a segment of nothing but zeros is what
// a crash in creating one leaves.
func TestZeroedHeaderWithRecordsFailsOpen(t *testing.T) {
	dir, ids := walStore(t, 100, 0)
	seg := newestSegment(t, dir)
	editFile(t, seg, func(b []byte) []byte { clear(b[:32]); return b })

	requireOpenFails(t, dir, seg)
	d, err := dedup.Repair(dir, walOptions(testutil.NewLog(t).Logger()), false)
	require.NoError(t, err)
	require.NotNil(t, d, "Repair must see the damage Open sees")
	assert.Equal(t, seg, d.Segment)
	s := reopenAfterRepair(t, dir, nil, 100)
	assert.Zero(t, storetest.SeenAll(t, s, ids), "the records behind a bad header are cut")
}

// TestShortenedOrMissingSegmentFailsOpen cuts the newest WAL segment
// short, empties it or deletes it. Each loses acknowledged marks, so each
// is damage that Open, Verify and Repair agree on, whether or not a
// checkpoint covers part of the log. After Repair the store opens, and
// its LSNs pass every one the lost records may have used.
func TestShortenedOrMissingSegmentFailsOpen(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, seg string)
	}{
		{"cut short after its records", func(t *testing.T, seg string) {
			editFile(t, seg, func(b []byte) []byte { return b[:recordOffset(b, 101)+64] })
		}},
		{"cut short inside its records", func(t *testing.T, seg string) {
			editFile(t, seg, func(b []byte) []byte { return b[:recordOffset(b, 80)+5] })
		}},
		{"emptied", func(t *testing.T, seg string) { require.NoError(t, os.Truncate(seg, 0)) }},
		{"deleted", func(t *testing.T, seg string) { require.NoError(t, os.Remove(seg)) }},
	}
	for _, checkpointAt := range []int{0, 50} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s, checkpoint at %d", tc.name, checkpointAt), func(t *testing.T) {
				dir, ids := walStore(t, 100, checkpointAt)
				seg := newestSegment(t, dir)
				tc.damage(t, seg)

				requireOpenFails(t, dir, filepath.Base(seg))
				d, err := dedup.Repair(dir, walOptions(testutil.NewLog(t).Logger()), false)
				require.NoError(t, err)
				require.NotNil(t, d, "Repair must see the damage Open sees")
				reopenAfterRepair(t, dir, ids[:checkpointAt], 100)
			})
		}
	}
}

// TestRepairKeepsRecordsAfterCheckpoint damages a record that the
// checkpoint covers, in the segment that also holds the records after the
// checkpoint. Open still reports the damage; Repair skips it and keeps
// every record after the checkpoint.
func TestRepairKeepsRecordsAfterCheckpoint(t *testing.T) {
	dir, ids := walStore(t, 80, 50)
	seg := newestSegment(t, dir)
	editFile(t, seg, func(b []byte) []byte { b[recordOffset(b, 4)+30] ^= 0xff; return b })
	requireOpenFails(t, dir, seg)

	d, err := dedup.Repair(dir, walOptions(testutil.NewLog(t).Logger()), false)
	require.NoError(t, err)
	require.NotNil(t, d)
	assert.True(t, d.Covered, "the damage lies below the checkpoint")
	assert.Zero(t, d.FirstLost, "nothing after the checkpoint is lost")
	assert.Zero(t, d.Lost)
	s := reopenAfterRepair(t, dir, ids, 80)
	assert.EqualValues(t, 81, s.Stats().LastLSN, "no LSN was cut")
}

// TestRepairRefusesIncompatibleFormat gives a segment after a damaged one
// an unknown format version: a newer build may read it, so Repair must not
// cut it away.
func TestRepairRefusesIncompatibleFormat(t *testing.T) {
	dir, _ := walStore(t, 1500, 0)
	segs := storeFiles(t, dir, "wal/*.wal")
	require.GreaterOrEqual(t, len(segs), 2, "the WAL must have rotated")
	flipByte(t, segs[0], 32+30) // the first record of the oldest segment
	editFile(t, segs[len(segs)-1], func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[8:], 99)
		binary.LittleEndian.PutUint32(b[24:], crc32c(b[:24]))
		return b
	})
	for _, apply := range []bool{false, true} {
		d, err := dedup.Repair(dir, walOptions(testutil.NewLog(t).Logger()), apply)
		require.ErrorIs(t, err, dedup.ErrIncompatibleFormat, "apply %v", apply)
		assert.Nil(t, d)
	}
	for _, seg := range segs {
		assert.FileExists(t, seg, "nothing is cut")
	}
}

// crc32c is the checksum of WAL segment headers.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// TestRepairCutKeepsLSNsRising damages a record after the checkpoint: the
// repair cuts the log there, and the next LSN, a fencing token, must pass
// the LSNs of the records cut rather than give them out again.
func TestRepairCutKeepsLSNsRising(t *testing.T) {
	dir, ids := walStore(t, 300, 0)
	seg := newestSegment(t, dir)
	editFile(t, seg, func(b []byte) []byte { b[recordOffset(b, 101)+30] ^= 0xff; return b })
	requireOpenFails(t, dir, seg)
	reopenAfterRepair(t, dir, ids[:100], 300)
}
