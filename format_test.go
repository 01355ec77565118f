package dedup_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// format1TTLs are the TTLs of testdata/store-format1's marks, one span
// class each, from a 4-byte short value to one too long for any.
var format1TTLs = []time.Duration{time.Second, 30 * time.Second, 10 * time.Minute, 2 * time.Hour,
	24 * time.Hour, 400 * 24 * time.Hour, 20 * 365 * 24 * time.Hour}

// readMarkList reads the deadlines, in Unix nanoseconds, of
// testdata/store-format1.marks: lines of an ID, a deadline and whether
// the mark holds a record.
func readMarkList(t *testing.T, path string) map[string]int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	want := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		require.Len(t, fields, 3, "line %q", sc.Text())
		d, err := strconv.ParseInt(fields[1], 10, 64)
		require.NoError(t, err)
		want[fields[0]] = d
	}
	require.NoError(t, sc.Err())
	return want
}

// scanDeadlines returns the deadline of every live mark of s.
func scanDeadlines(t *testing.T, s *dedup.Store) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	require.NoError(t, s.Scan(nil, false, func(m dedup.Mark) bool {
		got[string(m.ID)] = m.Deadline.UnixNano()
		return true
	}))
	return got
}

// TestStoreOfFormat1ReadsExactlyAndMovesUp opens a store that the build
// before short mark values wrote (testdata/store-format1: format 1, marks
// of seven span classes checkpointed with 8-byte deadlines, a record, a
// forget, a mark only in the WAL). Read-only, it is read exactly and left
// at format 1, which FormatVersion reports. Opened for writing, it moves up to format 2 before writing,
// so that a format-1 build refuses it from then on; its old marks, and new
// ones written and compacted into the same tables, read back exact to the
// nanosecond, also after a reopen.
func TestStoreOfFormat1ReadsExactlyAndMovesUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.CopyFS(dir, os.DirFS("testdata/store-format1")))
	want := readMarkList(t, "testdata/store-format1.marks")
	clock := ttl.NewFake(testutil.Epoch.Add(100 * time.Millisecond))
	opts := &dedup.Options{Clock: clock, MaxTTL: 30 * 365 * 24 * time.Hour, ExpectedMarks: 64, SegmentSize: 1 << 16}
	format := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "FORMAT"))
		require.NoError(t, err)
		return string(b)
	}

	ro := *opts
	ro.ReadOnly = true
	s := storetest.OpenAt(t, dir, &ro)
	assert.Equal(t, want, scanDeadlines(t, s), "read-only")
	assert.Equal(t, 1, s.FormatVersion(), "read-only")
	require.NoError(t, s.Close())
	assert.Equal(t, "dedup store format 1\n", format(), "read-only Open writes nothing")

	s = storetest.OpenAt(t, dir, opts)
	assert.Equal(t, fmt.Sprintf("dedup store format %d\n", dedup.FormatVersion), format(), "moved up when opened for writing")
	assert.Equal(t, want, scanDeadlines(t, s), "opened for writing")
	assert.Equal(t, dedup.FormatVersion, s.FormatVersion(), "opened for writing")
	for _, d := range format1TTLs {
		clock.Advance(7654321 * time.Nanosecond)
		id := fmt.Sprintf("new-%v", d)
		isNew, err := s.CheckAndMark([]byte(id), d)
		require.NoError(t, err)
		require.True(t, isNew, id)
		want[id] = clock.Now().Add(d).UnixNano()
	}
	require.NoError(t, s.Checkpoint())
	require.NoError(t, s.Compact(t.Context()))
	assert.Equal(t, want, scanDeadlines(t, s), "old and new marks, compacted together")
	v, err := s.Verify()
	require.NoError(t, err)
	assert.Empty(t, v.Uncovered, "verify")
	require.NoError(t, s.Close())

	s = storetest.OpenAt(t, dir, opts)
	assert.Equal(t, want, scanDeadlines(t, s), "reopened")
	id := []byte("new-1s")
	clock.Set(time.Unix(0, want["new-1s"]-1))
	seen, err := s.Seen(id)
	require.NoError(t, err)
	assert.True(t, seen, "live a nanosecond before its deadline")
	clock.Set(time.Unix(0, want["new-1s"]))
	seen, err = s.Seen(id)
	require.NoError(t, err)
	assert.False(t, seen, "expired at its deadline")
}
