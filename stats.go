package dedup

import "time"

// Stats is a snapshot of the store's counters and sizes.
type Stats struct {
	// New and Duplicates count CheckAndMark answers since Open.
	New        uint64 `json:"new"`
	Duplicates uint64 `json:"duplicates"`
	// MemtableMarks is the number of IDs changed since the last checkpoint.
	MemtableMarks int `json:"memtable_marks"`
	// Generations describes each generation, earliest expiry first.
	Generations []GenerationStats `json:"generations"`
	// EffectiveWindow is how far back the store remembers: the age of its
	// oldest live mark, estimated from each generation's first write and
	// longest TTL (never less than the true age, exact for marks of one
	// TTL written steadily). It equals the TTL in the steady state and
	// falls below it when DropOldest forgets marks early.
	EffectiveWindow time.Duration `json:"effective_window_ns"`
	// FilterBytes is the memory of all Bloom filters.
	FilterBytes uint64 `json:"filter_bytes"`
	// FilterMisses counts lookups that a filter let through and that found
	// no live mark: its false positives, and marks expired in a generation
	// not yet dropped. Over lookups of absent IDs it is the measured
	// false-positive rate.
	FilterMisses uint64 `json:"filter_misses"`
	// IndexDiskBytes is what Pebble uses on disk; IndexTableBytes the part
	// of it in tables that hold live data, without compactions in progress
	// and files waiting for deletion.
	IndexDiskBytes  uint64 `json:"index_disk_bytes"`
	IndexTableBytes uint64 `json:"index_table_bytes"`
	// FilterDiskBytes is the size of the filter snapshots on disk.
	FilterDiskBytes uint64 `json:"filter_disk_bytes"`
	// CompactionTime is how long Pebble has spent compacting since Open.
	// ReclaimTime is the background cost of giving the space of expired
	// and forgotten marks back: the time spent excising dropped
	// generations, plus the share of compactions spent on data they
	// dropped rather than wrote out, in proportion to bytes.
	CompactionTime time.Duration `json:"compaction_ns"`
	ReclaimTime    time.Duration `json:"reclaim_ns"`
	// WALSegments is the number of WAL segment files; WALBytes their size.
	WALSegments int   `json:"wal_segments"`
	WALBytes    int64 `json:"wal_bytes"`
	// LastLSN is the newest WAL record; CheckpointLSN the newest one that
	// Pebble and the filter snapshots cover.
	LastLSN       uint64 `json:"last_lsn"`
	CheckpointLSN uint64 `json:"checkpoint_lsn"`
}

// GenerationStats describes one generation: the marks whose deadlines fall
// in one time bucket.
type GenerationStats struct {
	// Ends is when the generation's last mark expires at the latest.
	Ends time.Time `json:"ends"`
	// Span is the length of its time bucket.
	Span time.Duration `json:"span_ns"`
	// Marks counts the marks added to its filter, live or not.
	Marks uint64 `json:"marks"`
	// FilterBytes is its filter memory; FalsePositiveRate the estimated
	// rate of its filter for an absent ID.
	FilterBytes       uint64  `json:"filter_bytes"`
	FalsePositiveRate float64 `json:"false_positive_rate"`
	// Filters is the number of Bloom filters a lookup tests in it, one
	// cache miss each: more than one once it holds more marks than its
	// first filter was sized for, until the next checkpoint merges them.
	Filters int `json:"filters"`
}

// Stats returns a snapshot of the store's counters. On a closed store it
// returns the counters only.
func (s *Store) Stats() Stats {
	c := &s.counters.checks
	st := Stats{New: c[0][1].Load() + c[1][1].Load(), Duplicates: c[0][0].Load() + c[1][0].Load()}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return st
	}
	st.MemtableMarks = s.idx.MemMarks()
	st.FilterMisses = s.idx.FilterMisses()
	st.EffectiveWindow = s.idx.Window(s.opts.Clock.Now())
	for _, g := range s.idx.Gens() {
		st.Generations = append(st.Generations, GenerationStats{
			Ends: g.Gen.End(), Span: g.Gen.Span(), Marks: g.Marks,
			FilterBytes: g.FilterBytes, FalsePositiveRate: g.FalsePosRate, Filters: g.Filters,
		})
		st.FilterBytes += g.FilterBytes
	}
	st.IndexDiskBytes, st.IndexTableBytes = s.idx.DiskBytes()
	st.FilterDiskBytes = s.idx.FilterDiskBytes()
	st.CompactionTime, st.ReclaimTime = s.idx.CompactionTimes()
	st.WALSegments = s.log.Segments()
	st.WALBytes, _ = s.log.Bytes() // a segment removed meanwhile: the next Stats is right
	st.LastLSN = s.log.LastLSN()
	st.CheckpointLSN = s.idx.CheckpointLSN()
	return st
}
