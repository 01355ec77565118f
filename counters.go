package dedup

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/seed42300104/dedup/internal/metric"
)

// Counters is a snapshot of the store's counters since Open, for
// monitoring (package metrics exports them to Prometheus). The store
// keeps them with atomics, so they cost the hot path no lock; Counters
// reads them without one.
type Counters struct {
	// Checks counts the IDs CheckAndMark (Single) and CheckAndMarkBatch
	// (Batch) answered, by answer.
	SingleNew, SingleDuplicates, BatchNew, BatchDuplicates uint64
	// SeenTrue and SeenFalse count Seen's answers; SeenByFilters is the
	// part of SeenFalse that no filter could hold, answered without the
	// lock.
	SeenTrue, SeenFalse, SeenByFilters uint64
	// LookupsByFilters, LookupsInMemtables and LookupsOnDisk count the IDs
	// the index looked up for writes, Seen and records, by where the
	// answer came from: the filters alone (SeenByFilters included), a
	// memtable, or Pebble. FilterMisses is Stats.FilterMisses.
	LookupsByFilters, LookupsInMemtables, LookupsOnDisk, FilterMisses uint64

	// WALAppends counts the WAL records written, WALAppendBytes their
	// framed size, WALSyncs the fsyncs of records that ended.
	WALAppends, WALAppendBytes, WALSyncs uint64
	// WALSyncSeconds is the latency of those fsyncs; WALSyncRecords the
	// records each made durable (the group-commit size).
	WALSyncSeconds, WALSyncRecords Histogram

	// Checkpoints counts the checkpoints that succeeded; CheckpointSeconds
	// is how long each took.
	Checkpoints       uint64
	CheckpointSeconds Histogram
	// GenerationsExpired counts the generations dropped because all their
	// marks expired; GenerationsDroppedEarly those DropOldest dropped to
	// make room (a capacity event: the effective window shrank).
	GenerationsExpired, GenerationsDroppedEarly uint64
	// Full counts the writes refused with ErrFull.
	Full uint64
	// Errors counts the errors the store's calls returned, by ErrorKinds.
	Errors map[string]uint64
}

// Histogram is a snapshot of observations in fixed buckets: Counts[i] is
// the number of observations at most UpperBounds[i] and above the bound
// before; the last of Counts, one more than UpperBounds, counts those
// above every bound. Sum is their total, in the unit of the bounds.
type Histogram struct {
	UpperBounds []float64
	Counts      []uint64
	Sum         float64
}

// Count returns the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// histogram converts a snapshot, counting its values in units of unit
// (1e9 for nanoseconds to seconds).
func histogram(s metric.Snapshot, unit float64) Histogram {
	bounds, sum := s.In(unit)
	return Histogram{UpperBounds: bounds, Counts: s.Counts, Sum: sum}
}

// ErrorKinds names the kinds Counters.Errors counts by: a sentinel's
// kind, "canceled" for a caller's context that ended, or "io" for a
// failure of the file system behind none of them.
var ErrorKinds = [...]string{"invalid_argument", "stale_token", "full", "closed", "read_only", "failed_sync", "corrupt", "canceled", "io"}

// ErrorKind returns the kind of err as ErrorKinds names it, "" for nil:
// for a Backend other than Store to count its errors as a Store does.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	return ErrorKinds[errorKind(err)]
}

// errorKind returns the index in ErrorKinds of err's kind.
func errorKind(err error) int {
	switch {
	case errors.Is(err, ErrEmptyID), errors.Is(err, ErrIDTooLong), errors.Is(err, ErrInvalidTTL),
		errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrInvalidRecord):
		return 0
	case errors.Is(err, ErrStaleToken):
		return 1
	case errors.Is(err, ErrFull):
		return 2
	case errors.Is(err, ErrClosed):
		return 3
	case errors.Is(err, ErrReadOnly):
		return 4
	case errors.Is(err, ErrFailedSync):
		return 5
	case errors.Is(err, ErrCorrupt):
		return 6
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 7
	}
	return 8
}

// counters are the store's own counters behind Counters.
type counters struct {
	checks          [2][2]atomic.Uint64 // [batch][new]: IDs answered
	seen            [2]metric.Counter   // [live]: Seen answers that took the lock
	seenByFilters   metric.Counter      // Seen answers without the lock
	checkpoints     atomic.Uint64
	checkpointNanos *metric.Histogram
	expired, early  atomic.Uint64
	full            atomic.Uint64
	errs            [len(ErrorKinds)]atomic.Uint64 // by errorKind
}

// checkpointBounds are the bucket bounds of checkpoint durations, in
// nanoseconds: from an idle store's to one that writes gigabytes.
var checkpointBounds = []int64{1e6, 5e6, 25e6, 100e6, 250e6, 500e6, 1e9, 2.5e9, 5e9, 10e9, 30e9, 60e9}

func newCounters() *counters {
	return &counters{checkpointNanos: metric.NewHistogram(checkpointBounds...)}
}

// count counts the error a call returns, if any.
func (c *counters) count(err *error) {
	if *err != nil {
		c.errs[errorKind(*err)].Add(1)
	}
}

// checked counts the answers of a check-and-mark of n IDs, fresh of them
// new.
func (c *counters) checked(batch bool, n, fresh uint64) {
	b := 0
	if batch {
		b = 1
	}
	c.checks[b][1].Add(fresh)
	c.checks[b][0].Add(n - fresh)
}

// Counters returns the store's counters. It takes no lock the write path
// takes, and works on a closed store.
func (s *Store) Counters() Counters {
	c := s.counters
	lk := s.idx.Lookups()
	wm := s.log.Metrics()
	out := Counters{
		SingleNew: c.checks[0][1].Load(), SingleDuplicates: c.checks[0][0].Load(),
		BatchNew: c.checks[1][1].Load(), BatchDuplicates: c.checks[1][0].Load(),
		SeenTrue: c.seen[1].Load(), SeenByFilters: c.seenByFilters.Load(),
		LookupsInMemtables: lk.Memtables, LookupsOnDisk: lk.Disk, FilterMisses: s.idx.FilterMisses(),
		WALAppends: wm.Appends, WALAppendBytes: wm.AppendBytes, WALSyncs: wm.Syncs,
		WALSyncSeconds: histogram(wm.SyncNanos, 1e9), WALSyncRecords: histogram(wm.SyncRecords, 1),
		Checkpoints: c.checkpoints.Load(), CheckpointSeconds: histogram(c.checkpointNanos.Snapshot(), 1e9),
		GenerationsExpired: c.expired.Load(), GenerationsDroppedEarly: c.early.Load(),
		Full: c.full.Load(), Errors: make(map[string]uint64, len(ErrorKinds)),
	}
	out.SeenFalse = c.seen[0].Load() + out.SeenByFilters
	out.LookupsByFilters = lk.Filters + out.SeenByFilters
	for i, k := range ErrorKinds {
		out.Errors[k] = c.errs[i].Load()
	}
	return out
}

// FailStopped reports whether the store refuses writes until it is
// reopened, after a failed WAL write or fsync or a failed checkpoint.
func (s *Store) FailStopped() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.err != nil || s.log.Err() != nil
}

// DefaultTTL returns the TTL of a mark written with ttl 0: the window the
// store is configured to keep, which Stats.EffectiveWindow falls below
// when marks are forgotten early.
func (s *Store) DefaultTTL() time.Duration { return s.opts.DefaultTTL }

// since returns the time since start, for a histogram in nanoseconds.
func since(start time.Time) int64 { return int64(time.Since(start)) }
