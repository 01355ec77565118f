package wal

import (
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// TestRepairSalvageOfAShortenedSegmentKeepsLSNsRising damages a record
// the checkpoint covers and cuts the segment short after it: repair
// salvages the records after the checkpoint, and the bytes cut off may
// have held more, so the next LSN passes every one they could have held.
func TestRepairSalvageOfAShortenedSegmentKeepsLSNsRising(t *testing.T) {
	mem, opts := damagedShortLog(t)

	d, err := Repair(mem, "wal", 100, 64<<10, true)
	require.NoError(t, err)
	require.NotNil(t, d)
	assert.NotZero(t, d.FirstLost, "the bytes cut off may have held records: something may be lost")
	assert.Greater(t, d.Next, uint64(200), "Next passes every LSN handed out")
	l, err := Open("wal", opts, 100, func(uint64, []byte) error { return nil })
	require.NoError(t, err)
	lsn, err := l.Append([]byte("new"))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	assert.Greater(t, lsn, uint64(200), "LSNs, and the fencing tokens taken from them, keep rising")
}

// failRenameAside fails moving a damaged segment aside, as a crash there
// would leave the repair.
type failRenameAside struct{}

func (failRenameAside) String() string { return "fail renaming a segment aside" }

func (failRenameAside) MaybeError(op errorfs.Op) error {
	if op.Kind == errorfs.OpRename && strings.HasSuffix(op.Path, ".wal") {
		return errorfs.ErrInjected
	}
	return nil
}

// TestRepairCutIsDurableBeforeRecordsGo stops a salvaging repair after
// its new segment is in place and before the damaged one is moved aside:
// the log then opens, and its LSNs must already pass the cut.
func TestRepairCutIsDurableBeforeRecordsGo(t *testing.T) {
	mem, opts := damagedShortLog(t)

	_, err := Repair(errorfs.Wrap(mem, failRenameAside{}), "wal", 100, 64<<10, true)
	require.ErrorIs(t, err, errorfs.ErrInjected, "the repair stops before the damaged segment is moved aside")
	l, err := Open("wal", opts, 100, func(uint64, []byte) error { return nil })
	require.NoError(t, err, "the salvaged segment is in place, after the checkpoint")
	lsn, err := l.Append([]byte("new"))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	assert.Greater(t, lsn, uint64(200), "the cut was durable before any record went")
}

// damagedShortLog writes 200 records into one segment, damages LSN 50,
// which a checkpoint at 100 covers, and cuts the segment short after LSN
// 150. It returns the FS and the options the log was written with.
func damagedShortLog(t *testing.T) (vfs.FS, Options) {
	t.Helper()
	mem := vfs.NewMem()
	opts := Options{FS: mem, SegmentSize: 64 << 10}
	l, err := Open("wal", opts, 0, func(uint64, []byte) error { return nil })
	require.NoError(t, err)
	var offs []int64 // offs[lsn-1]
	off := int64(headerSize)
	for range 200 {
		p := []byte(strings.Repeat("y", 40))
		lsn, err := l.Append(p)
		require.NoError(t, err)
		require.NoError(t, l.Wait(lsn))
		offs = append(offs, off)
		off += int64(recordSize(len(p)))
	}
	require.NoError(t, l.Close())
	path := mem.PathJoin("wal", segmentName(1))
	b, err := fsutil.ReadFile(mem, path)
	require.NoError(t, err)
	b[offs[49]+recHeaderSize+1] ^= 0xff // LSN 50, which the checkpoint at 100 covers
	f, err := mem.Create(path, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	_, err = f.Write(b[:offs[150]]) // cut short after LSN 150
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return mem, opts
}
