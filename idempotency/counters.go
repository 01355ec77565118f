package idempotency

import (
	"sync/atomic"
	"time"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/metric"
)

// Counters counts what Middleware does with requests and Consumer with
// messages, for monitoring: package metrics exports them to Prometheus.
// Give the middleware (Options.Counters) and consumers (Consumer.Counters)
// whose figures should add up the same Counters. It is safe for
// concurrent use and costs the request path no lock.
type Counters struct {
	requests [len(RequestOutcomes)]atomic.Uint64
	messages [len(MessageStatuses)]atomic.Uint64
	handler  *metric.Histogram // nanoseconds the handler ran, first runs only
}

// RequestOutcomes names what Middleware did with a request that has a
// key, or lacks one where a key is not required:
//
//   - first_run: the handler ran and its response was stored;
//   - not_stored: the handler ran but its response could not be stored;
//   - replayed: a stored response was replayed;
//   - in_progress: 409, the key's first request still runs;
//   - mismatch: 422, the key was used with another request;
//   - bad_request: 400, the key is missing, malformed, or the body
//     unreadable;
//   - too_large: 413, the body or its fingerprint is too large;
//   - released_after_panic: the handler panicked and its lease was
//     released;
//   - request_ended: 503, the client went away or the server gave up
//     before the handler ran;
//   - store_error: 500, the store failed;
//   - no_key: passed to the handler without a key, none being required.
var RequestOutcomes = [...]string{"first_run", "not_stored", "replayed", "in_progress", "mismatch",
	"bad_request", "too_large", "released_after_panic", "request_ended", "store_error", "no_key"}

const (
	firstRun = iota
	notStored
	replayed
	inProgress
	mismatch
	badRequest
	tooLarge
	releasedAfterPanic
	requestEnded
	storeError
	noKey
)

// MessageStatuses names what Consumer did with a message: a Status by its
// String, or "error" when the store failed to begin and the handler did
// not run.
var MessageStatuses = [...]string{"error", "processed", "duplicate", "busy", "failed", "unmarked"}

// handlerBounds are the bucket bounds of handler durations, in
// nanoseconds.
var handlerBounds = []int64{1e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9, 2.5e9, 5e9, 10e9, 30e9, 60e9}

// NewCounters returns Counters at zero.
func NewCounters() *Counters {
	return &Counters{handler: metric.NewHistogram(handlerBounds...)}
}

// CountersSnapshot is what a Counters has counted.
type CountersSnapshot struct {
	// Requests and Messages count by RequestOutcomes and MessageStatuses.
	Requests map[string]uint64
	Messages map[string]uint64
	// HandlerSeconds is how long the handler ran, for first runs.
	HandlerSeconds dedup.Histogram
}

// Snapshot returns the counts so far.
func (c *Counters) Snapshot() CountersSnapshot {
	s := CountersSnapshot{Requests: make(map[string]uint64, len(RequestOutcomes)), Messages: make(map[string]uint64, len(MessageStatuses))}
	for i, o := range RequestOutcomes {
		s.Requests[o] = c.requests[i].Load()
	}
	for i, st := range MessageStatuses {
		s.Messages[st] = c.messages[i].Load()
	}
	h := c.handler.Snapshot()
	bounds, sum := h.In(1e9)
	s.HandlerSeconds = dedup.Histogram{UpperBounds: bounds, Counts: h.Counts, Sum: sum}
	return s
}

// request counts a request's outcome; nil counts nothing.
func (c *Counters) request(outcome int) {
	if c != nil {
		c.requests[outcome].Add(1)
	}
}

// ran counts how long a handler ran.
func (c *Counters) ran(d time.Duration) {
	if c != nil {
		c.handler.Observe(int64(d))
	}
}

// message counts a message's status; nil counts nothing.
func (c *Counters) message(s Status) {
	if c != nil && int(s) < len(c.messages) {
		c.messages[s].Add(1)
	}
}
