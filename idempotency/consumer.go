package idempotency

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed42300104/dedup"
)

// Consumer is the idempotent consumer: it runs a message's handler only
// if the message's ID has not been processed, marks the ID only if the
// handler succeeds, and releases it if the handler fails, so that a
// redelivery runs it again. Two consumers given the same ID at once do not
// both run it: one holds a lease, the other is told the ID is busy.
type Consumer struct {
	// Store keeps the IDs.
	Store dedup.Backend
	// TTL is how long a processed ID is remembered. Zero means the store's
	// DefaultTTL.
	TTL time.Duration
	// Lease is how long a handler may run before another consumer may take
	// its ID over, as after a crash. Zero means one minute.
	Lease time.Duration
	// Counters, if set, counts the messages by status (package metrics
	// exports them). Nil counts nothing.
	Counters *Counters
}

// Status is what Process did with a message.
type Status int

const (
	// Processed: the handler ran and succeeded; the ID is marked.
	Processed Status = iota + 1
	// Duplicate: the ID was processed before; the handler did not run.
	Duplicate
	// Busy: another consumer's lease on the ID is live; the handler did
	// not run. Redeliver the message later.
	Busy
	// Failed: the handler ran and failed; the ID is released.
	Failed
	// Unmarked: the handler ran and succeeded, but its ID could not be
	// marked; the error says why. The work is done, so acknowledge the
	// message all the same: the ID stays in progress until its lease ends,
	// and a redelivery after that would run the handler again.
	Unmarked
)

func (s Status) String() string {
	switch s {
	case Processed:
		return "processed"
	case Duplicate:
		return "duplicate"
	case Busy:
		return "busy"
	case Failed:
		return "failed"
	case Unmarked:
		return "unmarked"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Process runs fn for the message id unless it has been processed. The
// error is fn's, for Failed; the store's, for Unmarked; or, with status 0,
// the store's failure to begin, when fn did not run. If fn panics, the ID
// is released and the panic goes on.
func (c *Consumer) Process(id []byte, fn func() error) (Status, error) {
	return c.ProcessContext(context.Background(), id, fn)
}

// ProcessContext is Process for a message handled under ctx: ctx bounds
// the store's Begin, and an ended ctx means fn does not run (status 0,
// ctx's error). Once fn has run, its outcome is recorded (the ID marked
// or released) whether or not ctx has ended.
func (c *Consumer) ProcessContext(ctx context.Context, id []byte, fn func() error) (status Status, err error) {
	defer func() { c.Counters.message(status) }()
	lease := c.Lease
	if lease == 0 {
		lease = time.Minute
	}
	claim, err := c.Store.BeginContext(ctx, id, nil, lease, c.TTL)
	if err != nil {
		return 0, err
	}
	switch claim.Outcome {
	case dedup.Completed, dedup.Mismatch: // a Mismatch: begun with a fingerprint, by another user of the store
		return Duplicate, nil
	case dedup.InProgress:
		return Busy, nil
	}
	ctx = context.WithoutCancel(ctx) // fn's outcome must be recorded once it has run
	defer func() {
		if p := recover(); p != nil {
			c.Store.ReleaseContext(ctx, id, claim.Token) // so that a redelivery runs it again
			status = Failed                              // as counted
			panic(p)
		}
	}()
	if err := fn(); err != nil {
		return Failed, errors.Join(err, c.Store.ReleaseContext(ctx, id, claim.Token))
	}
	if err := c.Store.CompleteContext(ctx, id, claim.Token, nil); err != nil {
		return Unmarked, fmt.Errorf("idempotency: the handler of %q succeeded but its ID could not be marked: %w", id, err)
	}
	return Processed, nil
}

// Result is what ProcessBatch did with one message.
type Result struct {
	Status Status
	Err    error
}

// ProcessBatch is Process for each message of a polled batch, keyed by its
// own ID (a batch is not one unit: Powertools' lesson), in order: fn(i)
// handles the message ids[i]. One message's failure does not stop the
// others; each result says what happened to its message.
func (c *Consumer) ProcessBatch(ids [][]byte, fn func(i int) error) []Result {
	return c.ProcessBatchContext(context.Background(), ids, fn)
}

// ProcessBatchContext is ProcessBatch under ctx, as ProcessContext: once
// ctx has ended, the messages not yet begun get status 0 and ctx's error.
func (c *Consumer) ProcessBatchContext(ctx context.Context, ids [][]byte, fn func(i int) error) []Result {
	out := make([]Result, len(ids))
	for i, id := range ids {
		out[i].Status, out[i].Err = c.ProcessContext(ctx, id, func() error { return fn(i) })
	}
	return out
}
