package crashtest_test

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/bench"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
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
	clock := ttl.NewFake(testutil.Epoch)
	s, _ := storetest.Open(t, &dedup.Options{Clock: clock, Sync: dedup.SyncNone,
		ExpectedMarks: liveMarks / 4, FalsePositiveRate: fpTarget, MemtableMarks: 1 << 16})

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
			storetest.MarkAll(t, s, batch, ttlOf)
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

// BenchmarkChurn is the churn workload at a larger scale: 4,000 new marks
// per fake second with a one-minute TTL, durable, with a checkpoint every
// five fake seconds, over 12 TTL cycles of which the first two warm up.
// Run it once (-benchtime=1x). It reports, over the measured cycles, the
// process CPU per mark, the share of it Pebble spent on reclaiming dropped
// data (Stats.ReclaimTime, the only expiry work that grows with the marks:
// a drop itself is one range deletion and one discarded filter), and the
// index's disk and the filters' RAM per live mark, and the WAL's size, at
// the end.
func BenchmarkChurn(b *testing.B) {
	const (
		ttlOf   = time.Minute
		step    = 5 * time.Second
		perStep = 20_000
		cycles  = 12
		warmup  = 2
		steps   = int(ttlOf / step)
		live    = perStep * steps
	)
	for range b.N {
		clock := ttl.NewFake(testutil.Epoch)
		s, err := dedup.Open(b.TempDir(), &dedup.Options{Clock: clock, ExpectedMarks: live / 4, MemtableMarks: 1 << 16})
		require.NoError(b, err)
		ids := bench.RandomIDs(uint64(b.N), perStep*steps*cycles)
		var cpu0 time.Duration
		var st0 dedup.Stats
		for n := range cycles * steps {
			if n == warmup*steps {
				cpu0, st0 = processCPU(b), s.Stats()
			}
			for i := n * perStep; i < (n+1)*perStep; i += 1024 {
				_, err := s.CheckAndMarkBatch(ids[i:min(i+1024, (n+1)*perStep)], ttlOf)
				require.NoError(b, err)
			}
			clock.Advance(step)
			require.NoError(b, s.Checkpoint())
		}
		cpu, st := processCPU(b)-cpu0, s.Stats()
		marks := float64(perStep * steps * (cycles - warmup))
		b.ReportMetric(float64(cpu.Nanoseconds())/marks, "cpu-ns/mark")
		b.ReportMetric(100*float64(st.ReclaimTime-st0.ReclaimTime)/float64(cpu), "reclaim-%cpu")
		b.ReportMetric(100*float64(st.CompactionTime-st0.CompactionTime)/float64(cpu), "compaction-%cpu")
		b.ReportMetric(float64(st.IndexDiskBytes)/float64(live), "index-disk-B/live-mark")
		b.ReportMetric(float64(st.WALBytes)/(1<<20), "wal-MiB")
		b.ReportMetric(float64(st.FilterBytes)/float64(live), "filter-B/live-mark")
		require.NoError(b, s.Close())
	}
}

// processCPU returns the user and system CPU time the process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
