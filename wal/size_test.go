package wal

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// segmentSizes returns the sizes the headers of the log's segments give,
// oldest first.
func segmentSizes(t *testing.T, fs vfs.FS) []int64 {
	t.Helper()
	firsts, err := listSegments(fs, logDir)
	require.NoError(t, err)
	var sizes []int64
	for _, first := range firsts {
		h, err := readHeader(fs, fs.PathJoin(logDir, segmentName(first)))
		require.NoError(t, err)
		sizes = append(sizes, preallocated(h))
	}
	return sizes
}

// TestSegmentSizeFollowsTheWriteRate checks that a segment whose first
// half fills in under half a second makes the next one twice its size, up
// to SegmentSize, and one whose half takes over 8 seconds, half its size,
// down to MinSegmentSize; the log replays across the sizes.
func TestSegmentSizeFollowsTheWriteRate(t *testing.T) {
	fs := vfs.NewMem()
	var clock sweepClock
	clock.step.Store(int64(time.Millisecond))
	opts := Options{MinSegmentSize: 4096, SegmentSize: 16384, testNow: clock.read}
	l, _ := openLog(t, fs, opts, 0)
	want := appendN(t, l, 0, 1000) // 40-byte records: 101 fill 4 KiB
	clock.step.Store(int64(20 * time.Second))
	want = append(want, appendN(t, l, 1000, 1000)...)
	require.NoError(t, l.Close())

	assert.Equal(t, []int64{4096, 8192, 16384, 16384, 16384, 8192, 4096, 4096, 4096}, segmentSizes(t, fs))
	l, got := openLog(t, fs, opts, 0)
	defer l.Close()
	assert.Equal(t, want, got)
}

// TestRemoveShrinksACheckpointedLog checks that once every record is at
// or below the LSN given to Remove, the log keeps one segment of the
// smallest size and no spare; while records remain above it, the large
// segment stays.
func TestRemoveShrinksACheckpointedLog(t *testing.T) {
	fs := vfs.NewMem()
	var clock sweepClock
	clock.step.Store(int64(time.Millisecond))
	opts := Options{MinSegmentSize: 4096, SegmentSize: 16384, testNow: clock.read}
	l, _ := openLog(t, fs, opts, 0)
	appendN(t, l, 0, 1000)
	waitSpare(l)
	last := l.LastLSN()

	require.NoError(t, l.Remove(last-1))
	assert.Equal(t, int64(16384), segmentSizes(t, fs)[0], "a record above the checkpoint keeps the segment")

	require.NoError(t, l.Remove(last))
	assert.Equal(t, []int64{4096}, segmentSizes(t, fs))
	n, err := l.Bytes()
	require.NoError(t, err)
	assert.Equal(t, int64(4096), n, "one small segment, and no spare")

	want := appendN(t, l, 1000, 10)
	require.NoError(t, l.Close())
	l, got := openLog(t, fs, opts, last)
	defer l.Close()
	assert.Equal(t, want, got, "the records after the shrink replay")
}

// TestNewLogKeepsOneSmallSegment checks that a new log with the default
// sizes takes 4 MiB of disk, not SegmentSize.
func TestNewLogKeepsOneSmallSegment(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{FS: vfs.Default, SegmentSize: 64 << 20}, 0, func(uint64, []byte) error { return nil })
	require.NoError(t, err)
	defer l.Close()
	n, err := l.Bytes()
	require.NoError(t, err)
	assert.Equal(t, int64(minSegment), n)
	b, err := fsutil.ReadFile(vfs.Default, vfs.Default.PathJoin(dir, segmentName(1)))
	require.NoError(t, err)
	assert.Equal(t, int64(minSegment), preallocated(b))
}

func TestSegmentSizesOutOfRangeAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max int64
	}{
		{"no segment size", 0, 0},
		{"a segment only a header fits in", 0, headerSize},
		{"a negative minimum", -1, 1 << 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			_, err := Open("wal", Options{FS: fs, MinSegmentSize: tc.min, SegmentSize: tc.max}, 0, nil)
			require.ErrorIs(t, err, ErrInvalidOptions)
			files, err := fs.List("")
			require.NoError(t, err)
			assert.Empty(t, files, "a refused Open creates nothing")
		})
	}
}
