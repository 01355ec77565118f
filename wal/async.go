package wal

import (
	"errors"

	"github.com/seed42300104/dedup/internal/aio"
)

// Under SyncAlways, a writer goroutine woken by Append waits for a free Go
// processor before it starts the write; when the appender goes on with
// other work and the other processor runs checkpoints, that is until the
// appender blocks. AppendStart serves such callers (the store, for a
// large batch it still has to apply): where native AIO exists, an
// appender that finds the log idle writes the pending records itself and
// starts their fdatasync in the kernel, then goes on. The poller
// goroutine, parked in the network poller, or any appender or waiter that
// comes by first, takes the completion, publishes the records as synced,
// and writes and starts the sync of what was appended meanwhile.
//
// Appends of little work still go to the writer, which syncs in the
// system call: a submission costs more than a small batch saves by it,
// and many single-ID callers share a sync better without it
// (bench/RESULTS.md has the figures).
//
// One sync runs at a time. With two on one file, a writeback error could
// be reported to one of them only (Linux reports it once per open file),
// and the other, which covers the same pages, would succeed wrongly.

// newSyncer returns an AIO syncer if opts call for fsyncs the kernel can
// run in the background: SyncAlways on the OS filesystem, where files have
// descriptors. Elsewhere (an in-memory or error-injecting FS, another OS)
// it returns nil and the writer goroutine syncs.
func newSyncer(opts Options) *aio.Syncer {
	if opts.Sync != SyncAlways || !opts.direct() {
		return nil
	}
	s, err := aio.New()
	if err != nil {
		return nil
	}
	return s
}

// flushAsync writes the pending records and starts their fsync without
// waiting for it, until nothing is pending or a sync runs. The caller has
// set l.flushing.
func (l *Log) flushAsync() {
	l.mu.Lock()
	for l.err == nil && len(l.pending) > 0 && !l.inflight && !l.noAsync {
		chunks := l.pending
		l.pending = nil
		l.mu.Unlock()
		err := l.write(chunks) // a rotation inside fsyncs synchronously
		l.mu.Lock()
		if err == nil && l.written > l.synced {
			l.inflight, l.inflightAt = true, l.writtenAt
			tag, fd := l.written, l.file.Fd()
			l.mu.Unlock()
			if l.syncer.Start(fd, tag) != nil {
				// The kernel refused the request (a filesystem without
				// AIO fsync, say): no sync started, so one now is no
				// retry. From here on the writer syncs.
				err = l.fsync()
				l.mu.Lock()
				l.inflight, l.noAsync = false, true
				l.mu.Unlock()
			}
			l.mu.Lock()
		}
		if err != nil {
			l.fail(err)
		}
	}
	l.flushing = false
	if l.noAsync && len(l.pending) > 0 {
		l.wake()
	}
	l.cond.Broadcast()
	l.mu.Unlock()
}

// flushAlongside is the writer's flush when AppendStart may also flush:
// it leaves the records to a flush or sync under way, which goes on with
// them, and otherwise writes and syncs them as flush does.
func (l *Log) flushAlongside() {
	l.mu.Lock()
	if l.flushing || l.inflight {
		l.mu.Unlock()
		return
	}
	l.flushing = true
	l.mu.Unlock()
	l.flush(true)
	l.mu.Lock()
	l.flushing = false
	l.cond.Broadcast()
	l.mu.Unlock()
}

// poller takes sync completions until the syncer is closed.
func (l *Log) poller() {
	defer close(l.polled)
	var done []aio.Completion
	for {
		var err error
		done, err = l.syncer.Wait(done[:0])
		for _, c := range done {
			l.complete(c)
		}
		if err != nil {
			l.syncerFailed(err)
			return
		}
	}
}

// syncerFailed makes the log fail-stop if err is a failure to take sync
// completions rather than the syncer's close. A sync under way may then
// never be reported: its records are never acknowledged.
func (l *Log) syncerFailed(err error) {
	if errors.Is(err, aio.ErrClosed) {
		return
	}
	l.mu.Lock()
	l.fail(dataFailure{err}) // the sync under way may have failed unseen
	l.inflight = false
	l.cond.Broadcast()
	l.mu.Unlock()
}

// takeCompletions completes the syncs that have finished, without
// waiting: a goroutine that runs anyway need not wait for the poller to
// be scheduled, which on busy processors can take milliseconds.
func (l *Log) takeCompletions() {
	var buf [2]aio.Completion
	done, err := l.syncer.Poll(buf[:0])
	for _, c := range done {
		l.complete(c)
	}
	if err != nil {
		l.syncerFailed(err)
	}
}

// complete publishes a finished sync, whose tag is the last LSN it
// covers, and flushes what was appended while it ran. A failed sync makes
// the log fail-stop: it is never retried, and nothing after it is synced.
func (l *Log) complete(c aio.Completion) {
	l.mu.Lock()
	l.inflight = false
	l.completed++
	switch {
	case c.Err != nil:
		l.fail(dataFailure{c.Err})
	case l.err == nil && c.Tag > l.synced:
		l.synced, l.syncedAt = c.Tag, l.inflightAt
	}
	start := l.err == nil && !l.flushing && len(l.pending) > 0
	l.flushing = l.flushing || start
	l.cond.Broadcast()
	l.mu.Unlock()
	if start {
		l.flushAsync()
	}
}
