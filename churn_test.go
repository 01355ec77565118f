package dedup_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/ttl"
)

// churnCycles is the number of TTL cycles TestChurn drives:
// DEDUP_CHURN_CYCLES, or 5.
func churnCycles(t *testing.T) int {
	v := os.Getenv("DEDUP_CHURN_CYCLES")
	if v == "" {
		return 5
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 3, "DEDUP_CHURN_CYCLES")
	return n
}

// TestChurn drives TTL cycles in fake time at a steady insert rate, with a
// checkpoint, and so a chance to drop expired generations, every few fake
// seconds. Throughout, no expired mark may be seen and no live mark lost;
// after the first two cycles (the steady state) the index's tables may not
// grow past 1.3 times their size in the second cycle, and the measured
// false-positive rate of the filters may not pass 1.5 times the target.
// DEDUP_CHURN_CYCLES=20 runs the long soak.
func TestChurn(t *testing.T) {
	const (
		ttlOf     = time.Minute
		perStep   = 2500
		step      = 5 * time.Second // between checkpoints
		fpTarget  = 0.01
		probes    = 20000
		liveMarks = perStep * int(ttlOf/step)
	)
	clock := ttl.NewFake(time.Unix(1_700_000_000, 0))
	s, err := dedup.Open(t.TempDir(), &dedup.Options{Clock: clock, Sync: dedup.SyncNone,
		ExpectedMarks: liveMarks / 4, FalsePositiveRate: fpTarget, MemtableMarks: 1 << 16})
	require.NoError(t, err)
	defer s.Close()

	start := clock.Now()
	id := func(n int) []byte { return fmt.Appendf(nil, "churn-%09d", n) }
	written := func(n int) time.Time { return start.Add(time.Duration(n/perStep) * step) }
	var next, probed int
	var steady, peak uint64
	for cycle := range churnCycles(t) {
		for range ttlOf / step {
			batch := make([][]byte, perStep)
			for i := range batch {
				batch[i] = id(next)
				next++
			}
			markAll(t, s, batch, ttlOf)
			clock.Advance(step)
			require.NoError(t, s.Checkpoint())

			for n := max(0, next-2*liveMarks); n < next; n += 97 {
				live := clock.Now().Before(written(n).Add(ttlOf))
				seen, err := s.Seen(id(n))
				require.NoError(t, err)
				require.Equal(t, live, seen, "mark %d written at %v, now %v", n, written(n), clock.Now())
			}
			size := s.Stats().IndexTableBytes
			switch {
			case cycle == 1:
				steady = max(steady, size)
			case cycle > 1:
				peak = max(peak, size)
			}
		}

		// Count the filters' false positives on IDs never marked.
		before := s.Stats().FilterMisses
		for range probes {
			seen, err := s.Seen(fmt.Appendf(nil, "never-%d", probed))
			require.NoError(t, err)
			require.False(t, seen, "an ID never marked is seen")
			probed++
		}
		rate := float64(s.Stats().FilterMisses-before) / probes
		t.Logf("cycle %d: false-positive rate %.4f, index tables %d bytes, %d generations", cycle, rate, s.Stats().IndexTableBytes, len(s.Stats().Generations))
		assert.LessOrEqual(t, rate, 1.5*fpTarget, "cycle %d: the filters' false-positive rate", cycle)
	}
	t.Logf("index tables: %d bytes in the steady state, at most %d after (%.2f×), %.1f bytes per live mark; filters: %.2f bytes of RAM per live mark",
		steady, peak, float64(peak)/float64(steady), float64(peak)/float64(liveMarks), float64(s.Stats().FilterBytes)/float64(liveMarks))
	assert.LessOrEqual(t, float64(peak), 1.3*float64(steady), "the index outgrows its steady state")
}
