// Package metrics exports a dedup.Store to Prometheus: a Collector reads
// the store's counters and sizes at each scrape, so that the store itself
// neither imports Prometheus nor does any work for it between scrapes.
//
// Every series is named dedup_*, in base units (seconds, bytes), with
// _total on counters. Counters restart from zero when the store is
// reopened, as a process's do.
package metrics

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed42300104/dedup"
)

// Collector is a prometheus.Collector for one Store. Register one per
// store, with constant labels that tell the stores of a process apart
// (a partition, say), and unregister it when the store is closed: a
// closed store's counters stay, but its sizes read zero.
type Collector struct {
	s *dedup.Store

	checks, seen, lookups, falsePositives                             *prometheus.Desc
	estimatedFPR, observedFPR                                         *prometheus.Desc
	walAppends, walAppendBytes, walSyncs, walSyncSeconds, walSyncRecs *prometheus.Desc
	walSegments, walBehind                                            *prometheus.Desc
	checkpoints, checkpointSeconds                                    *prometheus.Desc
	generationsDropped, generations, capacityEvents                   *prometheus.Desc
	reclaimSeconds, compactionSeconds                                 *prometheus.Desc
	marks, memtableMarks, window, defaultTTL                          *prometheus.Desc
	diskBytes, filterMemory                                           *prometheus.Desc
	errors, failStopped                                               *prometheus.Desc
}

// NewCollector returns a Collector for s whose series carry labels.
func NewCollector(s *dedup.Store, labels prometheus.Labels) *Collector {
	d := func(name, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("dedup_"+name, help, variable, labels)
	}
	return &Collector{
		s:              s,
		checks:         d("checks_total", "IDs answered by CheckAndMark (call=single) and CheckAndMarkBatch (call=batch), by answer.", "call", "outcome"),
		seen:           d("seen_total", "Answers of Seen.", "outcome"),
		lookups:        d("lookups_total", "IDs looked up, by what answered: the filters alone, a memtable, or the on-disk index.", "answered_by"),
		falsePositives: d("filter_false_positives_total", "Lookups a filter let through that found no live mark: false positives, and marks expired in a generation not yet dropped."),
		estimatedFPR:   d("filter_estimated_false_positive_ratio", "The filters' estimated false-positive rate for an absent ID, over the live generations."),
		observedFPR:    d("filter_observed_false_positive_ratio", "False positives over the lookups that found no live mark, since Open."),

		walAppends:     d("wal_appends_total", "WAL records written."),
		walAppendBytes: d("wal_append_bytes_total", "Bytes of WAL records written, framing included."),
		walSyncs:       d("wal_syncs_total", "fsyncs of WAL records, failed ones included."),
		walSyncSeconds: d("wal_sync_duration_seconds", "Latency of the fsyncs of WAL records."),
		walSyncRecs:    d("wal_sync_records", "WAL records each successful fsync made durable: the group-commit size."),
		walSegments:    d("wal_segments", "WAL segment files."),
		walBehind:      d("wal_records_since_checkpoint", "WAL records the last checkpoint does not cover: what the next Open replays."),

		checkpoints:        d("checkpoints_total", "Checkpoints that succeeded."),
		checkpointSeconds:  d("checkpoint_duration_seconds", "Duration of the checkpoints that succeeded."),
		generationsDropped: d("generations_dropped_total", "Generations dropped: all their marks expired (reason=expired), or dropped early to make room under DropOldest (reason=capacity).", "reason"),
		generations:        d("generations", "Live generations."),
		capacityEvents:     d("capacity_events_total", "Capacity events: writes refused with ErrFull (event=full), generations dropped early under DropOldest (event=drop_oldest).", "event"),
		reclaimSeconds:     d("reclaim_seconds_total", "Background time spent giving back the space of expired and forgotten marks."),
		compactionSeconds:  d("compaction_seconds_total", "Time the index spent compacting."),

		marks:         d("marks", "Marks held by the live generations, expired ones not yet dropped included."),
		memtableMarks: d("memtable_marks", "IDs changed since the last checkpoint."),
		window:        d("effective_window_seconds", "How far back the store remembers: the age of its oldest live mark. Below the TTL, marks are forgotten early."),
		defaultTTL:    d("default_ttl_seconds", "Options.DefaultTTL: the window the store is configured to keep."),
		diskBytes:     d("disk_bytes", "Bytes on disk, by part.", "part"),
		filterMemory:  d("filter_memory_bytes", "Memory of the Bloom filters."),

		errors:      d("errors_total", "Errors returned by the store's calls, by kind.", "kind"),
		failStopped: d("fail_stopped", "1 while the store refuses writes after a failed WAL write, fsync or checkpoint, until it is reopened."),
	}
}

// Describe sends the descriptors of every series.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.checks, c.seen, c.lookups, c.falsePositives, c.estimatedFPR, c.observedFPR,
		c.walAppends, c.walAppendBytes, c.walSyncs, c.walSyncSeconds, c.walSyncRecs, c.walSegments, c.walBehind,
		c.checkpoints, c.checkpointSeconds, c.generationsDropped, c.generations, c.capacityEvents,
		c.reclaimSeconds, c.compactionSeconds,
		c.marks, c.memtableMarks, c.window, c.defaultTTL, c.diskBytes, c.filterMemory,
		c.errors, c.failStopped,
	} {
		ch <- d
	}
}

// Collect reads the store's counters and sizes. On a closed store it
// sends the counters and the gauges it still knows.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	n := c.s.Counters()
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	histogram := func(d *prometheus.Desc, h dedup.Histogram) { ch <- constHistogram(d, h) }

	collectCalls(ch, n, c.checks, c.seen, c.errors)
	counter(c.lookups, n.LookupsByFilters, "filters")
	counter(c.lookups, n.LookupsInMemtables, "memtable")
	counter(c.lookups, n.LookupsOnDisk, "disk")
	counter(c.falsePositives, n.FilterMisses)
	if negatives := n.LookupsByFilters + n.FilterMisses; negatives > 0 {
		gauge(c.observedFPR, float64(n.FilterMisses)/float64(negatives))
	}
	// An absent ID is a false positive if any live generation's filter
	// lets it through. Summing logs keeps a small rate from rounding to 0.
	var logPass float64
	for _, g := range st.Generations {
		logPass += math.Log1p(-g.FalsePositiveRate)
	}
	gauge(c.estimatedFPR, -math.Expm1(logPass))

	counter(c.walAppends, n.WALAppends)
	counter(c.walAppendBytes, n.WALAppendBytes)
	counter(c.walSyncs, n.WALSyncs)
	histogram(c.walSyncSeconds, n.WALSyncSeconds)
	histogram(c.walSyncRecs, n.WALSyncRecords)
	gauge(c.walSegments, float64(st.WALSegments))
	gauge(c.walBehind, float64(st.LastLSN-min(st.CheckpointLSN, st.LastLSN)))

	counter(c.checkpoints, n.Checkpoints)
	histogram(c.checkpointSeconds, n.CheckpointSeconds)
	counter(c.generationsDropped, n.GenerationsExpired, "expired")
	counter(c.generationsDropped, n.GenerationsDroppedEarly, "capacity")
	gauge(c.generations, float64(len(st.Generations)))
	counter(c.capacityEvents, n.Full, "full")
	counter(c.capacityEvents, n.GenerationsDroppedEarly, "drop_oldest")
	ch <- prometheus.MustNewConstMetric(c.reclaimSeconds, prometheus.CounterValue, st.ReclaimTime.Seconds())
	ch <- prometheus.MustNewConstMetric(c.compactionSeconds, prometheus.CounterValue, st.CompactionTime.Seconds())

	var marks uint64
	for _, g := range st.Generations {
		marks += g.Marks
	}
	gauge(c.marks, float64(marks))
	gauge(c.memtableMarks, float64(st.MemtableMarks))
	gauge(c.window, st.EffectiveWindow.Seconds())
	gauge(c.defaultTTL, c.s.DefaultTTL().Seconds())
	gauge(c.diskBytes, float64(st.WALBytes), "wal")
	gauge(c.diskBytes, float64(st.IndexDiskBytes), "index")
	gauge(c.diskBytes, float64(st.FilterDiskBytes), "filters")
	gauge(c.filterMemory, float64(st.FilterBytes))

	failed := 0.0
	if c.s.FailStopped() {
		failed = 1
	}
	gauge(c.failStopped, failed)
}

// constHistogram turns h into a Prometheus histogram, whose buckets count
// cumulatively.
func constHistogram(d *prometheus.Desc, h dedup.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.UpperBounds))
	var cum uint64
	for i, b := range h.UpperBounds {
		cum += h.Counts[i]
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count(), h.Sum, buckets)
}
