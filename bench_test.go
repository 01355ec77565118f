package dedup_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/bench"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/metrics"
)

// markInBatches marks ids in batches of 4096.
func markInBatches(b *testing.B, s *dedup.Store, ids [][]byte) {
	b.Helper()
	for i := 0; i < len(ids); i += 4096 {
		_, err := s.CheckAndMarkBatch(ids[i:min(i+4096, len(ids))], 0)
		require.NoError(b, err)
	}
}

// timeOpen times b.N Opens of the store in dir, and not their Closes;
// check looks at each opened store, untimed.
func timeOpen(b *testing.B, dir string, opts *dedup.Options, check func(*dedup.Store)) {
	b.Helper()
	b.ResetTimer()
	for range b.N {
		s, err := dedup.Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		check(s)
		require.NoError(b, s.Close())
		b.StartTimer()
	}
}

// BenchmarkCheckAndMarkBatchNew marks new 16-byte IDs in batches of 1024,
// durably (SyncAlways). One op is one ID.
func BenchmarkCheckAndMarkBatchNew(b *testing.B) {
	for _, mode := range []dedup.SyncMode{dedup.SyncAlways, dedup.SyncInterval, dedup.SyncNone} {
		b.Run("sync="+mode.String(), func(b *testing.B) {
			s, _ := storetest.Open(b, &dedup.Options{Sync: mode})
			markNewInBatches(b, s)
		})
	}
}

// markNewInBatches times the marking of b.N new 16-byte IDs in batches of
// 1024. Each batch's IDs are drawn as it is sent, into one buffer, as a
// consumer would handle them: all b.N drawn up front would give the
// garbage collector a slice of millions of pointers to scan, which no
// consumer has.
func markNewInBatches(b *testing.B, s *dedup.Store) {
	const batch = 1024
	r := rand.New(rand.NewPCG(1, 1))
	ids := bench.RandomIDs(0, batch)
	b.ResetTimer()
	defer reportCPU(b)()
	for done := 0; done < b.N; done += batch {
		n := min(batch, b.N-done)
		for _, id := range ids[:n] {
			binary.LittleEndian.PutUint64(id, r.Uint64())
			binary.LittleEndian.PutUint64(id[8:], r.Uint64())
		}
		if _, err := s.CheckAndMarkBatch(ids[:n], 0); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPU returns a func that reports, as cpu-ns/op, the CPU time (user
// and system, of every goroutine, background work included) the process
// used from the call to it per op: other processes' load sways it far
// less than ns/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") }
}

// cpuTime is the CPU time the process has used, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkCollector is BenchmarkCheckAndMarkBatchNew (SyncAlways) and
// BenchmarkSeenAbsent (1M marks) without a Prometheus collector, and with
// one registered and gathered every scrapeInterval meanwhile: compare
// collector=false with collector=true for what reading the store's
// counters costs the hot paths. (The counters themselves are always kept:
// their cost is the difference from a build without them.)
func BenchmarkCollector(b *testing.B) {
	for _, scraped := range []bool{false, true} {
		b.Run(fmt.Sprintf("CheckAndMarkBatchNew/collector=%t", scraped), func(b *testing.B) {
			s, _ := storetest.Open(b, nil)
			scrapeMeanwhile(b, s, scraped)
			markNewInBatches(b, s)
		})
		b.Run(fmt.Sprintf("SeenAbsent/collector=%t", scraped), func(b *testing.B) {
			const marks = 1 << 20
			s, _ := storetest.Open(b, &dedup.Options{Sync: dedup.SyncNone, ExpectedMarks: marks})
			markInBatches(b, s, bench.RandomIDs(1, marks))
			require.NoError(b, s.Compact(context.Background()), "settle: no checkpoint or compaction runs while Seen is timed")
			scrapeMeanwhile(b, s, scraped)
			seenAbsentInParallel(b, s)
		})
	}
}

// scrapeInterval is how often BenchmarkCollector scrapes: far more often
// than a Prometheus server does, so that a cost shows.
const scrapeInterval = 100 * time.Millisecond

// scrapeMeanwhile, if on, registers a Collector of s and gathers it every
// scrapeInterval until b ends.
func scrapeMeanwhile(b *testing.B, s *dedup.Store, on bool) {
	if !on {
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(s, nil))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(scrapeInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := reg.Gather(); err != nil {
					b.Error(err)
				}
			}
		}
	}()
	b.Cleanup(func() { close(stop); <-done }) // before the store's Close, registered earlier
}

// BenchmarkCheckAndMarkBatchesParallel is BenchmarkCheckAndMarkBatchNew
// (SyncAlways) from GOMAXPROCS goroutines, each drawing its own IDs: while
// one batch waits for its fsync, the other's is checked and applied. One
// op is one ID.
func BenchmarkCheckAndMarkBatchesParallel(b *testing.B) {
	s, _ := storetest.Open(b, nil)
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		const batch = 1024
		r := rand.New(rand.NewPCG(seed.Add(1), 3))
		ids := bench.RandomIDs(0, batch)
		for {
			n := 0
			for ; n < batch && pb.Next(); n++ {
				binary.LittleEndian.PutUint64(ids[n], r.Uint64())
				binary.LittleEndian.PutUint64(ids[n][8:], r.Uint64())
			}
			if n > 0 {
				if _, err := s.CheckAndMarkBatch(ids[:n], 0); err != nil {
					b.Fatal(err)
				}
			}
			if n < batch {
				return
			}
		}
	})
}

// BenchmarkCheckAndMarkParallel is single-ID durable calls from 64
// goroutines: group commit shares the fsyncs.
func BenchmarkCheckAndMarkParallel(b *testing.B) {
	s, _ := storetest.Open(b, nil)
	b.SetParallelism(32) // 32 × GOMAXPROCS(2) = 64 goroutines
	var seed atomic.Uint64
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 7))
		id := make([]byte, 16)
		for pb.Next() {
			binary.LittleEndian.PutUint64(id, r.Uint64())
			binary.LittleEndian.PutUint64(id[8:], r.Uint64())
			if _, err := s.CheckAndMark(id, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSeenAbsent asks for IDs that were never marked, on 2
// goroutines, with 1M and 10M live marks, once the store has settled: no
// checkpoint or compaction of the marks runs meanwhile, since on two
// cores one would take a whole core from the two readers.
func BenchmarkSeenAbsent(b *testing.B) {
	for _, marks := range []int{1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("marks=%dM", marks>>20), func(b *testing.B) {
			s, _ := storetest.Open(b, &dedup.Options{Sync: dedup.SyncNone, ExpectedMarks: marks})
			live := bench.RandomIDs(1, marks)
			markInBatches(b, s, live)
			require.NoError(b, s.Compact(context.Background()), "settle: no checkpoint or compaction runs while Seen is timed")
			seenAbsentInParallel(b, s)
		})
	}
}

// seenAbsentInParallel times b.N Seen calls of IDs never marked, on
// GOMAXPROCS goroutines.
func seenAbsentInParallel(b *testing.B, s *dedup.Store) {
	absent := bench.RandomIDs(2, 1<<16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if seen, err := s.Seen(absent[i&(1<<16-1)]); err != nil || seen {
				b.Fatal(seen, err)
			}
			i++
		}
	})
}

// BenchmarkHotDuplicates re-checks recently marked IDs in batches of 1024.
func BenchmarkHotDuplicates(b *testing.B) {
	s, _ := storetest.Open(b, nil)
	ids := bench.RandomIDs(1, 1<<16)
	markInBatches(b, s, ids)
	b.ResetTimer()
	for i := 0; i < b.N; i += 1024 {
		j := i & (1<<16 - 1)
		if _, err := s.CheckAndMarkBatch(ids[j:j+1024], 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBloomTestAbsent is the baseline for SeenAbsent: bloom/v3 Test of
// absent IDs on a filter of the same size and rate, on 2 goroutines.
func BenchmarkBloomTestAbsent(b *testing.B) {
	for _, marks := range []int{1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("marks=%dM", marks>>20), func(b *testing.B) {
			f := bloom.NewWithEstimates(uint(marks), 0.01)
			for _, id := range bench.RandomIDs(1, marks) {
				f.Add(id)
			}
			absent := bench.RandomIDs(2, 1<<16)
			var falsePositives atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i, fp := 0, int64(0)
				for pb.Next() {
					if f.Test(absent[i&(1<<16-1)]) {
						fp++
					}
					i++
				}
				falsePositives.Add(fp)
			})
			b.ReportMetric(float64(falsePositives.Load())/float64(b.N), "fp/op")
		})
	}
}

// BenchmarkOpen times Open and Close of a checkpointed store holding 1M and
// 10M live marks: filters load from their snapshots, nothing is replayed.
func BenchmarkOpen(b *testing.B) {
	for _, marks := range []int{1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("marks=%dM", marks>>20), func(b *testing.B) {
			dir := b.TempDir()
			opts := &dedup.Options{Sync: dedup.SyncNone, ExpectedMarks: marks}
			s, err := dedup.Open(dir, opts)
			require.NoError(b, err)
			ids := bench.RandomIDs(1, marks)
			markInBatches(b, s, ids)
			require.NoError(b, s.Checkpoint())
			require.NoError(b, s.Close())
			timeOpen(b, dir, opts, func(*dedup.Store) {})
		})
	}
}

// BenchmarkReplay times the Open of a store whose WAL holds 1M records
// after its checkpoint, one mark each, and reports records per second.
func BenchmarkReplay(b *testing.B) {
	const records = 1 << 20
	dir := b.TempDir()
	opts := &dedup.Options{Sync: dedup.SyncNone, MemtableMarks: 2 * records}
	s, err := dedup.Open(dir, opts)
	require.NoError(b, err)
	for _, id := range bench.RandomIDs(1, records) {
		_, err := s.CheckAndMark(id, 0)
		require.NoError(b, err)
	}
	require.NoError(b, s.Close())
	timeOpen(b, dir, opts, func(s *dedup.Store) {
		st := s.Stats()
		require.Equal(b, uint64(records), st.LastLSN-st.CheckpointLSN, "every record is replayed")
	})
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkColdDuplicates re-checks, in batches of 1024, IDs whose marks a
// checkpoint has moved to Pebble: 1M of them, in random order.
func BenchmarkColdDuplicates(b *testing.B) {
	s, _ := storetest.Open(b, nil)
	ids := bench.RandomIDs(1, 1<<20)
	markInBatches(b, s, ids)
	require.NoError(b, s.Checkpoint(), "the marks go to Pebble")
	rand.New(rand.NewPCG(3, 3)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	b.ResetTimer()
	for i := 0; i < b.N; i += 1024 {
		j := i & (1<<20 - 1)
		isNew, err := s.CheckAndMarkBatch(ids[j:j+1024], 0)
		if err != nil || slices.Contains(isNew, true) {
			b.Fatal("a cold duplicate was new", err)
		}
	}
}
