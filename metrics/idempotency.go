package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed42300104/dedup/idempotency"
)

// IdempotencyCollector is a prometheus.Collector for the Counters that
// idempotency.Middleware and idempotency.Consumer count into.
type IdempotencyCollector struct {
	c                                  *idempotency.Counters
	requests, handlerSeconds, messages *prometheus.Desc
}

// NewIdempotencyCollector returns a Collector for c whose series carry
// labels.
func NewIdempotencyCollector(c *idempotency.Counters, labels prometheus.Labels) *IdempotencyCollector {
	return &IdempotencyCollector{
		c: c,
		requests: prometheus.NewDesc("dedup_http_requests_total",
			"Requests idempotency.Middleware handled, by outcome (see idempotency.RequestOutcomes).", []string{"outcome"}, labels),
		handlerSeconds: prometheus.NewDesc("dedup_http_handler_duration_seconds",
			"How long the handler ran, for the first run of each key.", nil, labels),
		messages: prometheus.NewDesc("dedup_consumer_messages_total",
			"Messages idempotency.Consumer handled, by status: processed, duplicate (skipped), busy, failed, unmarked, error.", []string{"status"}, labels),
	}
}

// Describe sends the descriptors of every series.
func (c *IdempotencyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.handlerSeconds
	ch <- c.messages
}

// Collect reads the counters.
func (c *IdempotencyCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.Snapshot()
	for _, o := range idempotency.RequestOutcomes {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.Requests[o]), o)
	}
	ch <- constHistogram(c.handlerSeconds, s.HandlerSeconds)
	for _, st := range idempotency.MessageStatuses {
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.CounterValue, float64(s.Messages[st]), st)
	}
}
