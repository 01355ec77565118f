package wal

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/aio"
)

// Records reach the disk by one path, Log.flush: the goroutine that holds
// the right to write (Log.flushing) writes the pending records and, when
// the sync mode asks for it, syncs them; the outcome of every sync, on
// whatever goroutine it ran, is published by Log.settle. The sync modes
// differ only in when flush syncs and in what Wait waits for.
//
// Where a sync runs is the caller's choice. The writer goroutine, woken
// by Append, by the SyncInterval ticker and by Close, syncs in the system
// call: it has nothing else to do, and a submission costs more than a
// small group of records saves by it. AppendStart serves callers with
// work of their own to do before they wait (the store, for a large batch
// it still has to apply): an appender that finds the log idle writes the
// pending records itself and hands their sync to the syncer, then goes
// on. The syncer's completion, taken by its own goroutine or by any
// appender or waiter that comes by first (syncer.poll), publishes the
// records as synced and flushes what was appended meanwhile the same way.
//
// One sync runs at a time. With two on one file, a writeback error could
// be reported to one of them only (Linux reports it once per open file),
// and the other, which covers the same pages, would succeed wrongly.

// completion is the outcome of one sync: tag is the LSN it was started
// for, err what the sync returned.
type completion struct {
	tag uint64
	err error
}

// errStraySync is a sync completion that matches no sync under way: a
// report of fewer records than the sync covers, a repeated or late report
// of an earlier sync, or one of records not yet written. What the sync
// under way covers is then unknown, so the log becomes fail-stop.
var errStraySync = errors.New("wal: a sync completion matches no sync under way")

// A syncer runs the log's syncs in the background. start begins a sync of
// f that covers every byte written to f before the call; the syncer
// reports its outcome, once, to the function it was made with
// (Log.complete), from a goroutine of its own or from poll. The log
// starts one sync at a time and none after close.
type syncer interface {
	start(f vfs.File, tag uint64) error
	// poll reports the completions that have arrived, without waiting:
	// a goroutine that runs anyway need not wait for the syncer's own to
	// be scheduled, which on busy processors can take milliseconds.
	poll()
	// close waits for the syncs started, then stops the syncer.
	close() error
}

// newSyncer returns the syncer of a log with opts, reporting to done:
// Linux native AIO for SyncAlways on files that are the operating
// system's own (the kernel runs fdatasync on its own worker), else a
// goroutine that syncs through the vfs.File, which works on any FS.
func newSyncer(opts Options, done func(completion)) syncer {
	if opts.testSyncer != nil {
		return opts.testSyncer(done)
	}
	if opts.Sync == SyncAlways && opts.direct() {
		if s, err := newAIOSyncer(done); err == nil {
			return s
		}
	}
	return newGoSyncer(done)
}

// goSyncer is the portable syncer: a goroutine that calls File.SyncData.
type goSyncer struct {
	done func(completion)
	// reqs holds the sync to run. One slot, because a completion's report
	// may start the next sync from the goroutine itself.
	reqs  chan syncReq
	ended chan struct{} // closed when the goroutine exits
}

type syncReq struct {
	f   vfs.File
	tag uint64
}

func newGoSyncer(done func(completion)) *goSyncer {
	s := &goSyncer{done: done, reqs: make(chan syncReq, 1), ended: make(chan struct{})}
	go s.run()
	return s
}

func (s *goSyncer) run() {
	defer close(s.ended)
	for r := range s.reqs {
		s.done(completion{r.tag, r.f.SyncData()})
	}
}

func (s *goSyncer) start(f vfs.File, tag uint64) error {
	s.reqs <- syncReq{f, tag}
	return nil
}

// poll has nothing to do: the goroutine that ran the sync reports it.
func (s *goSyncer) poll() {}

func (s *goSyncer) close() error {
	close(s.reqs)
	<-s.ended
	return nil
}

// aioSyncer starts fdatasyncs through Linux native AIO. It takes a
// descriptor only where the file offers one; the syncs of other files,
// and all syncs once the kernel has refused one, go to a goSyncer.
type aioSyncer struct {
	aio      *aio.Syncer
	done     func(completion)
	fallback *goSyncer
	// refused says the kernel refused a sync (a filesystem without AIO
	// fsync, say): no sync started then, so one by the fallback is no
	// retry.
	refused atomic.Bool
	polled  chan struct{} // closed when the poller exits
}

func newAIOSyncer(done func(completion)) (*aioSyncer, error) {
	a, err := aio.New()
	if err != nil {
		return nil, err
	}
	s := &aioSyncer{aio: a, done: done, fallback: newGoSyncer(done), polled: make(chan struct{})}
	go s.poller()
	return s, nil
}

func (s *aioSyncer) start(f vfs.File, tag uint64) error {
	fd := f.Fd()
	if fd == vfs.InvalidFd || s.refused.Load() {
		return s.fallback.start(f, tag)
	}
	if s.aio.Start(fd, tag) != nil {
		s.refused.Store(true)
		return s.fallback.start(f, tag)
	}
	return nil
}

// poller reports completions as the kernel posts them, parked in the
// network poller between them, until the syncer is closed.
func (s *aioSyncer) poller() {
	defer close(s.polled)
	var done []aio.Completion
	for {
		var err error
		done, err = s.aio.Wait(done[:0])
		s.report(done, err)
		if err != nil {
			return
		}
	}
}

func (s *aioSyncer) poll() {
	var buf [2]aio.Completion
	done, err := s.aio.Poll(buf[:0])
	s.report(done, err)
}

// report passes completions on. A failure to take them, other than the
// syncer's close, is reported as a failed sync: the sync under way may
// then never be reported, and its records must never be acknowledged.
func (s *aioSyncer) report(done []aio.Completion, err error) {
	for _, c := range done {
		s.done(completion{c.Tag, c.Err})
	}
	if err != nil && !errors.Is(err, aio.ErrClosed) {
		s.done(completion{err: fmt.Errorf("wal: taking sync completions: %w", err)})
	}
}

func (s *aioSyncer) close() error {
	err := s.aio.Close() // ends the poller
	<-s.polled
	return errors.Join(err, s.fallback.close())
}
