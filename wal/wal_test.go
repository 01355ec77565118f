package wal

import (
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type entry struct {
	lsn     uint64
	payload string
}

// openLog opens the log in dir on fs and returns what it replayed.
func openLog(t *testing.T, fs vfs.FS, opts Options, after uint64) (*Log, []entry) {
	t.Helper()
	opts.FS = fs
	if opts.SegmentSize == 0 {
		opts.SegmentSize = 4096
	}
	var got []entry
	l, err := Open("wal", opts, after, func(lsn uint64, p []byte) error {
		got = append(got, entry{lsn, string(p)})
		return nil
	})
	require.NoError(t, err)
	return l, got
}

// appendN appends n payloads named from start and waits for them.
func appendN(t *testing.T, l *Log, start, n int) []entry {
	t.Helper()
	var want []entry
	for i := start; i < start+n; i++ {
		p := fmt.Sprintf("payload-%04d", i)
		lsn, err := l.Append([]byte(p))
		require.NoError(t, err)
		require.NoError(t, l.Wait(lsn))
		want = append(want, entry{lsn, p})
	}
	return want
}

func TestAppendReplayAcrossRotation(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNone} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			fs := vfs.NewMem()
			l, got := openLog(t, fs, Options{Sync: mode, SyncInterval: 1e6}, 0)
			assert.Empty(t, got)
			want := appendN(t, l, 0, 500)
			require.Greater(t, l.Segments(), 3, "500 records must rotate 4 KiB segments")
			require.NoError(t, l.Close())

			l, got = openLog(t, fs, Options{}, 0)
			assert.Equal(t, want, got)
			want = append(want, appendN(t, l, 500, 10)...)
			require.NoError(t, l.Close())

			l, got = openLog(t, fs, Options{}, 0)
			assert.Equal(t, want, got)
			require.NoError(t, l.Close())
		})
	}
}

func TestReplayAfterAndRemove(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := openLog(t, fs, Options{}, 0)
	want := appendN(t, l, 0, 300)
	before := l.Segments()
	require.NoError(t, l.Remove(200))
	assert.Less(t, l.Segments(), before)
	require.NoError(t, l.Close())

	l, got := openLog(t, fs, Options{}, 200)
	assert.Equal(t, want[200:], got, "replay skips records at or below after")
	require.NoError(t, l.Close())
}

func TestNewLSNsFollowAfter(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := openLog(t, fs, Options{}, 41)
	lsn, err := l.Append([]byte("x"))
	require.NoError(t, err)
	assert.Equal(t, uint64(42), lsn)
	require.NoError(t, l.Wait(lsn))
	require.NoError(t, l.Close())

	// A log whose newest record is behind the checkpoint starts a new
	// segment rather than leave an LSN gap inside one.
	l, got := openLog(t, fs, Options{}, 100)
	assert.Empty(t, got)
	lsn, err = l.Append([]byte("y"))
	require.NoError(t, err)
	assert.Equal(t, uint64(101), lsn)
	require.NoError(t, l.Wait(lsn))
	require.NoError(t, l.Close())
	l, got = openLog(t, fs, Options{}, 100)
	assert.Equal(t, []entry{{101, "y"}}, got)
	require.NoError(t, l.Close())
}

func TestClosedAndReadOnly(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := openLog(t, fs, Options{}, 0)
	appendN(t, l, 0, 3)
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close twice is fine")
	_, err := l.Append([]byte("x"))
	assert.ErrorIs(t, err, ErrClosed)

	l, got := openLog(t, fs, Options{ReadOnly: true}, 0)
	assert.Len(t, got, 3)
	_, err = l.Append([]byte("x"))
	assert.ErrorIs(t, err, ErrReadOnly)
	require.NoError(t, l.Close())
}

// TestOpenSyncsWhatItReplays checks that records a dead process wrote but
// never fsynced are made durable by the Open that replays them, before
// anything can rest on them: a power loss right after that Open keeps them.
func TestOpenSyncsWhatItReplays(t *testing.T) {
	mem := vfs.NewCrashableMem()
	dead, _ := openLog(t, mem, Options{Sync: SyncNone}, 0)
	want := appendN(t, dead, 0, 5) // written to the OS, never fsynced; dead is never closed

	l, got := openLog(t, mem, Options{}, 0)
	require.Equal(t, want, got)
	afterPowerLoss, replayed := openLog(t, mem.CrashClone(vfs.CrashCloneCfg{}), Options{}, 0)
	assert.Equal(t, want, replayed, "the replayed records survive a power loss after Open")
	require.NoError(t, afterPowerLoss.Close())
	require.NoError(t, l.Close())
}

// shortWrites is a filesystem whose segment files, once armed, write half
// of what they are given and report no error, as a broken filesystem or
// driver may.
type shortWrites struct {
	vfs.FS
	armed *atomic.Bool
}

func (fs shortWrites) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return shortFile{f, fs.armed}, err
}

type shortFile struct {
	vfs.File
	armed *atomic.Bool
}

func (f shortFile) WriteAt(p []byte, off int64) (int, error) {
	if f.armed.Load() && len(p) > 1 {
		return f.File.WriteAt(p[:len(p)/2], off)
	}
	return f.File.WriteAt(p, off)
}

// TestShortWriteIsFailStop writes a record short without an error: the
// record is not acknowledged and the log is fail-stop.
func TestShortWriteIsFailStop(t *testing.T) {
	var armed atomic.Bool
	mem := vfs.NewMem()
	l, _ := openLog(t, shortWrites{mem, &armed}, Options{}, 0)
	acked := appendN(t, l, 0, 3)
	armed.Store(true)
	lsn, err := l.Append([]byte("cut short"))
	require.NoError(t, err)
	require.ErrorIs(t, l.Wait(lsn), io.ErrShortWrite)
	_, err = l.Append([]byte("after"))
	assert.ErrorIs(t, err, io.ErrShortWrite, "the log is fail-stop")
	assert.ErrorIs(t, l.Close(), io.ErrShortWrite)

	l, got, err := tryOpen(mem, Options{}, 0)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	requireReplay(t, acked, got, "the records before the short write")
}

// TestMetricsCountAppendsAndGroupCommits appends records without syncs
// (SyncNone) and closes the log: Close's one sync makes them all durable,
// and the metrics say so, as they say each SyncAlways record's own sync.
func TestMetricsCountAppendsAndGroupCommits(t *testing.T) {
	for _, tc := range []struct {
		mode        SyncMode
		syncs       uint64
		recordsEach int64
	}{
		{SyncNone, 1, 5},
		{SyncAlways, 5, 1},
	} {
		l, _ := openLog(t, vfs.NewMem(), Options{Sync: tc.mode}, 0)
		acked := appendN(t, l, 0, 5)
		require.NoError(t, l.Close())
		m := l.Metrics()
		assert.Equal(t, uint64(len(acked)), m.Appends, "%v", tc.mode)
		assert.Equal(t, uint64(5*recordSize(len("payload-0000"))), m.AppendBytes, "%v: framed", tc.mode)
		assert.Equal(t, tc.syncs, m.Syncs, "%v", tc.mode)
		assert.Equal(t, tc.syncs, m.SyncNanos.Count(), "%v: each sync timed", tc.mode)
		assert.Equal(t, tc.syncs, m.SyncRecords.Count(), "%v", tc.mode)
		assert.Equal(t, tc.recordsEach*int64(tc.syncs), m.SyncRecords.Sum, "%v: records made durable", tc.mode)
	}
}
