// The Context methods: the Store's side of the Backend interface.
//
// A Store waits in a few places, and honours its caller's context where
// giving up still leaves the call without effect: for its lock (a call
// whose context ended meanwhile is refused once it has the lock), and for
// a checkpoint while the memtable is at twice its bound (see awaitRoom).
// Once a call has appended its WAL record it waits for that record to be
// durable, whatever its context, since its outcome would otherwise be
// unknown; an answer that rests on another call's record waits for it
// too, which takes at most that record's fsync.

package dedup

import (
	"context"
	"fmt"
	"time"
)

var _ Backend = (*Store)(nil)

// CheckAndMarkContext is CheckAndMark; it fails with ctx's error, having
// marked nothing, if ctx ends before the mark is written.
func (s *Store) CheckAndMarkContext(ctx context.Context, id []byte, ttl time.Duration) (isNew bool, err error) {
	isNews, err := s.checkAndMarkBatch(ctx, [][]byte{id}, ttl, false)
	if err != nil {
		return false, err
	}
	return isNews[0], nil
}

// CheckAndMarkBatchContext is CheckAndMarkBatch; it fails with ctx's
// error, having marked nothing, if ctx ends before the marks are written.
func (s *Store) CheckAndMarkBatchContext(ctx context.Context, ids [][]byte, ttl time.Duration) (isNew []bool, err error) {
	return s.checkAndMarkBatch(ctx, ids, ttl, true)
}

// checkAndMarkBatch is CheckAndMarkBatchContext, counted as a batch or a
// single check.
func (s *Store) checkAndMarkBatch(ctx context.Context, ids [][]byte, ttl time.Duration, batch bool) (isNew []bool, err error) {
	defer s.counters.count(&err)
	ttl, err = s.checkTTL(ttl)
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		if err := s.checkID(id); err != nil {
			return nil, fmt.Errorf("batch index %d: %w", i, err)
		}
	}
	isNew = make([]bool, len(ids))
	wait, fresh, err := s.checkAndMark(ctx, ids, ttl, isNew)
	if err != nil {
		return nil, err
	}
	defer s.calls.Done()
	if err := s.durable(wait); err != nil {
		return nil, err
	}
	s.counters.checked(batch, uint64(len(ids)), fresh)
	return isNew, nil
}

// SeenContext is Seen; it fails with ctx's error if ctx has ended.
func (s *Store) SeenContext(ctx context.Context, id []byte) (_ bool, err error) {
	defer s.counters.count(&err)
	if err := s.checkID(id); err != nil {
		return false, err
	}
	if s.closed.Load() {
		return false, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	k := s.idx.Key(id)
	if !s.idx.MayHold(k) {
		s.counters.seenByFilters.Add(1)
		return false, nil // certain without the lock
	}
	e, live, err := s.lookup(k)
	if err != nil {
		return false, err
	}
	defer s.calls.Done()
	if err := s.durable(e.LSN); err != nil {
		return false, err
	}
	if live {
		s.counters.seen[1].Add(1)
	} else {
		s.counters.seen[0].Add(1)
	}
	return live, nil
}

// ForgetContext is Forget; it fails with ctx's error, having forgotten
// nothing, if ctx ends before the forget is written.
func (s *Store) ForgetContext(ctx context.Context, id []byte) (err error) {
	defer s.counters.count(&err)
	if err := s.checkID(id); err != nil {
		return err
	}
	lsn, err := s.forget(ctx, id)
	if err != nil {
		return err
	}
	defer s.calls.Done()
	return s.durable(lsn)
}

// BeginContext is Begin; it fails with ctx's error, having written
// nothing, if ctx ends before the record is written.
func (s *Store) BeginContext(ctx context.Context, key, fingerprint []byte, lease, ttl time.Duration) (_ Claim, err error) {
	defer s.counters.count(&err)
	if err := s.checkID(key); err != nil {
		return Claim{}, err
	}
	ttl, err = s.checkTTL(ttl)
	if err != nil {
		return Claim{}, err
	}
	if lease <= 0 || lease > ttl {
		return Claim{}, fmt.Errorf("%w: lease %v is outside (0, %v]", ErrInvalidTTL, lease, ttl)
	}
	if err := s.checkValue(fingerprint, nil); err != nil {
		return Claim{}, err
	}
	c, wait, err := s.begin(ctx, key, fingerprint, lease, ttl)
	if err != nil {
		return Claim{}, err
	}
	defer s.calls.Done()
	return c, s.durable(wait)
}

// CompleteContext is Complete; it fails with ctx's error, the record
// unchanged, if ctx ends before the result is written.
func (s *Store) CompleteContext(ctx context.Context, key []byte, token uint64, result []byte) (err error) {
	defer s.counters.count(&err)
	if err := s.checkID(key); err != nil {
		return err
	}
	if err := s.checkValue(nil, result); err != nil {
		return err
	}
	wait, err := s.complete(ctx, key, token, result)
	if err != nil {
		return err
	}
	defer s.calls.Done()
	return s.durable(wait)
}

// ReleaseContext is Release; it fails with ctx's error, the record
// unchanged, if ctx ends before the release is written.
func (s *Store) ReleaseContext(ctx context.Context, key []byte, token uint64) (err error) {
	defer s.counters.count(&err)
	if err := s.checkID(key); err != nil {
		return err
	}
	wait, err := s.release(ctx, key, token)
	if err != nil {
		return err
	}
	defer s.calls.Done()
	return s.durable(wait)
}

// RecordContext is Record; it fails with ctx's error if ctx has ended.
func (s *Store) RecordContext(ctx context.Context, key []byte) (_ Record, _ bool, err error) {
	defer s.counters.count(&err)
	if err := s.checkID(key); err != nil {
		return Record{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, false, err
	}
	e, live, err := s.lookup(s.idx.Key(key))
	if err != nil {
		return Record{}, false, err
	}
	defer s.calls.Done()
	if !live || len(e.Value) == 0 {
		return Record{}, false, nil
	}
	if err := s.durable(e.LSN); err != nil {
		return Record{}, false, err
	}
	r, err := decodeRecord(e)
	return r, err == nil, err
}
