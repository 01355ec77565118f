// Checkpoints: the background checkpointer, and Checkpoint, Compact and
// Snapshot, which run one.

package dedup

import (
	"context"
	"fmt"
	"time"

	"github.com/seed42300104/dedup/index"
)

// Checkpoint writes the memtable to Pebble, snapshots the filters that
// changed and removes the WAL segments behind them, so that the next Open
// has less to replay. The store does this on its own whenever the memtable
// fills; call it to bound replay before a planned restart, or to reclaim
// WAL space at once.
func (s *Store) Checkpoint() (err error) {
	defer s.counters.count(&err)
	s.checkpointMu.Lock()
	defer s.checkpointMu.Unlock()
	return s.runCheckpoint()
}

// Compact checkpoints, which drops the expired generations and the WAL
// segments behind the checkpoint, then has Pebble compact the whole index,
// so that the space of dropped and forgotten marks is given back now
// rather than by Pebble's background compactions. Writes and checkpoints
// go on while Pebble compacts, so the memtable stays within its bound;
// Close waits for the compaction to end.
func (s *Store) Compact(ctx context.Context) (err error) {
	s.mu.Lock()
	err = s.enter(ctx)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	defer s.calls.Done()
	if err := s.Checkpoint(); err != nil {
		return err
	}
	return storeError(s.idx.Compact(ctx))
}

// Snapshot writes a consistent copy of the store into dir, which must not
// exist: a store directory that Open can use, here or on another machine,
// to move a whole store (a Kafka partition's, say). It checkpoints first,
// so that the copy is mostly Pebble tables, linked where the filesystem
// allows; writes wait while the copy is made.
func (s *Store) Snapshot(dir string) error {
	fs := s.opts.FS
	if _, err := fs.Stat(dir); err == nil {
		return fmt.Errorf("dedup: snapshot: %s already exists", dir)
	}
	s.checkpointMu.Lock()
	defer s.checkpointMu.Unlock()
	if err := s.runCheckpoint(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.idx.CopyTo(fs.PathJoin(dir, indexDir)); err != nil {
		return storeError(err)
	}
	if err := s.log.CopyTo(fs.PathJoin(dir, walDir)); err != nil {
		return storeError(err)
	}
	if r := s.expiry.persisted; !r.confirmed.IsZero() {
		if err := writeClock(fs, dir, r); err != nil {
			return err
		}
	}
	return writeFormat(fs, dir)
}

// checkpointer runs a checkpoint each time the memtable fills, and every
// ExpiryInterval in which a generation has wholly expired.
func (s *Store) checkpointer() {
	defer close(s.done)
	tick := time.NewTicker(s.opts.ExpiryInterval)
	defer tick.Stop()
	for {
		select {
		case _, ok := <-s.checkpoint:
			if !ok {
				return
			}
		case <-tick.C:
			if !s.expired() {
				continue
			}
		}
		if err := s.Checkpoint(); err != nil {
			return // fail-stop or closed: the error is s.err or ErrClosed
		}
	}
}

func (s *Store) expired() bool {
	now, _ := s.expiry.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.closed.Load() && s.idx.Expired(now)
}

// runCheckpoint freezes the memtable under the lock, persists it without
// the lock, and lets it go under the lock again. It drops the generations
// expired by the expiry clock, which the wall clock alone does not move
// forward. A failed checkpoint makes the store fail-stop for writes. The
// caller holds checkpointMu.
func (s *Store) runCheckpoint() error {
	start := time.Now()
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.flushed.Broadcast() // writers held back by the memtable's bound see it too
		s.mu.Unlock()
		return err
	}
	drop, confirmed := s.expiry.look()
	frozen := s.idx.Freeze(drop.confirmed)
	s.mu.Unlock()

	err := s.expiry.persist(s.opts.FS, s.dir, drop, confirmed)
	if err == nil {
		err = s.idx.Persist(frozen)
	}

	s.mu.Lock()
	if err != nil {
		s.err = fmt.Errorf("dedup: checkpoint failed, writes are refused until reopen: %w", storeError(err))
		err = s.err
		s.opts.Logger.Error("dedup: fail-stop: checkpoint failed", "dir", s.dir, "err", err)
	} else {
		s.idx.EndCheckpoint(frozen)
	}
	s.flushed.Broadcast()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.checkpointed(frozen, since(start))
	if err := s.log.Remove(frozen.LSN()); err != nil {
		s.opts.Logger.Warn("dedup: WAL segments behind the checkpoint not removed", "dir", s.dir, "lsn", frozen.LSN(), "err", err)
	}
	if s.opts.MaxDiskBytes > 0 {
		disk := s.measureDisk()
		s.mu.Lock()
		s.diskBytes, s.dropPending = disk, false
		s.mu.Unlock()
	}
	if frozen.Merging() {
		s.mergeChains(frozen)
	}
	return nil
}

// mergeChains merges, without the lock, the filter chains that the
// checkpoint of frozen picked, so that a generation that outgrew its
// filter costs one filter test per lookup again rather than one per
// filter of its chain. A failed merge keeps the chains, which are still
// right, and is logged; a read that meets the damage reports it.
func (s *Store) mergeChains(frozen *index.Frozen) {
	err := s.idx.MergeChains(frozen)
	s.mu.Lock()
	s.idx.EndMerges(frozen)
	s.mu.Unlock()
	if err != nil {
		s.opts.Logger.Warn("dedup: filter chains not merged", "dir", s.dir, "err", err)
	}
}

// checkpointed counts and logs the checkpoint of frozen, which took
// nanos, and the generations it dropped.
func (s *Store) checkpointed(frozen *index.Frozen, nanos int64) {
	dropped, early := frozen.Dropped(), frozen.DroppedEarly()
	s.counters.checkpoints.Add(1)
	s.counters.checkpointNanos.Observe(nanos)
	s.counters.expired.Add(uint64(len(dropped) - early))
	log := s.opts.Logger
	log.Debug("dedup: checkpoint", "dir", s.dir, "lsn", frozen.LSN(), "marks", frozen.Marks(),
		"generations_dropped", len(dropped), "duration", time.Duration(nanos))
	for _, g := range dropped {
		log.Info("dedup: generation dropped", "dir", s.dir, "generation_end", g.End())
	}
}
