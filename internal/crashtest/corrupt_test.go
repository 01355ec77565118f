package crashtest_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
)

// The damage tests write a few hundred marks with small options, so that
// checkpoints leave filter snapshots, a CHECKPOINT and Pebble tables behind,
// close the store, damage one file and open it again.
const damageMarks = 300

func damageID(i int) []byte { return fmt.Appendf(nil, "damage-id-%04d", i) }

// damageOptions makes a checkpoint every 50 marks.
func damageOptions(logger *slog.Logger) *dedup.Options {
	return &dedup.Options{MemtableMarks: 50, SegmentSize: 64 << 10, Logger: logger}
}

// markedStore creates a store in a fresh directory, marks n IDs in batches
// of ten and closes it once a checkpoint has run.
func markedStore(t *testing.T, opts *dedup.Options, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := dedup.Open(dir, opts)
	require.NoError(t, err)
	for i := 0; i < n; i += 10 {
		var batch [][]byte
		for j := i; j < min(i+10, n); j++ {
			batch = append(batch, damageID(j))
		}
		isNew, err := s.CheckAndMarkBatch(batch, time.Hour)
		require.NoError(t, err)
		require.NotContains(t, isNew, false, "every ID is fresh")
	}
	require.NoError(t, s.Close())
	return dir
}

// checkpointedStore is markedStore with checkpoints, and checks that they
// left the files the damage tests damage.
func checkpointedStore(t *testing.T) string {
	t.Helper()
	dir := markedStore(t, damageOptions(testutil.NewLog(t).Logger()), damageMarks)
	require.FileExists(t, filepath.Join(dir, "index", "CHECKPOINT"))
	require.NotEmpty(t, storeFiles(t, dir, "index/filters/*.bloom"))
	require.NotEmpty(t, storeFiles(t, dir, "index/db/*.sst"))
	return dir
}

// storeFiles returns the files of the store in dir matching pattern, a
// slash-separated glob relative to dir, in name order.
func storeFiles(t *testing.T, dir, pattern string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, filepath.FromSlash(pattern)))
	require.NoError(t, err)
	return paths
}

// editFile applies edit to the contents of path.
func editFile(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, edit(b), 0o644))
}

// flipByte inverts the byte at off of path.
func flipByte(t *testing.T, path string, off int) {
	t.Helper()
	editFile(t, path, func(b []byte) []byte {
		require.Less(t, off, len(b), "%s is too short to damage", path)
		b[off] ^= 0xff
		return b
	})
}

// assertAllSeen checks that the store in dir opens and sees IDs 0 to n-1.
func assertAllSeen(t *testing.T, dir string, opts *dedup.Options, n int) {
	t.Helper()
	s, err := dedup.Open(dir, opts)
	require.NoError(t, err)
	defer func() { assert.NoError(t, s.Close()) }()
	for i := range n {
		ok, err := s.Seen(damageID(i))
		require.NoError(t, err)
		require.True(t, ok, "%s must be seen", damageID(i))
	}
}

// TestCorruptStoreFailsOpen damages one file of a closed store at a time;
// Open must refuse each with the right error, naming the file and, where
// the damage has one, the offset.
func TestCorruptStoreFailsOpen(t *testing.T) {
	cases := []struct {
		name string
		// damage damages the store in dir and returns the file the error
		// must name.
		damage func(t *testing.T, dir string) string
		want   error
		offset bool   // the error must give an offset
		todo   string // what the error must say to do, if anything
	}{
		{
			name: "filter snapshot byte flipped",
			damage: func(t *testing.T, dir string) string {
				path := storeFiles(t, dir, "index/filters/*.bloom")[0]
				info, err := os.Stat(path)
				require.NoError(t, err)
				flipByte(t, path, int(info.Size()/2))
				return path
			},
			want: dedup.ErrCorrupt, offset: true, todo: "delete the filter snapshot",
		},
		{
			name: "filter snapshot truncated",
			damage: func(t *testing.T, dir string) string {
				path := storeFiles(t, dir, "index/filters/*.bloom")[0]
				editFile(t, path, func(b []byte) []byte { return b[:len(b)/2] })
				return path
			},
			want: dedup.ErrCorrupt, offset: true, todo: "delete the filter snapshot",
		},
		{
			name: "filter snapshot emptied",
			damage: func(t *testing.T, dir string) string {
				path := storeFiles(t, dir, "index/filters/*.bloom")[0]
				editFile(t, path, func([]byte) []byte { return nil })
				return path
			},
			want: dedup.ErrCorrupt, offset: true, todo: "delete the filter snapshot",
		},
		{
			name: "CHECKPOINT byte flipped",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "index", "CHECKPOINT")
				flipByte(t, path, 12) // the generation count
				return path
			},
			want: dedup.ErrCorrupt, offset: true,
		},
		{
			name: "CHECKPOINT magic damaged",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "index", "CHECKPOINT")
				flipByte(t, path, 0)
				return path
			},
			want: dedup.ErrCorrupt, offset: true,
		},
		{
			name: "index directory removed",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "index")
				require.NoError(t, os.RemoveAll(path))
				return path
			},
			want: dedup.ErrCorrupt, todo: "restore the store",
		},
		{
			name: "Pebble database removed",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "index", "db")
				require.NoError(t, os.RemoveAll(path))
				return path
			},
			want: dedup.ErrCorrupt, todo: "restore the store",
		},
		{
			name: "Pebble database emptied",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "index", "db")
				require.NoError(t, os.RemoveAll(path))
				require.NoError(t, os.Mkdir(path, 0o755))
				return path
			},
			want: dedup.ErrCorrupt, todo: "restore the store",
		},
		{
			name: "Pebble table removed",
			damage: func(t *testing.T, dir string) string {
				path := storeFiles(t, dir, "index/db/*.sst")[0]
				require.NoError(t, os.Remove(path))
				return strings.TrimSuffix(filepath.Base(path), ".sst")
			},
			want: dedup.ErrCorrupt, todo: "restore the store",
		},
		{
			name: "Pebble table truncated",
			damage: func(t *testing.T, dir string) string {
				path := storeFiles(t, dir, "index/db/*.sst")[0]
				editFile(t, path, func(b []byte) []byte { return b[:len(b)/2] })
				return path
			},
			want: dedup.ErrCorrupt, todo: "restore the store",
		},
		{
			name: "FORMAT unreadable",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "FORMAT")
				editFile(t, path, func([]byte) []byte { return []byte("not a dedup store\n") })
				return path
			},
			want: dedup.ErrCorrupt, offset: true,
		},
		{
			name: "FORMAT of an unknown version",
			damage: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "FORMAT")
				editFile(t, path, func([]byte) []byte { return []byte("dedup store format 99\n") })
				return path
			},
			want: dedup.ErrIncompatibleFormat,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := checkpointedStore(t)
			file := tc.damage(t, dir)
			// Read-only first: it must change nothing, and a writable
			// Open must then find the same damage.
			for _, readOnly := range []bool{true, false} {
				opts := damageOptions(testutil.NewLog(t).Logger())
				opts.ReadOnly = readOnly
				s, err := dedup.Open(dir, opts)
				if s != nil {
					assert.NoError(t, s.Close())
				}
				require.ErrorIs(t, err, tc.want, "ReadOnly %v", readOnly)
				assert.Contains(t, err.Error(), file, "the error must name the damaged file")
				if tc.offset {
					assert.Contains(t, err.Error(), "offset", "the error must give the offset")
				}
				if tc.todo != "" {
					assert.Contains(t, err.Error(), tc.todo, "the error must say what to do")
				}
			}
		})
	}
}

// TestCorruptWALSegmentFailsOpen damages a record in a WAL segment that is
// not the newest: that is never a torn write.
func TestCorruptWALSegmentFailsOpen(t *testing.T) {
	// No checkpoint, so every segment is replayed.
	opts := &dedup.Options{SegmentSize: 64 << 10, Sync: dedup.SyncNone, Logger: testutil.NewLog(t).Logger()}
	dir := markedStore(t, opts, 6000)
	segs := storeFiles(t, dir, "wal/*.wal")
	require.GreaterOrEqual(t, len(segs), 2, "the WAL must have rotated")
	const payloadOff = 32 + 24 + 10 // in the first record's payload
	flipByte(t, segs[0], payloadOff)

	s, err := dedup.Open(dir, opts)
	if s != nil {
		assert.NoError(t, s.Close())
	}
	require.ErrorIs(t, err, dedup.ErrCorrupt)
	assert.Contains(t, err.Error(), segs[0])
	assert.Contains(t, err.Error(), "offset 32")
}

// TestCorruptPebbleTableIsDetected flips a byte in the data block of every
// Pebble table. Pebble checksums its blocks, so Open or a Seen reading a
// table must fail with ErrCorrupt naming it; no ID may be answered from bad
// data. Two checkpoints leave two tables, too few for a compaction to
// read them in the background.
func TestCorruptPebbleTableIsDetected(t *testing.T) {
	const marks = 120
	// Not t.Logf: a store left open by a panic may log after the test.
	var log testutil.Log
	dir := markedStore(t, damageOptions(log.Logger()), marks)
	tables := storeFiles(t, dir, "index/db/*.sst")
	require.NotEmpty(t, tables)
	require.Less(t, len(tables), 4, "more L0 tables would start a compaction")
	for _, path := range tables {
		flipByte(t, path, 64) // data blocks come first in a table
	}

	s, err := dedup.Open(dir, damageOptions(log.Logger()))
	if err == nil {
		for i := range marks {
			if _, err = seenNoPanic(t, s, damageID(i)); err != nil {
				break
			}
		}
		assert.NoError(t, s.Close())
	}
	require.ErrorIs(t, err, dedup.ErrCorrupt, "Open or Seen must detect the damaged tables")
	// Pebble names a table by its file number.
	assert.True(t, slices.ContainsFunc(tables, func(p string) bool {
		return strings.Contains(err.Error(), strings.TrimSuffix(filepath.Base(p), ".sst"))
	}), "the error %q must name a damaged table", err)
}

// seenNoPanic is Seen, failing the test if Seen panics: damage must come
// back as an error. The store is then left open, since a panic in Seen may
// leave the store's lock held and Close waiting for it forever.
func seenNoPanic(t *testing.T, s *dedup.Store, id []byte) (bool, error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			msg, _, _ := strings.Cut(fmt.Sprint(p), "\n")
			t.Fatalf("Seen(%s) panicked instead of returning ErrCorrupt: %s", id, msg)
		}
	}()
	return s.Seen(id)
}

// TestRebuildMissingFilters removes the filter snapshots: the filters are
// derived data, so Open rebuilds them from Pebble and says so.
func TestRebuildMissingFilters(t *testing.T) {
	dir := checkpointedStore(t)
	for _, path := range storeFiles(t, dir, "index/filters/*.bloom") {
		require.NoError(t, os.Remove(path))
	}
	var log testutil.Log
	assertAllSeen(t, dir, damageOptions(log.Logger()), damageMarks)
	assert.Len(t, log.Find("index: filter snapshot missing, rebuilding the filters from Pebble"), 1, "Open must report the rebuild; it logged %v", log.Records())
	assertAllSeen(t, dir, damageOptions(testutil.NewLog(t).Logger()), damageMarks)
}

// TestTornWALTailIsTruncated appends garbage after the last record of the
// newest WAL segment, as a crash cutting a write short would leave: Open
// repairs it and keeps every acknowledged mark.
func TestTornWALTailIsTruncated(t *testing.T) {
	dir := checkpointedStore(t)
	segs := storeFiles(t, dir, "wal/*.wal")
	require.NotEmpty(t, segs)
	newest := segs[len(segs)-1]
	editFile(t, newest, func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 9)...) })

	var log testutil.Log
	assertAllSeen(t, dir, damageOptions(log.Logger()), damageMarks)
	if torn := log.Find("wal: truncated a torn tail"); assert.Len(t, torn, 1, "Open must report the truncation; it logged %v", log.Records()) {
		assert.Equal(t, newest, torn[0].Attrs["path"])
		assert.Equal(t, uint64(31), torn[0].Attrs["first_lost_lsn"], "nothing after the last record, LSN 30, is lost")
	}
	assertAllSeen(t, dir, damageOptions(testutil.NewLog(t).Logger()), damageMarks)
}

// TestCorruptPebbleBlockFailsEveryRead overwrites 200 bytes in the middle
// of the one Pebble table of a checkpointed store, inside a data block that
// Open does not read, and reopens it with no block cache to speak of. Every
// read path that meets the block must fail with ErrCorrupt, and none may
// answer an ID it holds as new: a batch used to skip the failed seek and
// mark the ID again, overwriting the damage.
func TestCorruptPebbleBlockFailsEveryRead(t *testing.T) {
	const marks, batchSize = 20000, 256
	ids := make([][]byte, marks)
	for i := range ids {
		ids[i] = damageID(i)
	}
	healthy := t.TempDir()
	s, err := dedup.Open(healthy, &dedup.Options{Sync: dedup.SyncNone, Logger: testutil.NewLog(t).Logger()})
	require.NoError(t, err)
	for i := 0; i < marks; i += 1000 {
		_, err := s.CheckAndMarkBatch(ids[i:i+1000], time.Hour)
		require.NoError(t, err)
	}
	require.NoError(t, s.Checkpoint())
	require.NoError(t, s.Close())

	// Each read stops at its first error, and returns it with the IDs it
	// answered as new or unseen before.
	cases := []struct {
		name string
		read func(s *dedup.Store) (asNew []string, err error)
	}{
		{"batch", func(s *dedup.Store) (asNew []string, _ error) {
			for i := 0; i < marks; i += batchSize {
				batch := ids[i:min(i+batchSize, marks)]
				isNew, berr := s.CheckAndMarkBatch(batch, time.Hour)
				for j, n := range isNew {
					if n {
						asNew = append(asNew, string(batch[j]))
					}
				}
				if berr != nil {
					return asNew, berr
				}
			}
			return asNew, nil
		}},
		{"single", func(s *dedup.Store) (asNew []string, _ error) {
			for _, id := range ids {
				n, err := s.CheckAndMark(id, time.Hour)
				if err != nil {
					return asNew, err
				}
				if n {
					asNew = append(asNew, string(id))
				}
			}
			return asNew, nil
		}},
		{"seen", func(s *dedup.Store) (asNew []string, _ error) {
			for _, id := range ids {
				seen, err := s.Seen(id)
				if err != nil {
					return asNew, err
				}
				if !seen {
					asNew = append(asNew, string(id))
				}
			}
			return asNew, nil
		}},
		{"scan", func(s *dedup.Store) ([]string, error) {
			return nil, s.Scan(nil, false, func(dedup.Mark) bool { return true })
		}},
		{"verify", func(s *dedup.Store) ([]string, error) {
			_, err := s.Verify()
			return nil, err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.CopyFS(dir, os.DirFS(healthy)))
			tables := storeFiles(t, dir, "index/db/*.sst")
			require.Len(t, tables, 1, "one checkpoint, one table")
			editFile(t, tables[0], func(b []byte) []byte {
				require.Greater(t, len(b), 256<<10, "the table must have many data blocks")
				copy(b[len(b)/2:], bytes.Repeat([]byte{0xa5}, 200))
				return b
			})
			s, err := dedup.Open(dir, &dedup.Options{CacheSize: 1, Logger: testutil.NewLog(t).Logger()})
			require.NoError(t, err, "Open reads no data block")
			defer func() { assert.NoError(t, s.Close()) }()

			asNew, err := tc.read(s)
			assert.Empty(t, asNew, "IDs the damaged table holds were answered as new")
			require.ErrorIs(t, err, dedup.ErrCorrupt)
			assert.Contains(t, err.Error(), strings.TrimSuffix(filepath.Base(tables[0]), ".sst"), "the error must name the table")
			assert.NotContains(t, err.Error(), "corruption detail carrier", "Pebble's internal carrier line")
			assert.Contains(t, err.Error(), "restore the store", "the error must say what to do")
		})
	}
}
