package wal

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// TestRotationUsesTheSpare checks that each rotation turns the spare into
// the new segment, zeroed to its full size, and prepares the next spare;
// the records replay across those segments.
func TestRotationUsesTheSpare(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := openLog(t, fs, Options{}, 0)
	spare := fs.PathJoin(logDir, spareName)
	requireZeros := func(path string, from int) {
		t.Helper()
		b, err := fsutil.ReadFile(fs, path)
		require.NoError(t, err)
		require.Len(t, b, 4096)
		require.True(t, bytes.Equal(b[from:], make([]byte, len(b)-from)), "%s holds more than zeros after offset %d", path, from)
	}
	_, err := fs.Stat(spare)
	require.ErrorIs(t, err, os.ErrNotExist, "no spare before records fill half a segment")

	want := appendN(t, l, 0, 300)
	require.Greater(t, l.Segments(), 2)
	waitSpare(l)
	requireZeros(spare, 0)
	// The newest segment, made from a spare, is full size from the start:
	// no record had to extend it.
	l.mu.Lock()
	newest := fs.PathJoin(logDir, segmentName(l.segments[len(l.segments)-1]))
	l.mu.Unlock()
	st, err := fs.Stat(newest)
	require.NoError(t, err)
	assert.EqualValues(t, 4096, st.Size())
	require.NoError(t, l.Close())

	l, got := openLog(t, fs, Options{}, 0)
	defer l.Close()
	assert.Equal(t, want, got)
}

// TestLeftoverSpareIsRemade puts a spare full of garbage in the log's
// directory, as a crash in the middle of preparing one leaves it: Open
// must make a new spare rather than rotate into the garbage.
func TestLeftoverSpareIsRemade(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := openLog(t, fs, Options{}, 0)
	want := appendN(t, l, 0, 5)
	require.NoError(t, l.Close())
	garbage := bytes.Repeat([]byte{0xa5}, 4096)
	f, err := fs.Create(fs.PathJoin(logDir, spareName), vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	_, err = f.Write(garbage)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	l, got := openLog(t, fs, Options{}, 0)
	assert.Equal(t, want, got)
	want = append(want, appendN(t, l, 5, 300)...)
	require.Greater(t, l.Segments(), 2)
	require.NoError(t, l.Close())

	l, got = openLog(t, fs, Options{}, 0)
	defer l.Close()
	assert.Equal(t, want, got)
}

// TestBackgroundSpare runs rotations on the OS filesystem, where spares
// are prepared by a goroutine while records are written.
func TestBackgroundSpare(t *testing.T) {
	dir := t.TempDir()
	open := func() (*Log, []entry) {
		var got []entry
		l, err := Open(dir, Options{FS: vfs.Default, SegmentSize: 1 << 16}, 0, func(lsn uint64, p []byte) error {
			got = append(got, entry{lsn, string(p)})
			return nil
		})
		require.NoError(t, err)
		return l, got
	}
	l, _ := open()
	want := appendN(t, l, 0, 8000)
	require.Greater(t, l.Segments(), 4)
	require.NoError(t, l.Close())
	l, got := open()
	defer l.Close()
	assert.Equal(t, want, got)
}

// waitSpare waits until no spare is being prepared.
func waitSpare(l *Log) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.spareBusy {
		l.cond.Wait()
	}
}

// TestSpareIsPreparedBesideTheRecords holds the preparation of the spare
// on an in-memory FS: records go on being written and synced, across
// rotations, while it waits, as on the OS filesystem.
func TestSpareIsPreparedBesideTheRecords(t *testing.T) {
	release := make(chan struct{})
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpCreate && strings.HasSuffix(op.Path, spareName) {
			<-release
		}
		return nil
	}))
	l, _ := openLog(t, fs, Options{}, 0)
	written := make(chan error, 1)
	var want []entry
	go func() {
		for i := range 300 {
			p := fmt.Sprintf("payload-%04d", i)
			lsn, err := l.Append([]byte(p))
			if err == nil {
				err = l.Wait(lsn)
			}
			if err != nil {
				written <- err
				return
			}
			want = append(want, entry{lsn, p})
		}
		written <- nil
	}()
	select {
	case err := <-written:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("records waited for the spare")
	}
	assert.Greater(t, l.Segments(), 2, "rotations while the spare was held")
	close(release)
	require.NoError(t, l.Close())

	l, got := openLog(t, fs, Options{}, 0)
	defer l.Close()
	assert.Equal(t, want, got)
}
