package dedup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// TestBatchesAfterDuplicatesAnswerAsAlways checks the answers of a batch
// that follows a batch of duplicates, which the store looks up under the
// shared lock first: duplicates in Pebble or in the memtable, with new,
// repeated, forgotten and expired IDs among them.
func TestBatchesAfterDuplicatesAnswerAsAlways(t *testing.T) {
	marked := ids("d1", "d2", "d3", "d4")
	for _, tc := range []struct {
		name       string
		checkpoint bool                          // the marks go to Pebble
		between    func(*dedup.Store, *ttl.Fake) // after the batch of duplicates
		batch      []string
		want       []bool
	}{
		{"duplicates in Pebble", true, nil, []string{"d1", "d2", "d3", "d4"}, []bool{false, false, false, false}},
		{"duplicates in the memtable", false, nil, []string{"d4", "d3", "d2", "d1"}, []bool{false, false, false, false}},
		{"new IDs among duplicates", true, nil, []string{"d1", "n1", "d2", "n2"}, []bool{false, true, false, true}},
		{"a new ID repeated among duplicates", true, nil, []string{"n1", "d1", "n1", "d2", "d3"}, []bool{true, false, false, false, false}},
		{"a forgotten ID", true, func(s *dedup.Store, _ *ttl.Fake) {
			require.NoError(t, s.Forget([]byte("d2")))
		}, []string{"d1", "d2", "d3"}, []bool{false, true, false}},
		{"an expired ID", true, func(s *dedup.Store, clock *ttl.Fake) {
			clock.Advance(2 * time.Minute) // e1's TTL is a minute, the others' an hour
		}, []string{"d1", "e1", "d2", "d3"}, []bool{false, true, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			s, _ := storetest.Open(t, &dedup.Options{Clock: clock, Sync: dedup.SyncNone})
			_, err := s.CheckAndMarkBatch(marked, time.Hour)
			require.NoError(t, err)
			require.True(t, checkAndMark(t, s, "e1", time.Minute))
			if tc.checkpoint {
				require.NoError(t, s.Checkpoint())
			}
			isNew, err := s.CheckAndMarkBatch(marked, time.Hour)
			require.NoError(t, err)
			require.Equal(t, []bool{false, false, false, false}, isNew, "the batch of duplicates")
			if tc.between != nil {
				tc.between(s, clock)
			}

			isNew, err = s.CheckAndMarkBatch(ids(tc.batch...), time.Hour)
			require.NoError(t, err)
			assert.Equal(t, tc.want, isNew)
			isNew, err = s.CheckAndMarkBatch(ids(tc.batch...), time.Hour)
			require.NoError(t, err)
			assert.NotContains(t, isNew, true, "the same batch again holds only duplicates")
		})
	}
}

// TestFilterMissIsCountedOnceAfterDuplicates checks that an absent ID that
// passes a filter counts one filter miss in a batch the store looks up
// under the shared lock first, as it does in Seen.
func TestFilterMissIsCountedOnceAfterDuplicates(t *testing.T) {
	s, _ := storetest.Open(t, &dedup.Options{Sync: dedup.SyncNone, ExpectedMarks: 64, FalsePositiveRate: 0.5})
	var marked, absent []string
	for i := range 64 {
		marked = append(marked, fmt.Sprintf("marked-%d", i))
	}
	for i := range 20 {
		absent = append(absent, fmt.Sprintf("absent-%d", i))
	}
	_, err := s.CheckAndMarkBatch(ids(marked...), 0)
	require.NoError(t, err)
	require.NoError(t, s.Checkpoint())
	_, err = s.CheckAndMarkBatch(ids(marked...), 0)
	require.NoError(t, err, "a batch of duplicates")

	before := s.Stats().FilterMisses
	for _, id := range absent {
		require.False(t, seen(t, s, id))
	}
	want := s.Stats().FilterMisses - before
	require.NotZero(t, want, "at a rate of one half some absent IDs pass a filter")

	before = s.Stats().FilterMisses
	isNew, err := s.CheckAndMarkBatch(ids(append(marked, absent...)...), 0)
	require.NoError(t, err)
	assert.Equal(t, append(make([]bool, len(marked)), trues(len(absent))...), isNew)
	assert.Equal(t, want, s.Stats().FilterMisses-before, "filter misses of the batch")
}

// trues returns n true values.
func trues(n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = true
	}
	return out
}
