// Package storetest opens and fills stores for tests: each store it opens is closed,
// and its Close error checked, when the test ends.
//
// It imports the root package, so the root package's internal tests
// cannot use it; its external tests and every other package's can.
package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
)

// Open opens a store in a new temporary directory and returns it with its
// directory.
func Open(t testing.TB, opts *dedup.Options) (*dedup.Store, string) {
	t.Helper()
	dir := t.TempDir()
	return OpenAt(t, dir, opts), dir
}

// OpenAt opens the store in dir, on opts.FS if it is set. Without
// opts.Logger, the store logs to the test's log (testutil.NewLog), not to
// the process's stderr, where it would cut into benchmark results.
func OpenAt(t testing.TB, dir string, opts *dedup.Options) *dedup.Store {
	t.Helper()
	var o dedup.Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = testutil.NewLog(t).Logger()
	}
	s, err := dedup.Open(dir, &o)
	require.NoError(t, err, "open %s", dir)
	t.Cleanup(func() { assert.NoError(t, s.Close(), "close %s at cleanup", dir) })
	return s
}

// OpenMem opens a store on a new in-memory file system, with opts but for
// their FS, and leaves opts as it found them.
func OpenMem(t testing.TB, opts *dedup.Options) *dedup.Store {
	t.Helper()
	var o dedup.Options
	if opts != nil {
		o = *opts
	}
	o.FS = vfs.NewMem()
	return OpenAt(t, "store", &o)
}

// Reopen closes s and opens its directory dir again with opts.
func Reopen(t testing.TB, s *dedup.Store, dir string, opts *dedup.Options) *dedup.Store {
	t.Helper()
	require.NoError(t, s.Close(), "close %s before reopen", dir)
	return OpenAt(t, dir, opts)
}

// IDs returns n IDs named after prefix.
func IDs(prefix string, n int) [][]byte {
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "%s-%03d", prefix, i)
	}
	return ids
}

// MarkAll marks ids for ttl and requires every one to be new.
func MarkAll(t testing.TB, s *dedup.Store, ids [][]byte, ttl time.Duration) {
	t.Helper()
	isNew, err := s.CheckAndMarkBatch(ids, ttl)
	require.NoError(t, err)
	for i, v := range isNew {
		require.True(t, v, "%s must be new", ids[i])
	}
}

// SeenAll reports how many of ids are seen.
func SeenAll(t testing.TB, s *dedup.Store, ids [][]byte) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		seen, err := s.Seen(id)
		require.NoError(t, err)
		if seen {
			n++
		}
	}
	return n
}
