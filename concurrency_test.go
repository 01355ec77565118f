package dedup_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/backendtest"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// concurrencyConfigs are the stores each concurrency test runs against: one
// that holds every mark in its memtable, and one whose memtable and Bloom
// filters are so small that checkpoints run and filters grow while callers
// race.
var concurrencyConfigs = []struct {
	name string
	opts dedup.Options
}{
	{name: "defaults"},
	{name: "frequent checkpoints", opts: dedup.Options{MemtableMarks: 4, ExpectedMarks: 8}},
}

// TestOneWinnerAmongConcurrentCallers has many goroutines mark the same
// IDs at the same time, through single and batch calls, and checks that
// exactly one call in all reports each ID as new: first for fresh IDs, then
// again for the same IDs once their marks have expired.
func TestOneWinnerAmongConcurrentCallers(t *testing.T) {
	const poolSize = 256
	for _, cfg := range concurrencyConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			opts := cfg.opts
			opts.Clock = clock
			s, _ := storetest.Open(t, &opts)

			pool := make([][]byte, poolSize)
			for i := range pool {
				pool[i] = fmt.Appendf(nil, "id-%04d", i)
			}
			for _, round := range []string{"fresh", "expired"} {
				wins := markConcurrently(t, s, pool)
				for i, id := range pool {
					assert.Equal(t, int32(1), wins[i].Load(), "%s IDs: calls that reported %s as new", round, id)
				}
				clock.Advance(24 * time.Hour) // the default TTL
			}
		})
	}
}

// markConcurrently has 16 workers mark every ID of pool and returns, per
// ID, how many calls reported it as new.
//
// Every worker walks the pool in the same order of windows, so all of them
// contend for the same few IDs at once. Within a window each worker
// shuffles the IDs and marks a random share of them one by one and the rest
// in one batch that also repeats one of its IDs.
func markConcurrently(t *testing.T, s *dedup.Store, pool [][]byte) []atomic.Int32 {
	const (
		workers = 16
		window  = 8 // IDs each worker takes on at a time; divides len(pool)
	)
	wins := make([]atomic.Int32, len(pool))
	mark := func() {
		for lo := 0; lo < len(pool); lo += window {
			idx := rand.Perm(window)
			for i := range idx {
				idx[i] += lo
			}
			split := rand.IntN(window + 1)

			for _, i := range idx[:split] {
				isNew, err := s.CheckAndMark(pool[i], 0)
				if !assert.NoError(t, err) {
					return
				}
				if isNew {
					wins[i].Add(1)
				}
			}

			batch := idx[split:]
			if len(batch) == 0 {
				continue
			}
			batch = append(batch, batch[rand.IntN(len(batch))])
			rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			batchIDs := make([][]byte, len(batch))
			for j, i := range batch {
				batchIDs[j] = pool[i]
			}
			isNew, err := s.CheckAndMarkBatch(batchIDs, 0)
			if !assert.NoError(t, err) || !assert.Len(t, isNew, len(batch)) {
				return
			}
			for j, i := range batch {
				if isNew[j] {
					wins[i].Add(1)
				}
			}
		}
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			<-start
			mark()
		})
	}
	close(start)
	wg.Wait()
	return wins
}

// TestLinearizable records a concurrent history of CheckAndMark, Seen and
// Forget on a few IDs and checks it against a sequential set.
func TestLinearizable(t *testing.T) {
	for _, cfg := range concurrencyConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			s, _ := storetest.Open(t, &cfg.opts)
			backendtest.Linearizable(t, s)
		})
	}
}

// TestSeenWhileFiltersChange has Seen, which answers an absent ID
// without the store's lock, race writers that grow filter chains, open
// generations and checkpoint. Every ID acknowledged before a Seen starts
// must be seen, and IDs never marked must not be.
func TestSeenWhileFiltersChange(t *testing.T) {
	const ids = 4000
	clock := ttl.NewFake(testutil.Epoch)
	s, _ := storetest.Open(t, &dedup.Options{Clock: clock, MemtableMarks: 64, ExpectedMarks: 16, Sync: dedup.SyncNone})
	marked := make([][]byte, ids)
	for i := range marked {
		marked[i] = fmt.Appendf(nil, "marked-%d", i)
	}
	var acked atomic.Int64 // marked[:acked] are acknowledged
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer done.Store(true)
		for i := 0; i < ids; i += 8 {
			// TTLs of several span classes open new generations.
			ttls := []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 100 * time.Hour}
			_, err := s.CheckAndMarkBatch(marked[i:i+8], ttls[i/8%len(ttls)])
			if !assert.NoError(t, err) {
				return
			}
			acked.Store(int64(i + 8))
		}
	})
	for r := range 2 {
		wg.Go(func() {
			for i := 0; !done.Load(); i++ {
				n := acked.Load()
				if n > 0 {
					id := marked[rand.Int64N(n)]
					seen, err := s.Seen(id)
					if !assert.NoError(t, err) || !assert.True(t, seen, "%s was acknowledged before Seen", id) {
						return
					}
				}
				seen, err := s.Seen(fmt.Appendf(nil, "absent-%d-%d", r, i))
				if !assert.NoError(t, err) || !assert.False(t, seen) {
					return
				}
			}
		})
	}
	wg.Wait()
	assert.Greater(t, s.Stats().FilterMisses, uint64(0), "some absent IDs must pass a filter and be answered under the lock")
}

// TestCloseAnswersTheCallsUnderWay has callers mark fresh IDs, half of
// them through Restore, while Close runs, and checks after a reopen that
// the answers were true: an ID acknowledged as new is seen, and an ID
// refused with ErrClosed is new, even though Close's final flush wrote
// out every record appended.
func TestCloseAnswersTheCallsUnderWay(t *testing.T) {
	// writeOne marks id, with CheckAndMark or, for restore, with Restore.
	writeOne := func(s *dedup.Store, restore bool, id string) (bool, error) {
		if !restore {
			return s.CheckAndMark([]byte(id), 0)
		}
		restored, err := s.Restore([]dedup.Mark{{ID: []byte(id), Deadline: time.Now().Add(time.Hour)}})
		if err != nil {
			return false, err
		}
		return restored[0], nil
	}
	const workers, rounds = 16, 4
	for _, mode := range []dedup.SyncMode{dedup.SyncAlways, dedup.SyncInterval} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			opts := &dedup.Options{Sync: mode}
			for round := range rounds {
				s, err := dedup.Open(dir, opts)
				require.NoError(t, err)
				var acked, refused sync.Map
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						for i := 0; ; i++ {
							id := fmt.Sprintf("r%d-w%d-%d", round, w, i)
							isNew, err := writeOne(s, w%2 == 1, id)
							switch {
							case errors.Is(err, dedup.ErrClosed):
								refused.Store(id, true)
								return
							case err != nil:
								t.Errorf("CheckAndMark(%q): %v", id, err)
								return
							case !isNew:
								t.Errorf("a fresh ID %q was a duplicate", id)
							}
							acked.Store(id, true)
						}
					})
				}
				time.Sleep(20 * time.Millisecond)
				require.NoError(t, s.Close())
				wg.Wait()

				s, err = dedup.Open(dir, opts)
				require.NoError(t, err)
				lost, claimed := 0, 0
				acked.Range(func(id, _ any) bool {
					if !seen(t, s, id.(string)) {
						lost++
					}
					return true
				})
				refused.Range(func(id, _ any) bool {
					if seen(t, s, id.(string)) {
						claimed++
					}
					return true
				})
				assert.Zero(t, lost, "round %d: acknowledged marks lost", round)
				assert.Zero(t, claimed, "round %d: marks refused with ErrClosed but kept", round)
				require.NoError(t, s.Close())
			}
		})
	}
}
