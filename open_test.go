package dedup_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// TestOpenRefusesWhatIsNotAStore checks that Open names what it refuses,
// with ErrNotStore, and leaves no file behind: not even its LOCK.
func TestOpenRefusesWhatIsNotAStore(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prepare  func(t *testing.T, path string)
		readOnly bool
	}{
		{"directory with other files", func(t *testing.T, path string) {
			require.NoError(t, os.Mkdir(path, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(path, "notes.txt"), []byte("mine"), 0o644))
		}, false},
		{"a file", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("mine"), 0o644))
		}, false},
		{"missing, read-only", func(*testing.T, string) {}, true},
		{"empty directory, read-only", func(t *testing.T, path string) {
			require.NoError(t, os.Mkdir(path, 0o755))
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "target")
			tc.prepare(t, path)
			before := listing(t, path)
			_, err := dedup.Open(path, &dedup.Options{ReadOnly: tc.readOnly})
			require.ErrorIs(t, err, dedup.ErrNotStore)
			assert.Contains(t, err.Error(), path)
			assert.Equal(t, before, listing(t, path), "Open changed what it refused")
		})
	}
}

// listing returns the names in path, or its content if it is a file, or
// nil if it does not exist.
func listing(t *testing.T, path string) []string {
	t.Helper()
	st, err := os.Stat(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	if !st.IsDir() {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		return []string{string(b)}
	}
	entries, err := os.ReadDir(path)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestOpenWithoutFormatKeepsData checks that a store whose FORMAT file is
// lost is refused with ErrCorrupt rather than started over, while a
// creation cut short before any write is started over.
func TestOpenWithoutFormatKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	_, err = s.CheckAndMark([]byte("kept"), 0)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, os.Remove(filepath.Join(dir, "FORMAT")))

	_, err = dedup.Open(dir, nil)
	require.ErrorIs(t, err, dedup.ErrCorrupt)
	assert.Contains(t, err.Error(), "WAL records")

	fresh := t.TempDir()
	s, err = dedup.Open(fresh, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, os.Remove(filepath.Join(fresh, "FORMAT")))
	s, err = dedup.Open(fresh, nil)
	require.NoError(t, err, "a store that never took a write is created again")
	require.NoError(t, s.Close())
}

// TestChangingFalsePositiveRateKeepsMarks reopens a store with another
// FalsePositiveRate, which changes the number of hashes of new filters:
// the marks in the old filters must still be found, both ways.
func TestChangingFalsePositiveRateKeepsMarks(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after float64
	}{
		{"tighter", 0.01, 0.0001},
		{"looser", 0.0001, 0.01},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ids := storetest.IDs("fp", 500)
			s, err := dedup.Open(dir, &dedup.Options{FalsePositiveRate: tc.before})
			require.NoError(t, err)
			storetest.MarkAll(t, s, ids[:250], 0)
			require.NoError(t, s.Checkpoint(), "half the marks in snapshotted filters")
			storetest.MarkAll(t, s, ids[250:], 0) // half only in the WAL
			require.NoError(t, s.Close())

			s = storetest.OpenAt(t, dir, &dedup.Options{FalsePositiveRate: tc.after})
			isNew, err := s.CheckAndMarkBatch(ids, 0)
			require.NoError(t, err)
			assert.NotContains(t, isNew, true, "a mark was lost with the old filters")
		})
	}
}

// TestOpenAfterAFailedSyncInThisBoot finds the marker a WAL leaves when a
// write or fsync of its OS files fails, written in this boot: a writable
// Open refuses with ErrFailedSync, since the page cache may hold marks the
// disk does not, while a read-only Open inspects the store.
func TestOpenAfterAFailedSyncInThisBoot(t *testing.T) {
	s, dir := storetest.Open(t, nil)
	_, err := s.CheckAndMark([]byte("acked"), 0)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	marker := "dedup WAL failure\nboot " + ttl.Real{}.Boot() + "\nfdatasync: input/output error\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wal", "FAILED"), []byte(marker), 0o600))

	_, err = dedup.Open(dir, nil)
	require.ErrorIs(t, err, dedup.ErrFailedSync)
	assert.Contains(t, err.Error(), "reboot", "the error says what to do")

	ro := storetest.OpenAt(t, dir, &dedup.Options{ReadOnly: true})
	seen, err := ro.Seen([]byte("acked"))
	require.NoError(t, err)
	assert.True(t, seen, "a read-only Open inspects the store")
}
