package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

func TestProcessMarksOnlyOnSuccess(t *testing.T) {
	c := &idempotency.Consumer{Store: storetest.OpenMem(t, nil)}
	runs := 0
	fail := errors.New("downstream unavailable")

	st, err := c.Process([]byte("m1"), func() error { runs++; return fail })
	assert.Equal(t, idempotency.Failed, st)
	assert.ErrorIs(t, err, fail)
	st, err = c.Process([]byte("m1"), func() error { runs++; return nil })
	require.NoError(t, err)
	assert.Equal(t, idempotency.Processed, st, "a failure leaves no mark")
	st, err = c.Process([]byte("m1"), func() error { runs++; return nil })
	require.NoError(t, err)
	assert.Equal(t, idempotency.Duplicate, st)
	assert.Equal(t, 2, runs)

	assert.PanicsWithValue(t, "bug", func() {
		c.Process([]byte("m2"), func() error { panic("bug") })
	})
	st, err = c.Process([]byte("m2"), func() error { return nil })
	require.NoError(t, err)
	assert.Equal(t, idempotency.Processed, st, "a panic leaves no mark")
}

func TestProcessBusyWhileAnotherHoldsTheLease(t *testing.T) {
	s := storetest.OpenMem(t, nil)
	claim, err := s.Begin([]byte("m"), nil, time.Minute, 0)
	require.NoError(t, err)
	c := &idempotency.Consumer{Store: s}
	st, err := c.Process([]byte("m"), func() error { t.Fatal("ran while busy"); return nil })
	require.NoError(t, err)
	assert.Equal(t, idempotency.Busy, st)
	require.NoError(t, s.Release([]byte("m"), claim.Token))
	st, err = c.Process([]byte("m"), func() error { return nil })
	require.NoError(t, err)
	assert.Equal(t, idempotency.Processed, st)
}

// TestProcessReportsWorkDoneButUnmarked checks that a handler that
// succeeded is reported as having run even when its ID cannot be marked
// after it, so that its message is not redelivered and run again.
func TestProcessReportsWorkDoneButUnmarked(t *testing.T) {
	tests := []struct {
		name string
		// during runs inside the handler and makes the Complete after it
		// fail; it returns the error expected.
		during func(t *testing.T, s *dedup.Store, clock *ttl.Fake, id []byte) error
	}{
		{"the store closed", func(t *testing.T, s *dedup.Store, _ *ttl.Fake, _ []byte) error {
			require.NoError(t, s.Close())
			return dedup.ErrClosed
		}},
		{"the lease ended and another consumer took the ID over", func(t *testing.T, s *dedup.Store, clock *ttl.Fake, id []byte) error {
			clock.Advance(2 * time.Minute)
			st, err := (&idempotency.Consumer{Store: s}).Process(id, func() error { return nil })
			require.NoError(t, err)
			require.Equal(t, idempotency.Processed, st)
			return dedup.ErrStaleToken
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			s := storetest.OpenMem(t, &dedup.Options{Clock: clock})
			c := &idempotency.Consumer{Store: s, Lease: time.Minute}
			id := []byte("m")
			var want error
			st, err := c.Process(id, func() error {
				want = tt.during(t, s, clock, id)
				return nil
			})
			assert.Equal(t, idempotency.Unmarked, st, "the handler ran and succeeded")
			assert.ErrorIs(t, err, want)
		})
	}
}

// TestProcessBatchKeysEachRecord checks that a batch is keyed per message:
// a repeat inside the batch is a duplicate, a failure fails only its own
// message, and a redelivered batch runs only what failed.
func TestProcessBatchKeysEachRecord(t *testing.T) {
	c := &idempotency.Consumer{Store: storetest.OpenMem(t, nil)}
	ids := [][]byte{[]byte("a"), []byte("b"), []byte("a"), []byte("c")}
	var ran []int
	bFailed := false
	handle := func(i int) error {
		ran = append(ran, i)
		if string(ids[i]) == "b" && !bFailed {
			bFailed = true
			return errors.New("b fails the first time")
		}
		return nil
	}
	got := c.ProcessBatch(ids, handle)
	want := []idempotency.Status{idempotency.Processed, idempotency.Failed, idempotency.Duplicate, idempotency.Processed}
	for i, r := range got {
		assert.Equal(t, want[i], r.Status, "message %d", i)
	}
	assert.Error(t, got[1].Err)
	assert.Equal(t, []int{0, 1, 3}, ran)

	ran = nil
	got = c.ProcessBatch(ids, handle)
	want = []idempotency.Status{idempotency.Duplicate, idempotency.Processed, idempotency.Duplicate, idempotency.Duplicate}
	for i, r := range got {
		assert.Equal(t, want[i], r.Status, "redelivery, message %d", i)
		assert.NoError(t, r.Err)
	}
	assert.Equal(t, []int{1}, ran)
}

// TestProcessContextRecordsWhatRanAfterItsContextEnded checks that a
// message whose context ends while its handler runs still has the
// handler's outcome recorded: marked if it succeeded, released if it
// failed; and that a message whose context has ended before it is begun
// is not run and stays free.
func TestProcessContextRecordsWhatRanAfterItsContextEnded(t *testing.T) {
	c := &idempotency.Consumer{Store: storetest.OpenMem(t, nil)}
	fail := errors.New("downstream unavailable")
	tests := []struct {
		name      string
		fnErr     error
		want      idempotency.Status
		redeliver idempotency.Status
	}{
		{"succeeds", nil, idempotency.Processed, idempotency.Duplicate},
		{"fails", fail, idempotency.Failed, idempotency.Processed},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithCancel(context.Background())
		id := []byte(tc.name)
		st, err := c.ProcessContext(ctx, id, func() error { cancel(); return tc.fnErr })
		assert.Equal(t, tc.want, st, "%s: its context ended while it ran", tc.name)
		if tc.fnErr != nil {
			assert.ErrorIs(t, err, tc.fnErr, tc.name)
			assert.NotErrorIs(t, err, context.Canceled, "%s: the release is not refused", tc.name)
		} else {
			assert.NoError(t, err, tc.name)
		}
		st, err = c.Process(id, func() error { return nil })
		require.NoError(t, err)
		assert.Equal(t, tc.redeliver, st, "%s: redelivered", tc.name)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, err := c.ProcessContext(ctx, []byte("ended"), func() error { t.Error("ran with an ended context"); return nil })
	assert.Zero(t, st, "not begun")
	assert.ErrorIs(t, err, context.Canceled)
	results := c.ProcessBatchContext(ctx, [][]byte{[]byte("ended"), []byte("ended-too")}, func(int) error { t.Error("ran with an ended context"); return nil })
	for i, r := range results {
		assert.Zero(t, r.Status, "batch message %d: not begun", i)
		assert.ErrorIs(t, r.Err, context.Canceled, "batch message %d", i)
	}
	st, err = c.Process([]byte("ended"), func() error { return nil })
	require.NoError(t, err)
	assert.Equal(t, idempotency.Processed, st, "a message not begun is free")
}

// TestConsumersProcessEachMessageOnce runs several consumers over the same
// stream, each message delivered to all of them, retrying while busy:
// every message's handler runs exactly once in all.
func TestConsumersProcessEachMessageOnce(t *testing.T) {
	s, _ := storetest.Open(t, nil)
	const messages, consumers = 200, 4
	var mu sync.Mutex
	runs := map[string]int{}
	var wg sync.WaitGroup
	for range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &idempotency.Consumer{Store: s}
			for m := range messages {
				id := fmt.Sprintf("msg-%d", m)
				for {
					st, err := c.Process([]byte(id), func() error {
						mu.Lock()
						runs[id]++
						mu.Unlock()
						return nil
					})
					assert.NoError(t, err)
					if st != idempotency.Busy {
						break
					}
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	require.Len(t, runs, messages)
	for id, n := range runs {
		assert.Equal(t, 1, n, "%s ran %d times", id, n)
	}
}

// TestConsumerCountsEachStatus processes messages to each status and
// checks the counts: a panic counts as failed, and a message whose
// context ended before it was begun as an error.
func TestConsumerCountsEachStatus(t *testing.T) {
	s := storetest.OpenMem(t, nil)
	counters := idempotency.NewCounters()
	c := &idempotency.Consumer{Store: s, Counters: counters}
	ok := func() error { return nil }
	_, err := s.Begin([]byte("held"), nil, time.Minute, 0)
	require.NoError(t, err)
	ended, cancel := context.WithCancel(context.Background())
	cancel()

	for _, step := range []struct {
		id   string
		fn   func() error
		want idempotency.Status
	}{
		{"a", ok, idempotency.Processed},
		{"a", ok, idempotency.Duplicate},
		{"held", ok, idempotency.Busy},
		{"b", func() error { return errors.New("downstream unavailable") }, idempotency.Failed},
	} {
		st, _ := c.Process([]byte(step.id), step.fn)
		require.Equal(t, step.want, st, step.id)
	}
	assert.Panics(t, func() { c.Process([]byte("c"), func() error { panic("bug") }) })
	st, err := c.ProcessContext(ended, []byte("d"), ok)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, st)

	assert.Equal(t, map[string]uint64{"error": 1, "processed": 1, "duplicate": 1, "busy": 1, "failed": 2, "unmarked": 0},
		counters.Snapshot().Messages)
}
