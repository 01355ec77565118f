package dedup_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/bench"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// generationEnds lists when each generation of s ends.
func generationEnds(s *dedup.Store) []time.Time {
	var ends []time.Time
	for _, g := range s.Stats().Generations {
		ends = append(ends, g.Ends)
	}
	return ends
}

// TestExpiredGenerationsAreDropped checks that a checkpoint drops the
// generations whose marks have all expired, and only those: the short
// marks' generations leave the stats and their marks stay gone across
// reopen, while the long marks stay live.
func TestExpiredGenerationsAreDropped(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock, FS: vfs.NewMem(), MemtableMarks: 1 << 10}
	s, err := dedup.Open("store", opts)
	require.NoError(t, err)

	short, long := storetest.IDs("short", 200), storetest.IDs("long", 200)
	storetest.MarkAll(t, s, short[:100], time.Minute)
	storetest.MarkAll(t, s, long[:100], time.Hour)
	require.NoError(t, s.Checkpoint(), "the first marks go to Pebble")
	storetest.MarkAll(t, s, short[100:], time.Minute)
	storetest.MarkAll(t, s, long[100:], time.Hour)
	before := generationEnds(s)

	clock.Advance(2 * time.Minute)
	require.NoError(t, s.Checkpoint(), "this checkpoint drops the expired generations")
	after := generationEnds(s)
	assert.Less(t, len(after), len(before), "the short marks' generations are dropped")
	for _, end := range after {
		assert.True(t, end.After(clock.Now()), "generation ending %v is expired at %v but kept", end, clock.Now())
	}
	assert.Zero(t, storetest.SeenAll(t, s, short), "expired marks are not seen")
	assert.Equal(t, len(long), storetest.SeenAll(t, s, long), "live marks survive the drop")
	require.NoError(t, s.Close())

	s = storetest.OpenAt(t, "store", opts)
	assert.Equal(t, after, generationEnds(s), "the drop is durable")
	assert.Zero(t, storetest.SeenAll(t, s, short), "no expired mark comes back after reopen")
	assert.Equal(t, len(long), storetest.SeenAll(t, s, long))
	storetest.MarkAll(t, s, short, time.Minute) // new again, in a fresh generation
}

// TestExpiryRunsInTheBackground checks that no call is needed: within a few
// expiry intervals of its end, a generation is gone.
func TestExpiryRunsInTheBackground(t *testing.T) {
	s, _ := storetest.Open(t, &dedup.Options{ExpiryInterval: 20 * time.Millisecond})
	storetest.MarkAll(t, s, storetest.IDs("brief", 10), time.Second)
	require.Len(t, s.Stats().Generations, 1)
	assert.Eventually(t, func() bool { return len(s.Stats().Generations) == 0 },
		5*time.Second, 20*time.Millisecond, "a 1s mark's generation must be dropped within seconds")
}

// TestCompactGivesSpaceBack checks that Compact drops expired generations
// and gives their disk space back at once, in the index and in the WAL.
func TestCompactGivesSpaceBack(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s, _ := storetest.Open(t, &dedup.Options{Clock: clock, SegmentSize: 64 << 10})
	live := storetest.IDs("live", 100)
	storetest.MarkAll(t, s, live, time.Hour)
	for i := range 50 {
		storetest.MarkAll(t, s, storetest.IDs(fmt.Sprintf("brief-%02d", i), 100), time.Minute)
	}
	wal := s.Stats()
	require.Greater(t, wal.WALSegments, 1, "the marks fill several WAL segments")
	require.NoError(t, s.Checkpoint())
	before := s.Stats()

	clock.Advance(2 * time.Minute)
	require.NoError(t, s.Compact(context.Background()))
	after := s.Stats()
	t.Logf("index tables %d -> %d bytes, WAL %d -> %d bytes", before.IndexTableBytes, after.IndexTableBytes, wal.WALBytes, after.WALBytes)
	assert.Less(t, after.IndexTableBytes, before.IndexTableBytes/5, "the expired marks' tables are compacted away")
	assert.Less(t, after.WALBytes, wal.WALBytes, "the WAL segments behind the checkpoint are removed")
	assert.Equal(t, len(live), storetest.SeenAll(t, s, live))
}

// BenchmarkSeenAbsentGenerations is what the span of a generation trades
// against: the cost of Seen for an absent ID, on 2 goroutines, as the same
// 1M live marks are spread over more live generations, each with its own
// filter to test. Marks of one TTL have 5 to 9 live generations (a span
// is the largest power of two seconds not above TTL/4); with a one-hour
// TTL, 8.
func BenchmarkSeenAbsentGenerations(b *testing.B) {
	const marks = 1 << 20
	for _, gens := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("generations=%d", gens), func(b *testing.B) {
			// A one-hour TTL has a 512 s span: starting where the first
			// deadlines open a bucket, each step fills one generation.
			const span = 512
			clock := ttl.NewFake(time.Unix((testutil.Epoch.Unix()+3600)/span*span-3600, 0))
			s, _ := storetest.Open(b, &dedup.Options{Clock: clock, Sync: dedup.SyncNone, ExpectedMarks: marks / gens})
			ids := bench.RandomIDs(1, marks)
			per := marks / gens
			for g := range gens {
				if g > 0 {
					clock.Advance(span * time.Second)
				}
				for i := g * per; i < (g+1)*per; i += 4096 {
					_, err := s.CheckAndMarkBatch(ids[i:min(i+4096, (g+1)*per)], time.Hour)
					require.NoError(b, err)
				}
			}
			require.NoError(b, s.Checkpoint())
			require.Len(b, s.Stats().Generations, gens)
			seenAbsentInParallel(b, s)
		})
	}
}

// lastDeadline is the last time the store can represent a deadline at.
var lastDeadline = time.Unix(0, math.MaxInt64)

// TestTTLsThatOverflowAreRefused checks that a TTL whose deadline would
// pass the last one an int64 of nanoseconds holds is refused, at Open for
// MaxTTL and at each write for the TTL given, rather than wrapping around
// into a deadline in the past that makes the ID new on every call.
func TestTTLsThatOverflowAreRefused(t *testing.T) {
	const year = 365 * 24 * time.Hour
	_, err := dedup.Open(t.TempDir(), &dedup.Options{MaxTTL: 250 * year})
	require.ErrorIs(t, err, dedup.ErrInvalidOptions, "a MaxTTL past 2262")

	s, _ := storetest.Open(t, &dedup.Options{MaxTTL: 200 * year})
	assert.True(t, checkAndMark(t, s, "long", 200*year))
	assert.False(t, checkAndMark(t, s, "long", 200*year), "a 200-year mark is kept")

	clock := ttl.NewFake(lastDeadline.Add(-30 * 24 * time.Hour))
	s, _ = storetest.Open(t, &dedup.Options{Clock: clock, SlidingTTL: true})
	clock.Advance(29*24*time.Hour + 12*time.Hour)
	assert.True(t, checkAndMark(t, s, "slides", time.Hour))
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"CheckAndMark", func() error { _, err := s.CheckAndMark([]byte("late"), 0); return err }},
		{"SlidingTTL extension", func() error { _, err := s.CheckAndMark([]byte("slides"), 7*24*time.Hour); return err }},
		{"Begin", func() error { _, err := s.Begin([]byte("late"), nil, time.Minute, 0); return err }},
	} {
		assert.ErrorIs(t, tc.call(), dedup.ErrInvalidTTL, tc.name)
	}
	assert.True(t, checkAndMark(t, s, "short", time.Hour), "a TTL that fits is taken")
	assert.False(t, checkAndMark(t, s, "short", time.Hour), "and its mark holds")
}
