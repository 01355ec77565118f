package dedup_test

import (
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// TestStoreFilesHaveTheModesPromised checks that every file and directory
// a store creates, through its WAL, its checkpoints, Pebble and a
// snapshot, has Options.FileMode and DirMode, by default 0600 and 0700,
// whatever the umask.
func TestStoreFilesHaveTheModesPromised(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, tc := range []struct {
		name      string
		opts      dedup.Options
		file, dir fs.FileMode
	}{
		{"defaults", dedup.Options{}, 0o600, 0o700},
		{"options", dedup.Options{FileMode: 0o640, DirMode: 0o750}, 0o640, 0o750},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "new", "store")
			opts := tc.opts
			opts.SegmentSize, opts.MemtableMarks = 1<<16, 500
			s, err := dedup.Open(root, &opts)
			require.NoError(t, err)
			storetest.MarkAll(t, s, storetest.IDs("perm", 3000), 0)
			require.NoError(t, s.Checkpoint())
			require.NoError(t, s.Snapshot(filepath.Join(root, "..", "snapshot")))
			require.NoError(t, s.Close())

			n := 0
			require.NoError(t, filepath.WalkDir(filepath.Join(root, "..", ".."), func(p string, d fs.DirEntry, err error) error {
				require.NoError(t, err)
				if p == filepath.Join(root, "..", "..") {
					return nil // made by the test
				}
				st, err := d.Info()
				require.NoError(t, err)
				want := tc.file
				if d.IsDir() {
					want = tc.dir
				}
				n++
				assert.Equal(t, want, st.Mode().Perm(), "%s", p)
				return nil
			}))
			assert.Greater(t, n, 20, "the walk saw the store")
		})
	}
}

// TestFileModesAreValidated checks that modes that would lock the store
// out of its own files are refused.
func TestFileModesAreValidated(t *testing.T) {
	for _, o := range []dedup.Options{{FileMode: 0o400}, {DirMode: 0o600}, {FileMode: fs.ModeDir | 0o600}} {
		_, err := dedup.Open(t.TempDir(), &o)
		assert.ErrorIs(t, err, dedup.ErrInvalidOptions, "%+v", o)
	}
}
