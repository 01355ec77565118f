package dedup_test

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// checkAndMark calls CheckAndMark and fails the test on error.
func checkAndMark(t *testing.T, s *dedup.Store, id string, life time.Duration) bool {
	t.Helper()
	isNew, err := s.CheckAndMark([]byte(id), life)
	require.NoError(t, err, "CheckAndMark(%q, %v)", id, life)
	return isNew
}

// seen calls Seen and fails the test on error.
func seen(t *testing.T, s *dedup.Store, id string) bool {
	t.Helper()
	ok, err := s.Seen([]byte(id))
	require.NoError(t, err, "Seen(%q)", id)
	return ok
}

// ids converts strings to the [][]byte a batch takes.
func ids(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func TestBadIDIsRejected(t *testing.T) {
	s, _ := storetest.Open(t, nil)
	require.True(t, checkAndMark(t, s, "kept", 0))

	calls := []struct {
		name string
		call func(id []byte) error
	}{
		{name: "CheckAndMark", call: func(id []byte) error { _, err := s.CheckAndMark(id, 0); return err }},
		{name: "CheckAndMarkBatch", call: func(id []byte) error { _, err := s.CheckAndMarkBatch([][]byte{id}, 0); return err }},
		{name: "Seen", call: func(id []byte) error { _, err := s.Seen(id); return err }},
		{name: "Forget", call: s.Forget},
	}
	inputs := []struct {
		name string
		id   []byte
		want error
	}{
		{name: "nil ID", id: nil, want: dedup.ErrEmptyID},
		{name: "empty ID", id: []byte{}, want: dedup.ErrEmptyID},
		{name: "ID one byte over default MaxIDSize", id: bytes.Repeat([]byte("x"), 4097), want: dedup.ErrIDTooLong},
	}
	for _, c := range calls {
		for _, in := range inputs {
			t.Run(c.name+"/"+in.name, func(t *testing.T) {
				assert.ErrorIs(t, c.call(in.id), in.want)
			})
		}
	}

	assert.True(t, checkAndMark(t, s, string(bytes.Repeat([]byte("x"), 4096)), 0),
		"an ID of exactly MaxIDSize bytes is accepted")
	assert.True(t, seen(t, s, "kept"), "rejected calls must not disturb stored marks")
}

func TestBadTTLIsRejected(t *testing.T) {
	s, _ := storetest.Open(t, nil)
	const maxTTL = 7 * 24 * time.Hour

	calls := []struct {
		name string
		call func(id []byte, life time.Duration) error
	}{
		{name: "CheckAndMark", call: func(id []byte, life time.Duration) error { _, err := s.CheckAndMark(id, life); return err }},
		{name: "CheckAndMarkBatch", call: func(id []byte, life time.Duration) error {
			_, err := s.CheckAndMarkBatch([][]byte{id}, life)
			return err
		}},
	}
	inputs := []struct {
		name string
		ttl  time.Duration
	}{
		{name: "negative", ttl: -time.Nanosecond},
		{name: "one nanosecond over default MaxTTL", ttl: maxTTL + time.Nanosecond},
	}
	for _, c := range calls {
		for _, in := range inputs {
			t.Run(c.name+"/"+in.name, func(t *testing.T) {
				id := c.name + "/" + in.name
				assert.ErrorIs(t, c.call([]byte(id), in.ttl), dedup.ErrInvalidTTL)
				assert.False(t, seen(t, s, id), "an ID whose TTL was rejected must not be marked")
			})
		}
	}

	assert.True(t, checkAndMark(t, s, "max", maxTTL), "a TTL of exactly MaxTTL is accepted")
}

func TestLimitsFromOptions(t *testing.T) {
	s, _ := storetest.Open(t, &dedup.Options{MaxIDSize: 8, MaxTTL: time.Hour, DefaultTTL: time.Minute})

	_, err := s.CheckAndMark([]byte("123456789"), 0)
	assert.ErrorIs(t, err, dedup.ErrIDTooLong, "9 bytes with MaxIDSize 8")
	assert.True(t, checkAndMark(t, s, "12345678", 0), "8 bytes with MaxIDSize 8")

	_, err = s.CheckAndMark([]byte("long"), time.Hour+time.Nanosecond)
	assert.ErrorIs(t, err, dedup.ErrInvalidTTL, "TTL above MaxTTL of 1h")
	assert.True(t, checkAndMark(t, s, "long", time.Hour), "TTL equal to MaxTTL of 1h")
}

func TestBatchWithBadInputIsRejectedWhole(t *testing.T) {
	tests := []struct {
		name  string
		batch [][]byte
		ttl   time.Duration
		want  error
	}{
		{name: "empty ID first", batch: [][]byte{{}, []byte("a"), []byte("b")}, want: dedup.ErrEmptyID},
		{name: "empty ID in the middle", batch: [][]byte{[]byte("a"), {}, []byte("b")}, want: dedup.ErrEmptyID},
		{name: "nil ID last", batch: [][]byte{[]byte("a"), []byte("b"), nil}, want: dedup.ErrEmptyID},
		{name: "long ID last", batch: [][]byte{[]byte("a"), []byte("b"), bytes.Repeat([]byte("x"), 4097)}, want: dedup.ErrIDTooLong},
		{name: "negative TTL", batch: ids("a", "b"), ttl: -time.Second, want: dedup.ErrInvalidTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := storetest.Open(t, nil)
			_, err := s.CheckAndMarkBatch(tc.batch, tc.ttl)
			assert.ErrorIs(t, err, tc.want)
			for _, id := range []string{"a", "b"} {
				assert.False(t, seen(t, s, id), "%q of a rejected batch must not be marked", id)
				assert.True(t, checkAndMark(t, s, id, 0), "%q of a rejected batch must still be new", id)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts dedup.Options
	}{
		{name: "DefaultTTL above MaxTTL", opts: dedup.Options{DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour}},
		{name: "negative DefaultTTL", opts: dedup.Options{DefaultTTL: -time.Second}},
		{name: "negative MaxTTL", opts: dedup.Options{MaxTTL: -time.Hour}},
		{name: "negative MaxIDSize", opts: dedup.Options{MaxIDSize: -1}},
		{name: "MaxIDSize above 1MiB", opts: dedup.Options{MaxIDSize: 1<<20 + 1}},
		{name: "unknown Sync mode", opts: dedup.Options{Sync: dedup.SyncMode(42)}},
		{name: "negative SyncInterval", opts: dedup.Options{Sync: dedup.SyncInterval, SyncInterval: -time.Millisecond}},
		{name: "FalsePositiveRate of 1", opts: dedup.Options{FalsePositiveRate: 1}},
		{name: "negative FalsePositiveRate", opts: dedup.Options{FalsePositiveRate: -0.01}},
		{name: "FalsePositiveRate below 1e-6", opts: dedup.Options{FalsePositiveRate: 1e-7}},
		{name: "FalsePositiveRate of 1e-80", opts: dedup.Options{FalsePositiveRate: 1e-80}},
		{name: "FalsePositiveRate NaN", opts: dedup.Options{FalsePositiveRate: math.NaN()}},
		{name: "negative ExpectedMarks", opts: dedup.Options{ExpectedMarks: -1}},
		{name: "negative MemtableMarks", opts: dedup.Options{MemtableMarks: -1}},
		{name: "ExpectedMarks above 1<<30", opts: dedup.Options{ExpectedMarks: 1<<30 + 1}},
		{name: "MemtableMarks above 1<<28", opts: dedup.Options{MemtableMarks: 1<<28 + 1}},
		{name: "SegmentSize below 64KiB", opts: dedup.Options{SegmentSize: 1 << 10}},
		{name: "negative MaxMarks", opts: dedup.Options{MaxMarks: -1}},
		{name: "negative MaxDiskBytes", opts: dedup.Options{MaxDiskBytes: -1}},
		{name: "negative CacheSize", opts: dedup.Options{CacheSize: -1}},
		{name: "negative MaxValueSize", opts: dedup.Options{MaxValueSize: -1}},
		{name: "unknown FullPolicy", opts: dedup.Options{WhenFull: dedup.DropOldest + 1}},
		{name: "negative ClockJumpGrace", opts: dedup.Options{ClockJumpGrace: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := dedup.Open(dir, &tc.opts)
			assert.ErrorIs(t, err, dedup.ErrInvalidOptions)
			assert.Nil(t, s)
			// A refused Open must leave the directory free.
			storetest.OpenAt(t, dir, nil)
		})
	}
}

func TestUseAfterClose(t *testing.T) {
	s, dir := storetest.Open(t, nil)
	require.True(t, checkAndMark(t, s, "a", 0))
	require.NoError(t, s.Close())
	assert.NoError(t, s.Close(), "closing twice is fine")

	calls := []struct {
		name string
		call func() error
	}{
		{name: "CheckAndMark", call: func() error { _, err := s.CheckAndMark([]byte("b"), 0); return err }},
		{name: "CheckAndMarkBatch", call: func() error { _, err := s.CheckAndMarkBatch(ids("b", "c"), 0); return err }},
		{name: "Seen", call: func() error { _, err := s.Seen([]byte("a")); return err }},
		{name: "Forget", call: func() error { return s.Forget([]byte("a")) }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			assert.ErrorIs(t, c.call(), dedup.ErrClosed)
		})
	}

	s = storetest.OpenAt(t, dir, nil)
	assert.True(t, seen(t, s, "a"), "mark made before Close")
	assert.False(t, seen(t, s, "b"), "calls after Close must not apply")
	assert.True(t, checkAndMark(t, s, "b", 0))
}

func TestExpiryIsExactOnRead(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s, _ := storetest.Open(t, &dedup.Options{Clock: clock})
	const life = time.Minute

	require.True(t, checkAndMark(t, s, "a", life))
	require.True(t, checkAndMark(t, s, "b", life))

	clock.Advance(life - time.Nanosecond)
	assert.True(t, seen(t, s, "a"), "a mark is live 1ns before its deadline")
	assert.False(t, checkAndMark(t, s, "b", life), "a mark 1ns before its deadline is a duplicate")

	clock.Advance(time.Nanosecond)
	assert.False(t, seen(t, s, "a"), "a mark expires exactly at its deadline")
	assert.True(t, checkAndMark(t, s, "a", life), "an expired ID is new again")
	assert.False(t, checkAndMark(t, s, "a", life), "and marked again")

	clock.Advance(life - time.Nanosecond)
	assert.True(t, seen(t, s, "a"), "a re-mark lives for its whole new TTL")
	clock.Advance(time.Nanosecond)
	assert.False(t, seen(t, s, "a"), "a re-mark expires exactly at its new deadline")
}

func TestExpiryAcrossReopen(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock}
	s, dir := storetest.Open(t, opts)

	require.True(t, checkAndMark(t, s, "minute", time.Minute))
	require.True(t, checkAndMark(t, s, "hour", time.Hour))

	clock.Advance(time.Minute - time.Nanosecond)
	s = storetest.Reopen(t, s, dir, opts)
	assert.True(t, seen(t, s, "minute"), "1ns before its deadline, after reopen")
	assert.True(t, seen(t, s, "hour"))

	clock.Advance(time.Nanosecond)
	s = storetest.Reopen(t, s, dir, opts)
	assert.False(t, seen(t, s, "minute"), "at its deadline, after reopen")
	assert.True(t, seen(t, s, "hour"))
	assert.True(t, checkAndMark(t, s, "minute", time.Minute), "expired before reopen, so new again")

	clock.Advance(time.Hour)
	s = storetest.Reopen(t, s, dir, opts)
	assert.False(t, seen(t, s, "minute"), "the re-mark has expired too")
	assert.False(t, seen(t, s, "hour"))
}

func TestZeroTTLUsesDefaultTTL(t *testing.T) {
	tests := []struct {
		name       string
		defaultTTL time.Duration
		want       time.Duration
	}{
		{name: "Options.DefaultTTL", defaultTTL: time.Hour, want: time.Hour},
		{name: "built-in default of 24h", want: 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			s, _ := storetest.Open(t, &dedup.Options{Clock: clock, DefaultTTL: tc.defaultTTL})

			require.True(t, checkAndMark(t, s, "single", 0))
			isNew, err := s.CheckAndMarkBatch(ids("batch"), 0)
			require.NoError(t, err)
			require.Equal(t, []bool{true}, isNew)

			clock.Advance(tc.want - time.Nanosecond)
			assert.True(t, seen(t, s, "single"), "live 1ns before DefaultTTL")
			assert.True(t, seen(t, s, "batch"), "live 1ns before DefaultTTL")

			clock.Advance(time.Nanosecond)
			assert.False(t, seen(t, s, "single"), "expired at DefaultTTL")
			assert.False(t, seen(t, s, "batch"), "expired at DefaultTTL")
		})
	}
}

func TestForget(t *testing.T) {
	s, _ := storetest.Open(t, nil)
	require.True(t, checkAndMark(t, s, "a", 0))
	require.True(t, checkAndMark(t, s, "b", 0))

	require.NoError(t, s.Forget([]byte("a")))
	assert.False(t, seen(t, s, "a"), "a forgotten ID is not seen")
	assert.True(t, seen(t, s, "b"), "Forget touches only its ID")
	assert.True(t, checkAndMark(t, s, "a", 0), "a forgotten ID is new again")
	assert.False(t, checkAndMark(t, s, "a", 0))

	assert.NoError(t, s.Forget([]byte("never-marked")), "forgetting an unknown ID is not an error")
	assert.False(t, seen(t, s, "never-marked"))
}

func TestForgetSurvivesReopen(t *testing.T) {
	s, dir := storetest.Open(t, nil)
	for _, id := range []string{"forgotten", "re-marked", "kept"} {
		require.True(t, checkAndMark(t, s, id, 0))
	}
	require.NoError(t, s.Forget([]byte("forgotten")))
	require.NoError(t, s.Forget([]byte("re-marked")))
	require.True(t, checkAndMark(t, s, "re-marked", 0))

	s = storetest.Reopen(t, s, dir, nil)
	assert.False(t, seen(t, s, "forgotten"), "Forget must survive reopen")
	assert.True(t, seen(t, s, "re-marked"), "a mark made after Forget must survive reopen")
	assert.True(t, seen(t, s, "kept"))
	assert.True(t, checkAndMark(t, s, "forgotten", 0), "a forgotten ID is new after reopen")
}

// TestMarksAfterCheckpoint repeats the expiry, Forget and reopen checks on
// marks that checkpoints have moved from the memtable into the index.
func TestMarksAfterCheckpoint(t *testing.T) {
	const n = 32
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock, MemtableMarks: 16}
	s, dir := storetest.Open(t, opts)
	id := func(kind string, i int) string { return fmt.Sprintf("%s-%02d", kind, i) }

	for i := range n {
		require.True(t, checkAndMark(t, s, id("minute", i), time.Minute))
		require.True(t, checkAndMark(t, s, id("hour", i), time.Hour))
	}
	for i := range n / 2 {
		require.NoError(t, s.Forget([]byte(id("hour", i))))
	}
	require.Eventually(t, func() bool { return s.Stats().CheckpointLSN > 0 }, 5*time.Second, time.Millisecond,
		"a checkpoint must run once the memtable holds more than MemtableMarks")

	// The first half of the hour IDs is forgotten, the rest stays live.
	assertLive := func(when string, minuteLive bool) {
		t.Helper()
		for i := range n {
			assert.Equal(t, minuteLive, seen(t, s, id("minute", i)), "%s: %s", when, id("minute", i))
			assert.Equal(t, i >= n/2, seen(t, s, id("hour", i)), "%s: %s", when, id("hour", i))
		}
	}
	assertLive("after checkpoints", true)
	s = storetest.Reopen(t, s, dir, opts)
	assertLive("after reopen", true)
	clock.Advance(time.Minute - time.Nanosecond)
	assertLive("1ns before the minute deadline", true)
	clock.Advance(time.Nanosecond)
	assertLive("at the minute deadline", false)

	for i := range n {
		assert.True(t, checkAndMark(t, s, id("minute", i), time.Minute), "expired %s is new again", id("minute", i))
		assert.Equal(t, i < n/2, checkAndMark(t, s, id("hour", i), time.Minute), "only forgotten hour IDs are new: %s", id("hour", i))
	}
}

// TestCheckpointMergesFilterChains fills one generation past ten times
// ExpectedMarks, which grows a chain of filters, and checks that a
// checkpoint leaves it one filter that still covers every mark, before and
// after reopen. The merge is persisted by the checkpoint after it.
func TestCheckpointMergesFilterChains(t *testing.T) {
	opts := &dedup.Options{ExpectedMarks: 100, Sync: dedup.SyncNone} // no checkpoint until asked
	s, dir := storetest.Open(t, opts)
	marked := make([][]byte, 1000)
	for i := range marked {
		marked[i] = fmt.Appendf(nil, "id-%d", i)
	}
	filters := func() int {
		gens := s.Stats().Generations
		require.Len(t, gens, 1)
		return gens[0].Filters
	}
	for i := 0; i < len(marked); i += 50 {
		isNew, err := s.CheckAndMarkBatch(marked[i:i+50], time.Hour)
		require.NoError(t, err)
		require.NotContains(t, isNew, false)
	}
	require.Greater(t, filters(), 1, "a chain grew")
	require.NoError(t, s.Checkpoint())
	assert.Equal(t, 1, filters(), "the checkpoint merged the chain")
	assertAllSeen := func(when string) {
		t.Helper()
		for _, id := range marked {
			if !seen(t, s, string(id)) {
				assert.Failf(t, "false negative", "%s: %s is not seen", when, id)
				return
			}
		}
	}
	assertAllSeen("after the merge")
	s = storetest.Reopen(t, s, dir, opts)
	assertAllSeen("after reopen, from the snapshot of the chain")
	require.NoError(t, s.Checkpoint())
	require.NoError(t, s.Checkpoint()) // snapshots the merged filter
	s = storetest.Reopen(t, s, dir, opts)
	assert.Equal(t, 1, filters(), "the merged filter was snapshotted")
	assertAllSeen("after reopen, from the snapshot of the merged filter")
}

func TestBatchRepeatIsNewOnlyAtFirstOccurrence(t *testing.T) {
	s, _ := storetest.Open(t, nil)

	isNew, err := s.CheckAndMarkBatch(ids("a", "b", "a"), 0)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, false}, isNew)

	isNew, err = s.CheckAndMarkBatch(ids("c", "a", "c", "c", "b", "d"), 0)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, false, false, false, false, true}, isNew)

	assert.False(t, checkAndMark(t, s, "d", 0), "a batch mark is seen by single calls")
}

func TestOpenLockedDirectory(t *testing.T) {
	s, dir := storetest.Open(t, nil)

	other, err := dedup.Open(dir, nil)
	if err == nil {
		assert.NoError(t, other.Close())
	}
	require.ErrorIs(t, err, dedup.ErrLocked, "a second Open of a directory in use")

	assert.True(t, checkAndMark(t, s, "a", 0), "the failed Open must not disturb the holder")
	s = storetest.Reopen(t, s, dir, nil)
	assert.True(t, seen(t, s, "a"), "Open succeeds once the holder has closed")
}

func TestReopenPreservesMarks(t *testing.T) {
	const n = 200
	for _, mode := range []dedup.SyncMode{dedup.SyncAlways, dedup.SyncInterval, dedup.SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			opts := &dedup.Options{Sync: mode}
			s, dir := storetest.Open(t, opts)

			all := make([]string, n)
			for i := range all {
				all[i] = fmt.Sprintf("id-%03d", i)
			}
			for _, id := range all[:n/2] {
				require.True(t, checkAndMark(t, s, id, 0))
			}
			isNew, err := s.CheckAndMarkBatch(ids(all[n/2:]...), 0)
			require.NoError(t, err)
			require.Equal(t, n-n/2, countTrue(isNew), "every ID of a fresh batch is new")

			s = storetest.Reopen(t, s, dir, opts)
			for _, id := range all {
				assert.True(t, seen(t, s, id), "%s must survive reopen", id)
			}
			isNew, err = s.CheckAndMarkBatch(ids(all...), 0)
			require.NoError(t, err)
			assert.Zero(t, countTrue(isNew), "no ID marked before reopen is new after it")
			assert.True(t, checkAndMark(t, s, "fresh", 0), "an ID never marked is new after reopen")
		})
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
