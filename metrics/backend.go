package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed42300104/dedup"
)

// Counted is a backend that counts its calls as a Store does, such as
// the Redis store (redisstore.Store.Counters).
type Counted interface {
	Counters() dedup.Counters
}

// BackendCollector is a prometheus.Collector for a backend other than
// the embedded Store: the series of Collector that any backend has,
// dedup_checks_total, dedup_seen_total and dedup_errors_total, under the
// same names, so that dashboards and alerts on them serve both. (The
// Redis server's own state is for a Redis exporter.)
type BackendCollector struct {
	b                    Counted
	checks, seen, errors *prometheus.Desc
}

// NewBackendCollector returns a Collector for b whose series carry
// labels.
func NewBackendCollector(b Counted, labels prometheus.Labels) *BackendCollector {
	c := NewCollector(nil, labels)
	return &BackendCollector{b: b, checks: c.checks, seen: c.seen, errors: c.errors}
}

// Describe sends the descriptors of every series.
func (c *BackendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.checks
	ch <- c.seen
	ch <- c.errors
}

// Collect reads the backend's counters.
func (c *BackendCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.b.Counters()
	collectCalls(ch, n, c.checks, c.seen, c.errors)
}

// collectCalls sends the series every backend has.
func collectCalls(ch chan<- prometheus.Metric, n dedup.Counters, checks, seen, errors *prometheus.Desc) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(checks, n.SingleNew, "single", "new")
	counter(checks, n.SingleDuplicates, "single", "duplicate")
	counter(checks, n.BatchNew, "batch", "new")
	counter(checks, n.BatchDuplicates, "batch", "duplicate")
	counter(seen, n.SeenTrue, "seen")
	counter(seen, n.SeenFalse, "absent")
	for _, k := range dedup.ErrorKinds {
		counter(errors, n.Errors[k], k)
	}
}
