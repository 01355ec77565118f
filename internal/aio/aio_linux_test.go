//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le)

package aio

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// TestCompletionOfEveryResult reads the results an io_event can carry:
// only 0 is a sync that succeeded.
func TestCompletionOfEveryResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  int64
		want error
	}{
		{"success", 0, nil},
		{"EIO", -int64(unix.EIO), unix.EIO},
		{"a short result", 512, ErrUnexpected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := completionOf(ioEvent{data: 7, res: tc.res})
			assert.Equal(t, uint64(7), c.Tag, "%s: tag", tc.name)
			if tc.want == nil {
				assert.NoError(t, c.Err, "%s", tc.name)
			} else {
				assert.ErrorIs(t, c.Err, tc.want, "%s", tc.name)
			}
		})
	}
}
