package metric

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestHistogramBucketsAreInclusiveUpperBounds observes values on, between
// and beyond the bounds: a value equal to a bound counts in its bucket,
// and one above every bound in the last.
func TestHistogramBucketsAreInclusiveUpperBounds(t *testing.T) {
	h := NewHistogram(10, 100)
	for _, v := range []int64{0, 10, 11, 100, 101, 5000} {
		h.Observe(v)
	}
	s := h.Snapshot()
	assert.Equal(t, []int64{10, 100}, s.Bounds)
	assert.Equal(t, []uint64{2, 2, 2}, s.Counts)
	assert.Equal(t, uint64(6), s.Count())
	assert.Equal(t, int64(5222), s.Sum)
	bounds, sum := s.In(10)
	assert.Equal(t, []float64{1, 10}, bounds)
	assert.Equal(t, 522.2, sum)
}

func TestNilHistogramSnapshotIsEmpty(t *testing.T) {
	var h *Histogram
	assert.Zero(t, h.Snapshot().Count())
}

// TestCounterAddsUpAcrossGoroutines adds from many goroutines at once,
// whose stacks pick different cells: Load sums them all.
func TestCounterAddsUpAcrossGoroutines(t *testing.T) {
	var c Counter
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 1000 {
				c.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, uint64(32000), c.Load())
}
