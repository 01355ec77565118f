package dedup

import (
	"context"
	"fmt"
	"time"

	"github.com/seed42300104/dedup/ttl"
)

// Restore writes marks as Scan yields them, each whole: its ID, its
// deadline to the nanosecond and, if it has one, its idempotency record
// (state, token, lease, TTL, fingerprint and result). It is how a store's
// marks move to another store: Scan there, Restore here. restored[i] tells
// whether marks[i] was written. A mark is skipped, not written, when its
// ID already has a live mark here (which is kept), when it repeats an ID
// earlier in marks, or when its deadline has passed. Mark.Live is ignored.
//
// The marks are one WAL record, durable when Restore returns as
// Options.Sync defines. If any mark is invalid (an ID CheckAndMark would
// refuse, a deadline more than MaxTTL away, a record in no known state, of
// a TTL outside (0, MaxTTL], or whose fingerprint and result pass
// MaxValueSize) nothing is written. A record's own Deadline field is
// ignored: the mark's decides.
//
// A record keeps its token, which the other store's WAL handed out as an
// LSN. Tokens fence by equality, so should this store's WAL reach that same
// LSN when a takeover here grants a lease on the key, the old owner's token
// would be valid again: restore in-progress records whose owners have
// stopped.
func (s *Store) Restore(marks []Mark) (restored []bool, err error) {
	defer s.counters.count(&err)
	for i, m := range marks {
		if err := s.checkRestore(m); err != nil {
			return nil, fmt.Errorf("mark %d: %w", i, err)
		}
	}
	restored = make([]bool, len(marks))
	wait, err := s.restore(marks, restored)
	if err != nil {
		return nil, err
	}
	defer s.calls.Done()
	return restored, s.durable(wait)
}

// checkRestore checks what Restore can check of m without the store's
// state.
func (s *Store) checkRestore(m Mark) error {
	if err := s.checkID(m.ID); err != nil {
		return err
	}
	if ahead := m.Deadline.Sub(s.opts.Clock.Now()); ahead > s.opts.MaxTTL {
		return fmt.Errorf("%w: deadline %s is %v away, more than MaxTTL %v", ErrInvalidTTL, m.Deadline.Format(time.RFC3339Nano), ahead, s.opts.MaxTTL)
	}
	r := m.Record
	if r == nil {
		return nil
	}
	if r.State != StateInProgress && r.State != StateCompleted {
		return fmt.Errorf("%w: a record in %v", ErrInvalidRecord, r.State)
	}
	if r.TTL <= 0 || r.TTL > s.opts.MaxTTL {
		return fmt.Errorf("%w: a record kept for %v, outside (0, %v]", ErrInvalidTTL, r.TTL, s.opts.MaxTTL)
	}
	return s.checkValue(r.Fingerprint, r.Result)
}

// restore is the atomic part of Restore: under the exclusive lock it
// looks each ID up and writes one WAL record of the marks to restore. It
// returns the WAL record to wait for.
func (s *Store) restore(marks []Mark, restored []bool) (_ uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := context.Background()
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leaveOnError(&err)
	for {
		wait, n, err := s.stageRestore(marks, restored)
		if err != nil || n == 0 {
			return wait, err
		}
		if waited, err := s.awaitRoom(ctx); err != nil {
			return 0, err
		} else if waited {
			continue // the IDs may have been marked meanwhile
		}
		if err := s.makeRoom(n); err != nil {
			return 0, err
		}
		return s.append()
	}
}

// stageRestore looks the marks up and stages in s.batch the n to restore,
// setting restored. It returns the WAL record that the skipped marks'
// answers depend on. The caller holds s.mu exclusively.
func (s *Store) stageRestore(marks []Mark, restored []bool) (wait uint64, n int, err error) {
	clear(restored)
	now := s.opts.Clock.Now()
	s.batch.Reset()
	s.batch.Time = now.UnixNano()
	s.inBatch.reset(len(marks))
	for i, m := range marks {
		deadline := ttl.Deadline(m.Deadline.UnixNano())
		if !deadline.Live(now) {
			continue
		}
		k := s.idx.Key(m.ID)
		if s.inBatch.add(k) {
			continue
		}
		e, live, err := s.idx.Lookup(k, s.opts.Clock)
		if err != nil {
			return 0, 0, storeError(err)
		}
		if live {
			wait = max(wait, e.LSN) // the answer rests on the mark found
			continue
		}
		var value []byte
		if m.Record != nil {
			value = encodeRecord(*m.Record)
		}
		s.batch.Mark(k, ttl.GenOf(m.Deadline.Sub(now), deadline), deadline, value)
		restored[i] = true
		n++
	}
	return wait, n, nil
}
