package dedup

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
)

// TestFileModesKeepTheWALDirect checks that the wrapper that sets file
// modes leaves the WAL its background fsyncs on the OS filesystem, and
// that a wrapper which interposes on writes, as the fault-injection tests'
// does, keeps them off.
func TestFileModesKeepTheWALDirect(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   vfs.FS
		want bool
	}{
		{"the OS filesystem", vfs.Default, true},
		{"errorfs over the OS filesystem", errorfs.Wrap(vfs.Default, errorfs.ErrInjected), false},
		{"memory", vfs.NewMem(), false},
	} {
		o := Options{FS: tc.fs}
		assert.Equal(t, tc.want, newPermFS(tc.fs, &o).direct(), tc.name)
	}
}
