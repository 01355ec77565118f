package redisstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/redistest"
)

// TestCountersCountChecksSeenAndErrors makes single and batch checks,
// Seens and a refused call on a standalone server, and checks the counts
// in the embedded store's terms.
func TestCountersCountChecksSeenAndErrors(t *testing.T) {
	s := open(t, redistest.Start(t, redistest.Config{}).Client(), nil)
	_, err := s.CheckAndMarkBatchContext(ctx, ids("m", 3), time.Hour)
	require.NoError(t, err)
	_, err = s.CheckAndMarkBatchContext(ctx, ids("m", 4), time.Hour)
	require.NoError(t, err)
	_, err = s.CheckAndMarkContext(ctx, []byte("single"), time.Hour)
	require.NoError(t, err)
	_, err = s.SeenContext(ctx, []byte("single"))
	require.NoError(t, err)
	_, err = s.SeenContext(ctx, []byte("never"))
	require.NoError(t, err)
	_, err = s.CheckAndMarkContext(ctx, nil, time.Hour)
	require.ErrorIs(t, err, dedup.ErrEmptyID)

	c := s.Counters()
	assert.Equal(t, [4]uint64{1, 0, 4, 3}, [4]uint64{c.SingleNew, c.SingleDuplicates, c.BatchNew, c.BatchDuplicates})
	assert.Equal(t, [2]uint64{1, 1}, [2]uint64{c.SeenTrue, c.SeenFalse})
	assert.Equal(t, uint64(1), c.Errors["invalid_argument"])
	assert.Equal(t, uint64(1), func() uint64 {
		var n uint64
		for _, v := range c.Errors {
			n += v
		}
		return n
	}(), "one error in all")
}
