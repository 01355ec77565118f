package wal

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
)

// TestFailedSyncIsRefusedInTheSameBoot fails an fsync of a log on OS
// files, then opens it again: in the boot of the failure, or one that
// cannot be told from it, the page cache may hold records the disk does
// not, so a writable Open refuses with ErrFailedSync and a read-only one
// warns; in another boot the marker is stale, and Open replays what the
// disk holds and clears it.
func TestFailedSyncIsRefusedInTheSameBoot(t *testing.T) {
	for _, tc := range []struct {
		name     string
		boot     string // at the reopen
		readOnly bool
		refused  bool
		cleared  bool
		logged   string
	}{
		{name: "same boot", boot: "boot-1", refused: true},
		{name: "a boot that cannot be told apart", boot: "", refused: true},
		{name: "same boot, read-only", boot: "boot-1", readOnly: true, logged: "wal: a write or fsync failed in this boot"},
		{name: "after a reboot", boot: "boot-2", cleared: true, logged: "wal: cleared the failure marker of an earlier boot"},
		{name: "after a reboot, read-only", boot: "boot-2", readOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "wal")
			inj := &failSyncData{err: errorfs.ErrInjected}
			open := func(fs vfs.FS, opts Options) (*Log, []entry, error) {
				opts.FS, opts.Direct, opts.SegmentSize = fs, true, 4096
				var got []entry
				l, err := Open(dir, opts, 0, func(lsn uint64, p []byte) error {
					got = append(got, entry{lsn, string(p)})
					return nil
				})
				return l, got, err
			}
			l, _, err := open(errorfs.Wrap(vfs.Default, inj), Options{Boot: "boot-1"})
			require.NoError(t, err)
			acked := appendN(t, l, 0, 3)
			inj.armed.Store(true)
			lsn, err := l.Append([]byte("doomed"))
			require.NoError(t, err)
			require.ErrorIs(t, l.Wait(lsn), errorfs.ErrInjected)
			require.ErrorIs(t, l.Close(), errorfs.ErrInjected)
			marker := filepath.Join(dir, failedName)
			require.FileExists(t, marker, "a failure on OS files is recorded")

			var log testutil.Log
			l, got, err := open(vfs.Default, Options{Boot: tc.boot, ReadOnly: tc.readOnly, Logger: log.Logger()})
			if tc.refused {
				require.ErrorIs(t, err, ErrFailedSync, "%s: Open", tc.name)
				assert.Contains(t, err.Error(), "reboot", "%s: the error says what to do", tc.name)
				assert.FileExists(t, marker)
				return
			}
			require.NoError(t, err, "%s: Open", tc.name)
			require.NoError(t, l.Close())
			require.GreaterOrEqual(t, len(got), len(acked))
			requireReplay(t, acked, got[:len(acked)], tc.name)
			if tc.logged != "" {
				assert.Len(t, log.Find(tc.logged), 1, "%s: logged %q; got %v", tc.name, tc.logged, log.Records())
			}
			_, err = os.Stat(marker)
			assert.Equal(t, tc.cleared, os.IsNotExist(err), "%s: marker cleared", tc.name)
		})
	}
}

// TestFailureOnAnotherFSLeavesNoMarker fails an fsync of a log whose
// files are not the operating system's (an in-memory FS): it has no page
// cache to distrust, so nothing keeps it from reopening.
func TestFailureOnAnotherFSLeavesNoMarker(t *testing.T) {
	mem := vfs.NewMem()
	inj := &failSyncData{err: errorfs.ErrInjected}
	l, _ := openLog(t, errorfs.Wrap(mem, inj), Options{Boot: "boot-1"}, 0)
	inj.armed.Store(true)
	lsn, err := l.Append([]byte("doomed"))
	require.NoError(t, err)
	require.ErrorIs(t, l.Wait(lsn), errorfs.ErrInjected)
	_, err = mem.Stat(mem.PathJoin("wal", failedName))
	assert.True(t, os.IsNotExist(err), "no marker on an in-memory FS: %v", err)
}

// failCreate fails the creation of new segments, as a full disk does.
type failCreate struct{ armed atomic.Bool }

func (f *failCreate) String() string { return "fail creating segments" }

func (f *failCreate) MaybeError(op errorfs.Op) error {
	if f.armed.Load() && op.Kind == errorfs.OpCreate && (strings.HasSuffix(op.Path, ".new") || strings.HasSuffix(op.Path, ".spare")) {
		return syscall.ENOSPC
	}
	return nil
}

// TestFullDiskAtRotationLeavesNoMarker fills the disk when the log
// rotates to a new segment: no record met a failed write or fsync, so the
// log reopens in the same boot once there is room again.
func TestFullDiskAtRotationLeavesNoMarker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	inj := &failCreate{}
	opts := Options{FS: errorfs.Wrap(vfs.Default, inj), Direct: true, SegmentSize: 4096, Boot: "boot-1"}
	nop := func(uint64, []byte) error { return nil }
	l, err := Open(dir, opts, 0, nop)
	require.NoError(t, err)
	acked := appendN(t, l, 0, 3)
	inj.armed.Store(true)
	var failed error
	for i := 0; i < 100 && failed == nil; i++ {
		lsn, err := l.Append(make([]byte, 1000))
		if err == nil {
			err = l.Wait(lsn)
		}
		failed = err
	}
	require.ErrorIs(t, failed, syscall.ENOSPC, "a rotation meets the full disk")
	l.Close()
	assert.NoFileExists(t, filepath.Join(dir, failedName), "no record's write or fsync failed")

	var got []entry
	l, err = Open(dir, Options{FS: vfs.Default, SegmentSize: 4096, Boot: "boot-1"}, 0, func(lsn uint64, p []byte) error {
		got = append(got, entry{lsn, string(p)})
		return nil
	})
	require.NoError(t, err, "the log reopens in the same boot")
	require.NoError(t, l.Close())
	require.GreaterOrEqual(t, len(got), len(acked))
	requireReplay(t, acked, got[:len(acked)], "every acknowledged record survives")
}
