// The write path: check-and-mark, forget and Seen, and the limits they
// keep.

package dedup

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/ttl"
)

// CheckAndMark reports whether id is new, that is, has no live mark, and if
// so marks it for ttl (0 means Options.DefaultTTL). Among concurrent
// callers exactly one sees isNew for an ID. It returns once the mark is
// durable as Options.Sync defines; a duplicate answer likewise waits until
// the mark it found is durable.
func (s *Store) CheckAndMark(id []byte, ttl time.Duration) (isNew bool, err error) {
	return s.CheckAndMarkContext(context.Background(), id, ttl)
}

// CheckAndMarkBatch is CheckAndMark for many IDs in one WAL record: isNew[i]
// answers for ids[i]. An ID repeated in the batch is new at most once, at
// its first occurrence. If any ID is invalid the whole batch is rejected
// and nothing is marked.
func (s *Store) CheckAndMarkBatch(ids [][]byte, ttl time.Duration) (isNew []bool, err error) {
	return s.CheckAndMarkBatchContext(context.Background(), ids, ttl)
}

// checkAndMark is the atomic part of CheckAndMarkBatch. While recent
// calls found most of their IDs live, it first looks the IDs up under the
// shared lock, where callers read the index side by side: an ID with a
// live mark then is a duplicate, answered as of that moment. The rest are
// looked up again, and the new ones marked in one WAL record, under the
// exclusive lock (markExclusive). It returns the WAL record the answers
// depend on, for the caller to wait for outside the lock; without an
// error the call is admitted (see enter).
func (s *Store) checkAndMark(ctx context.Context, ids [][]byte, ttl time.Duration, isNew []bool) (wait, fresh uint64, err error) {
	sc := scratchPool.Get().(*batchScratch)
	defer scratchPool.Put(sc)
	sc.distinct(s.idx, ids)
	var shared uint64 // the WAL record the duplicates found shared rest on
	if s.readFirst.Load() && !s.opts.SlidingTTL {
		settled, err := s.lookupShared(ctx, sc, &shared)
		if err != nil {
			return 0, 0, err
		}
		if settled {
			return shared, 0, nil
		}
	}
	if wait, fresh, err = s.markExclusive(ctx, sc, ttl, isNew); err != nil {
		return 0, 0, err
	}
	return max(shared, wait), fresh, nil
}

// markExclusive is checkAndMark's part under the exclusive lock: it looks
// sc's keys up again and marks the new ones, and returns the WAL record
// the answers it gives depend on. It is a function of its own so that
// the compiler open-codes the defers of both: in a function whose defers
// times returns pass 15 it does not, and each defer then costs a record
// pushed and popped at run time on every call. Without an error the call
// is admitted (see enter).
func (s *Store) markExclusive(ctx context.Context, sc *batchScratch, ttl time.Duration, isNew []bool) (wait, fresh uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(ctx); err != nil {
		return 0, 0, err
	}
	defer s.leaveOnError(&err)
	for {
		if wait, fresh, err = s.stageMarks(sc, ttl, isNew); err != nil {
			return 0, 0, err
		}
		if len(s.batch.Ops) == 0 {
			return wait, fresh, nil
		}
		if waited, err := s.awaitRoom(ctx); err != nil {
			return 0, 0, err
		} else if waited {
			continue // the IDs may have been marked meanwhile
		}
		if err := s.makeRoom(int(fresh)); err != nil {
			return 0, 0, err
		}
		wait, err = s.append()
		return wait, fresh, err
	}
}

// stageMarks looks sc's keys up and stages in s.batch the marks of the new
// ones and the extensions of live ones, setting isNew. It returns the WAL
// record that the duplicate answers depend on. The caller holds s.mu
// exclusively.
func (s *Store) stageMarks(sc *batchScratch, ttl time.Duration, isNew []bool) (wait, fresh uint64, err error) {
	clear(isNew)
	now := s.opts.Clock.Now()
	deadline, gen, err := expiry(now, ttl)
	if err != nil {
		return 0, 0, err
	}
	sc.results = slices.Grow(sc.results[:0], len(sc.keys))[:len(sc.keys)]
	if err := s.idx.LookupBatch(sc.keys, s.opts.Clock, sc.results); err != nil {
		return 0, 0, storeError(err)
	}
	s.batch.Reset()
	s.batch.Time = now.UnixNano()
	live := 0
	for j, r := range sc.results {
		k := sc.keys[j]
		if r.Live {
			live++
			if s.opts.SlidingTTL && r.Entry.Deadline < deadline {
				s.batch.Extend(k, gen, deadline, r.Entry.Value) // the newest version decides
			} else {
				wait = max(wait, r.Entry.LSN) // a duplicate answer waits for the mark it saw
			}
			continue
		}
		isNew[sc.positions[j]] = true
		fresh++
		s.batch.Mark(k, gen, deadline, nil)
	}
	s.readFirst.Store(2*live > len(sc.keys))
	return wait, fresh, nil
}

// lookupShared looks sc's keys up under the shared lock, raising *wait to
// the WAL record each live one rests on, and leaves in sc only the keys
// without a live mark. settled says none is left: the call is then
// admitted (see enter). Once fewer than half are live, the next calls go
// straight to the exclusive lock.
func (s *Store) lookupShared(ctx context.Context, sc *batchScratch, wait *uint64) (settled bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	defer func() {
		if !settled {
			s.calls.Done()
		}
	}()
	sc.results = slices.Grow(sc.results[:0], len(sc.keys))[:len(sc.keys)]
	if err := s.idx.LookupLive(sc.keys, s.opts.Clock, sc.results); err != nil {
		return false, storeError(err)
	}
	n := 0
	for j, r := range sc.results {
		if r.Live {
			*wait = max(*wait, r.Entry.LSN)
			continue
		}
		sc.keys[n], sc.positions[n] = sc.keys[j], sc.positions[j]
		n++
	}
	if 2*n >= len(sc.keys) {
		s.readFirst.Store(false)
	}
	sc.keys, sc.positions = sc.keys[:n], sc.positions[:n]
	return n == 0, nil
}

// batchScratch is the working memory of one check-and-mark call, reused
// through scratchPool.
type batchScratch struct {
	inBatch   batchSet
	keys      []index.Key    // the batch's distinct IDs
	positions []int          // where each of keys is in the batch
	results   []index.Result // their lookups
}

var scratchPool = sync.Pool{New: func() any { return new(batchScratch) }}

// distinct hashes ids and keeps the first occurrence of each.
func (sc *batchScratch) distinct(ix *index.Index, ids [][]byte) {
	sc.inBatch.reset(len(ids))
	sc.keys, sc.positions = sc.keys[:0], sc.positions[:0]
	for i, id := range ids {
		k := ix.Key(id)
		if len(ids) > 1 && sc.inBatch.add(k) {
			continue // a repeat of an ID earlier in the batch
		}
		sc.keys = append(sc.keys, k)
		sc.positions = append(sc.positions, i)
	}
}

// makeRoom applies the capacity bounds before n new marks are written: it
// refuses them, or drops the oldest closed generations until they fit.
// Extensions of live marks need no room. The caller holds s.mu
// exclusively.
func (s *Store) makeRoom(n int) error {
	if n == 0 {
		return nil
	}
	dropped := false
	for limit := uint64(s.opts.MaxMarks); limit > 0 && s.idx.Marks()+uint64(n) > limit; dropped = true {
		if !s.dropOldest("max_marks") {
			return s.refuse(fmt.Errorf("%w: %d marks held, %d more would pass MaxMarks %d", ErrFull, s.idx.Marks(), n, limit))
		}
	}
	// The disk is measured at checkpoints, so one drop at a time: the next
	// measure, after the checkpoint that gives its space back, decides
	// whether another is needed.
	if limit := s.opts.MaxDiskBytes; limit > 0 && s.diskBytes >= limit && !s.dropPending {
		if !s.dropOldest("max_disk_bytes") {
			if s.idx.MemMarks() > 0 {
				s.requestCheckpoint() // measure again once the WAL behind it is gone
			}
			return s.refuse(fmt.Errorf("%w: %d bytes on disk at the last checkpoint, MaxDiskBytes %d", ErrFull, s.diskBytes, limit))
		}
		s.dropPending, dropped = true, true
	}
	if dropped {
		s.requestCheckpoint() // make the drop durable, and its space free, soon
	}
	if s.full {
		s.full = false
		s.opts.Logger.Info("dedup: writes of new marks resumed", "dir", s.dir)
	}
	return nil
}

// refuse counts a write refused with err, an ErrFull, and logs the first
// of a run of them. The caller holds s.mu exclusively.
func (s *Store) refuse(err error) error {
	s.counters.full.Add(1)
	if !s.full {
		s.full = true
		s.opts.Logger.Warn("dedup: store full, writes of new marks refused", "dir", s.dir,
			"marks", s.idx.Marks(), "disk_bytes", s.diskBytes, "err", err)
	}
	return err
}

// dropOldest drops the oldest closed generation if WhenFull allows it and
// there is one, for the bound named by cause. The caller holds s.mu
// exclusively.
func (s *Store) dropOldest(cause string) bool {
	if s.opts.WhenFull != DropOldest {
		return false
	}
	now := s.opts.Clock.Now()
	window := s.idx.Window(now)
	g, ok := s.idx.DropOldest(now)
	if ok {
		s.counters.early.Add(1)
		s.opts.Logger.Warn("dedup: generation dropped early to make room", "dir", s.dir, "cause", cause,
			"generation_end", g.End(), "window_before", window, "window_after", s.idx.Window(now))
	}
	return ok
}

// measureDisk returns the bytes the index and the WAL keep on disk, for
// MaxDiskBytes.
func (s *Store) measureDisk() int64 {
	wal, err := s.log.Bytes()
	if err != nil { // a segment removed meanwhile: the next measure is right
		s.opts.Logger.Warn("dedup: WAL not measured for MaxDiskBytes", "dir", s.dir, "err", err)
	}
	return int64(s.idx.KeptBytes()) + wal
}

// expiry returns the deadline and generation of a mark written at now
// with TTL d, or ErrInvalidTTL if they pass what the store can represent.
func expiry(now time.Time, d time.Duration) (ttl.Deadline, ttl.Gen, error) {
	if now.Before(time.Unix(0, 0)) || !now.Add(d).Before(lastTime) {
		return 0, 0, fmt.Errorf("%w: %v from %v passes %v, the last deadline the store can represent", ErrInvalidTTL, d, now, lastTime)
	}
	dl := ttl.DeadlineOf(now, d)
	g := ttl.GenOf(d, dl)
	return dl, g, representable(g)
}

// lastTime is the latest time a deadline can name: deadlines, and the
// ends of their generations, are Unix nanoseconds in an int64.
var lastTime = time.Unix(0, math.MaxInt64)

// representable fails with ErrInvalidTTL if the end of g, the time its
// marks are dropped, is past lastTime.
func representable(g ttl.Gen) error {
	if g.End().After(lastTime) {
		return fmt.Errorf("%w: a generation ending %v, after %v, the last deadline the store can represent", ErrInvalidTTL, g.End(), lastTime)
	}
	return nil
}

// startSyncOps is the batch size from which applying the batch takes
// longer than starting a background fsync costs (bench/RESULTS.md, "fsyncs
// that start before the batch is applied", has the measurements).
const startSyncOps = 256

// append writes s.batch to the WAL and applies it to the index. The caller
// holds s.mu exclusively.
func (s *Store) append() (uint64, error) {
	s.buf = s.batch.AppendEncoded(s.buf[:0])
	appendLog := s.log.Append
	if len(s.batch.Ops) >= startSyncOps {
		appendLog = s.log.AppendStart // its fsync runs while Apply does
	}
	lsn, err := appendLog(s.buf)
	if err != nil {
		return 0, storeError(err)
	}
	s.idx.Apply(&s.batch, lsn)
	if s.idx.MemMarks() >= s.opts.MemtableMarks {
		s.requestCheckpoint()
	}
	return lsn, nil
}

// awaitRoom is the memtable's back-pressure: the memtable may grow to
// twice its size, plus one batch, while the checkpoint requested at its
// size starts and runs; past that, writes wait for it. They wait before
// they write anything, so that a write given up (ctx ended, or the store
// stopped taking writes) has no effect. awaitRoom waits without s.mu and
// reports whether it did: what the caller looked up under the lock may
// then have changed, and must be looked up again. The caller holds s.mu
// exclusively.
func (s *Store) awaitRoom(ctx context.Context) (waited bool, err error) {
	full := func() bool { return s.idx.MemMarks() >= 2*s.opts.MemtableMarks }
	if !full() {
		return false, nil
	}
	if ctx.Done() != nil {
		// Under s.mu, so that ctx ending cannot fall between the check of
		// ctx below and the Wait, and go unnoticed.
		stop := context.AfterFunc(ctx, func() {
			s.mu.Lock()
			s.flushed.Broadcast()
			s.mu.Unlock()
		})
		defer stop()
	}
	for full() {
		if err := s.writable(); err != nil {
			return true, err
		}
		if err := ctx.Err(); err != nil {
			return true, fmt.Errorf("dedup: held back until a checkpoint empties the memtable: %w", err)
		}
		s.requestCheckpoint()
		s.flushed.Wait()
	}
	return true, nil
}

// requestCheckpoint wakes the checkpointer, if it is not already woken.
func (s *Store) requestCheckpoint() {
	select {
	case s.checkpoint <- struct{}{}:
	default:
	}
}

// durable waits until the WAL record lsn is durable; 0 means nothing to
// wait for.
func (s *Store) durable(lsn uint64) error {
	if lsn == 0 {
		return nil
	}
	return storeError(s.log.Wait(lsn))
}

// Seen reports whether id has a live mark, without marking it.
func (s *Store) Seen(id []byte) (bool, error) {
	return s.SeenContext(context.Background(), id)
}

// lookup looks k up under the shared lock; without an error the call is
// admitted (see enter).
func (s *Store) lookup(k index.Key) (_ index.Entry, _ bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return index.Entry{}, false, ErrClosed
	}
	s.calls.Add(1)
	defer s.leaveOnError(&err)
	e, live, err := s.idx.Lookup(k, s.opts.Clock)
	return e, live, storeError(err)
}

// Forget removes the mark of id, if any, so that it is new again.
func (s *Store) Forget(id []byte) error {
	return s.ForgetContext(context.Background(), id)
}

// forget is the atomic part of Forget; without an error the call is
// admitted (see enter).
func (s *Store) forget(ctx context.Context, id []byte) (_ uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leaveOnError(&err)
	if _, err := s.awaitRoom(ctx); err != nil {
		return 0, err
	}
	s.batch.Reset()
	s.batch.Forget(id)
	return s.append()
}

func (s *Store) checkID(id []byte) error {
	switch {
	case len(id) == 0:
		return ErrEmptyID
	case len(id) > s.opts.MaxIDSize:
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrIDTooLong, len(id), s.opts.MaxIDSize)
	}
	return nil
}

func (s *Store) checkTTL(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return s.opts.DefaultTTL, nil
	case d < 0 || d > s.opts.MaxTTL:
		return 0, fmt.Errorf("%w: %v is outside (0, %v]", ErrInvalidTTL, d, s.opts.MaxTTL)
	}
	return d, nil
}

// enter admits a write call: it fails as writable does, or with ctx's
// error if ctx has ended (while the call waited for s.mu, say), or counts
// the call in s.calls, for Close to wait for. The caller holds s.mu and,
// once admitted, calls s.calls.Done when the call has its answer; a call
// that fails under the lock leaves with leaveOnError.
func (s *Store) enter(ctx context.Context) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.calls.Add(1)
	return nil
}

// leaveOnError ends an admitted call that failed.
func (s *Store) leaveOnError(err *error) {
	if *err != nil {
		s.calls.Done()
	}
}

// writable reports why the store takes no writes, if it does not: after a
// failed WAL write or checkpoint it is fail-stop, and refuses even the
// check-and-marks that would find a duplicate. The caller holds s.mu.
func (s *Store) writable() error {
	switch {
	case s.closed.Load():
		return ErrClosed
	case s.opts.ReadOnly:
		return ErrReadOnly
	case s.err != nil:
		return s.err
	}
	return storeError(s.log.Err())
}
