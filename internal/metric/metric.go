// Package metric holds the counters and histograms the store's hot paths
// record into: atomics only, no lock and no allocation, read as snapshots
// by whoever exports them.
package metric

import (
	"sync/atomic"
	"unsafe"
)

// Histogram counts observations in fixed buckets. Observe and Snapshot
// may run concurrently; a snapshot taken meanwhile may see an
// observation's bucket and not yet its sum.
type Histogram struct {
	bounds []int64         // upper bounds, inclusive, ascending
	counts []atomic.Uint64 // one per bound, and the last for the rest
	sum    atomic.Int64
}

// NewHistogram returns a histogram with the inclusive upper bounds given,
// which must ascend.
func NewHistogram(bounds ...int64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe counts v in its bucket.
func (h *Histogram) Observe(v int64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// Snapshot is a histogram's state at one time.
type Snapshot struct {
	// Bounds are the buckets' inclusive upper bounds; Counts holds the
	// observations in each bucket (not cumulative), and one more for the
	// values above the last bound.
	Bounds []int64
	Counts []uint64
	Sum    int64
}

// Count returns the number of observations.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// In returns the bounds and the sum counted in units of unit: In(1e9)
// turns nanoseconds into seconds.
func (s Snapshot) In(unit float64) (bounds []float64, sum float64) {
	bounds = make([]float64, len(s.Bounds))
	for i, b := range s.Bounds {
		bounds[i] = float64(b) / unit
	}
	return bounds, float64(s.Sum) / unit
}

// Snapshot returns the counts so far. A nil histogram has none.
func (h *Histogram) Snapshot() Snapshot {
	if h == nil {
		return Snapshot{}
	}
	s := Snapshot{Bounds: h.bounds, Counts: make([]uint64, len(h.counts)), Sum: h.sum.Load()}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	return s
}

// stripes is how many cells a Counter spreads its adds over.
const stripes = 16

// Counter is a counter for paths that many goroutines take at once
// without a lock, such as a Seen answered by the filters: a single atomic
// would move its cache line between the processors at every add. Each
// goroutine adds to a cell picked by the address of its stack, which
// stays put while the goroutine runs, so two goroutines on two processors
// mostly write to lines of their own.
type Counter struct {
	cells [stripes]struct {
		n atomic.Uint64
		_ [120]byte // a cell to a pair of cache lines: CPUs fetch lines in pairs
	}
}

// Add adds n.
func (c *Counter) Add(n uint64) {
	var anchor byte
	// Goroutine stacks are at least 2 KiB apart: the bits above that name
	// the stack, and the multiply spreads them over the cells.
	p := uint64(uintptr(unsafe.Pointer(&anchor))) >> 11
	c.cells[(p*0x9E3779B97F4A7C15)>>60].n.Add(n)
}

// Load returns the sum of the adds so far.
func (c *Counter) Load() uint64 {
	var n uint64
	for i := range c.cells {
		n += c.cells[i].n.Load()
	}
	return n
}
