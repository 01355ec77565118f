package wal

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/aio"
)

// openDiskLog opens a log on the OS filesystem, whose syncs run through
// native AIO, and skips the test where the kernel offers none.
func openDiskLog(t *testing.T, dir string) (*Log, []entry) {
	t.Helper()
	var got []entry
	l, err := Open(dir, Options{FS: vfs.Default, SegmentSize: 4096}, 0, func(lsn uint64, p []byte) error {
		got = append(got, entry{lsn, string(p)})
		return nil
	})
	require.NoError(t, err)
	if _, ok := l.syncer.(*aioSyncer); !ok {
		l.Close()
		_, err := aio.New()
		require.ErrorIs(t, err, aio.ErrUnsupported, "SyncAlways on the OS filesystem syncs in the background where it can")
		t.Skipf("no native AIO here: %v", err)
	}
	return l, got
}

// TestAppendStartConcurrent mixes Append and AppendStart from many
// goroutines across segment rotations: each record is acknowledged once
// synced, and all are replayed, in LSN order, after Close.
func TestAppendStartConcurrent(t *testing.T) {
	dir := t.TempDir()
	l, got := openDiskLog(t, dir)
	assert.Empty(t, got)
	const goroutines, each = 8, 60
	var (
		mu   sync.Mutex
		want = map[uint64]string{}
		wg   sync.WaitGroup
	)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := fmt.Sprintf("g%d-%03d", g, i)
				appendLog := l.Append
				if i%2 == g%2 {
					appendLog = l.AppendStart
				}
				lsn, err := appendLog([]byte(p))
				if !assert.NoError(t, err) || !assert.NoError(t, l.Wait(lsn)) {
					return
				}
				l.mu.Lock()
				synced := l.synced
				l.mu.Unlock()
				assert.GreaterOrEqual(t, synced, lsn, "acknowledged before its sync")
				mu.Lock()
				want[lsn] = p
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Greater(t, l.Segments(), 3, "the records must rotate 4 KiB segments")
	require.NoError(t, l.Close())

	l, got = openDiskLog(t, dir)
	defer l.Close()
	require.Len(t, got, goroutines*each)
	for i, e := range got {
		assert.Equal(t, uint64(i+1), e.lsn)
		assert.Equal(t, want[e.lsn], e.payload)
	}
}

// TestCloseWaitsForBackgroundSync closes the log right after a record
// whose sync runs in the background: Close waits for it, and the record
// is replayed.
func TestCloseWaitsForBackgroundSync(t *testing.T) {
	dir := t.TempDir()
	l, _ := openDiskLog(t, dir)
	var want []entry
	for i := range 20 {
		p := fmt.Sprintf("payload-%02d", i)
		lsn, err := l.AppendStart([]byte(p))
		require.NoError(t, err)
		want = append(want, entry{lsn, p})
	}
	require.NoError(t, l.Close())
	l, got := openDiskLog(t, dir)
	defer l.Close()
	assert.Equal(t, want, got)
}

// TestRefusedBackgroundSync makes the kernel refuse a background sync
// (the AIO context is closed, as a filesystem without AIO fsync refuses
// it): no sync started, so the portable syncer runs it, and every later
// one, and the records are acknowledged once synced.
func TestRefusedBackgroundSync(t *testing.T) {
	dir := t.TempDir()
	l, _ := openDiskLog(t, dir)
	s := l.syncer.(*aioSyncer)
	require.NoError(t, s.aio.Close())
	want := []entry{}
	for i := range 3 {
		p := fmt.Sprintf("payload-%d", i)
		lsn, err := l.AppendStart([]byte(p))
		require.NoError(t, err)
		require.NoError(t, l.Wait(lsn))
		want = append(want, entry{lsn, p})
	}
	assert.True(t, s.refused.Load(), "a refused background sync hands the syncs to the portable syncer")
	require.NoError(t, l.Close())

	l, got := openDiskLog(t, dir)
	defer l.Close()
	assert.Equal(t, want, got)
}

// passThrough wraps the OS filesystem without interposing on anything, as
// the store's file-mode wrapper does.
type passThrough struct{ vfs.FS }

// TestBackgroundSyncsNeedDirectFiles checks which filesystems get native
// AIO syncs: the OS's, and a wrapper of it that says its files are
// direct; not a wrapper that does not, whose syncs the log must go
// through (the portable syncer does).
func TestBackgroundSyncsNeedDirectFiles(t *testing.T) {
	if _, err := aio.New(); err != nil {
		t.Skipf("no native AIO here: %v", err)
	}
	for _, tc := range []struct {
		name string
		opts Options
		want bool
	}{
		{"vfs.Default", Options{FS: vfs.Default}, true},
		{"a wrapper that says Direct", Options{FS: passThrough{vfs.Default}, Direct: true}, true},
		{"a wrapper that does not", Options{FS: passThrough{vfs.Default}}, false},
		{"SyncInterval", Options{FS: vfs.Default, Sync: SyncInterval, SyncInterval: time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.SegmentSize = 4096
			l, err := Open(t.TempDir(), tc.opts, 0, func(uint64, []byte) error { return nil })
			require.NoError(t, err)
			defer l.Close()
			_, native := l.syncer.(*aioSyncer)
			assert.Equal(t, tc.want, native, "%s: syncs through native AIO", tc.name)
		})
	}
}

// TestNativeSyncerTakesDescriptorsOnly starts syncs of a file with a
// descriptor and of one without (an in-memory file): the native syncer
// runs the first, the portable one the second, and both report.
func TestNativeSyncerTakesDescriptorsOnly(t *testing.T) {
	reported := make(chan completion, 2)
	s, err := newAIOSyncer(func(c completion) { reported <- c })
	if err != nil {
		t.Skipf("no native AIO here: %v", err)
	}
	defer func() { assert.NoError(t, s.close()) }()
	disk, err := vfs.Default.Create(filepath.Join(t.TempDir(), "f"), vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	defer disk.Close()
	mem, err := vfs.NewMem().Create("f", vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	defer mem.Close()

	for _, tc := range []struct {
		name string
		f    vfs.File
		tag  uint64
	}{{"a file with a descriptor", disk, 1}, {"a file without", mem, 2}} {
		_, err := tc.f.WriteAt([]byte("record"), 0)
		require.NoError(t, err)
		require.NoError(t, s.start(tc.f, tc.tag), tc.name)
		select {
		case c := <-reported:
			assert.Equal(t, completion{tag: tc.tag}, c, tc.name)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no completion", tc.name)
		}
	}
	assert.False(t, s.refused.Load(), "a file without a descriptor is no refusal")
}
