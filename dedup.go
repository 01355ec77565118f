package dedup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/ttl"
	"github.com/seed42300104/dedup/wal"
)

// FormatVersion is the on-disk format this build writes and reads.
const FormatVersion = 1

// Names inside a store directory.
const (
	lockFile   = "LOCK"
	formatFile = "FORMAT"
	walDir     = "wal"
	indexDir   = "index"
)

// Store is an open deduplication store. All its methods are safe for
// concurrent use.
type Store struct {
	opts Options
	dir  string
	lock io.Closer
	log  *wal.Log
	idx  *index.Index
	// expiry is the time generations are dropped by, for good; reads
	// follow opts.Clock.
	expiry *expiryClock

	// mu orders the write path: a write holds it exclusively from its check
	// to its WAL append and index update, which is what makes
	// check-and-mark atomic. Reads hold it shared, except a Seen that no
	// filter can hold, which needs no lock (index.MayHold).
	mu           sync.RWMutex
	closed       atomic.Bool    // set under mu
	err          error          // sticky: a failed checkpoint; writes are refused
	batch        index.Batch    // reused by writes, under mu
	buf          []byte         // reused WAL payload, under mu
	inBatch      batchSet       // IDs already new in the current batch, under mu
	keys         []index.Key    // the batch's distinct IDs, under mu
	positions    []int          // where each of keys is in the batch, under mu
	results      []index.Result // their lookups, under mu
	diskBytes    int64          // on disk at Open or the last checkpoint, under mu
	dropPending  bool           // a drop for MaxDiskBytes awaits its checkpoint, under mu
	flushed      *sync.Cond     // on mu: broadcast when a checkpoint ends
	checkpoint   chan struct{}  // wakes the checkpointer
	checkpointMu sync.Mutex     // one checkpoint at a time
	done         chan struct{}  // closed when the checkpointer exits
	// calls counts the calls admitted, under mu, before Close: Close
	// waits for them to have their answers before it closes the WAL, so
	// that a call that wrote a record is never told ErrClosed.
	calls sync.WaitGroup

	newMarks, duplicates atomic.Uint64
}

// Open opens the store in dir, creating it if needed, and recovers it: the
// WAL records after the last checkpoint are replayed and a torn tail of the
// last segment is truncated. It fails with ErrLocked if another Store holds
// dir, ErrPermission if the file system refuses it a file, ErrCorrupt on
// any other damage, and ErrIncompatibleFormat for an unknown format
// version.
func Open(dir string, opts *Options) (*Store, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.FS = newPermFS(o.FS, &o)
	fs := o.FS
	if err := checkDir(fs, dir, o.ReadOnly || o.MustExist); err != nil {
		return nil, storeError(err)
	}
	lock, err := lockStore(fs, dir, o.ReadOnly, o.FileMode)
	if err != nil {
		return nil, err
	}
	persisted, err := readClock(fs, dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s := &Store{opts: o, dir: dir, lock: lock,
		checkpoint: make(chan struct{}, 1), done: make(chan struct{})}
	s.flushed = sync.NewCond(&s.mu)
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	s.expiry = newExpiryClock(&o, dir, persisted, s.idx.Marks() > 0)
	if o.MaxDiskBytes > 0 {
		s.diskBytes = s.measureDisk()
	}
	if o.ReadOnly {
		close(s.done)
	} else {
		go s.checkpointer()
	}
	return s, nil
}

// checkDir makes sure dir is a store, or can become one, before Open
// writes anything in it: with mustExist it needs a FORMAT file; otherwise dir
// is created if missing, and an existing one must be a directory that
// holds a store or nothing but the leftovers of an interrupted creation.
func checkDir(fs vfs.FS, dir string, mustExist bool) error {
	if mustExist {
		if _, err := fs.Stat(fs.PathJoin(dir, formatFile)); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrNotStore, dir, err)
		}
		return nil
	}
	st, err := fs.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fsutil.MkdirAll(fs, dir)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrNotStore, dir)
	}
	if _, err := fs.Stat(fs.PathJoin(dir, formatFile)); err == nil {
		return nil
	}
	return onlyLeftovers(fs, dir)
}

// onlyLeftovers fails with ErrNotStore unless dir holds nothing but what an
// interrupted creation of a store leaves.
func onlyLeftovers(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		switch n {
		case lockFile, formatFile + ".tmp", indexDir, walDir, clockFile, clockFile + ".tmp":
		default:
			return fmt.Errorf("%w: %s holds %q and no %s file", ErrNotStore, dir, n, formatFile)
		}
	}
	return nil
}

// recover checks the format, opens the index and replays the WAL into it.
// A new store gets its FORMAT file last, once its index and WAL exist, so
// that a crash while creating it leaves a directory Open starts over in.
func (s *Store) recover() (err error) {
	fresh, err := s.checkFormat()
	if err != nil {
		return err
	}
	fs := s.opts.FS
	s.idx, err = index.Open(fs.PathJoin(s.dir, indexDir), index.Options{
		FS:                fs,
		ExpectedMarks:     s.opts.ExpectedMarks,
		FalsePositiveRate: s.opts.FalsePositiveRate,
		MemtableMarks:     s.opts.MemtableMarks,
		CacheSize:         s.opts.CacheSize,
		ReadOnly:          s.opts.ReadOnly,
		Existing:          !fresh,
		Logf:              s.opts.Logf,
	})
	if err != nil {
		return storeError(err)
	}
	after := s.idx.CheckpointLSN()
	s.log, err = wal.Open(fs.PathJoin(s.dir, walDir), wal.Options{
		FS:           fs,
		SegmentSize:  s.opts.SegmentSize,
		Sync:         s.opts.Sync,
		SyncInterval: s.opts.SyncInterval,
		ReadOnly:     s.opts.ReadOnly,
		Logf:         s.opts.Logf,
		Direct:       s.opts.FS.(permFS).direct(),
	}, after, s.idx.Replay)
	if err == nil && !s.opts.ReadOnly {
		err = s.log.Remove(after)
	}
	if err == nil && fresh {
		// With no mark yet, nothing depends on the clock being right.
		c := s.opts.Clock
		err = writeClock(fs, s.dir, clockRecord{confirmed: c.Now(), at: c.Elapsed(), boot: digestBoot(c.Boot())})
	}
	if err == nil && fresh {
		err = writeFormat(fs, s.dir)
	}
	if err != nil {
		if s.log != nil {
			s.log.Close()
		}
		s.idx.Close()
		return storeError(err)
	}
	return nil
}

// checkFormat reads the FORMAT file. Without one, a directory that holds
// nothing but what an interrupted creation leaves is cleared for a new
// store (fresh): no write was ever acknowledged in it. Anything else there
// means it is not a store.
func (s *Store) checkFormat() (fresh bool, err error) {
	fs := s.opts.FS
	path := fs.PathJoin(s.dir, formatFile)
	b, err := fsutil.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) && !s.opts.ReadOnly {
		return true, s.clearInterruptedCreation()
	}
	if err != nil {
		return false, err
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "dedup store format ")
	n, perr := strconv.Atoi(v)
	switch {
	case !ok || perr != nil:
		return false, fmt.Errorf("%w: %s: offset 0: unreadable %q", ErrCorrupt, path, b)
	case n != FormatVersion:
		return false, fmt.Errorf("%w: %s: version %d, this build reads %d", ErrIncompatibleFormat, path, n, FormatVersion)
	}
	return false, nil
}

func (s *Store) clearInterruptedCreation() error {
	fs := s.opts.FS
	if err := onlyLeftovers(fs, s.dir); err != nil {
		return err
	}
	what, err := storeData(fs, s.dir)
	if err != nil {
		return err
	}
	if what != "" {
		return fmt.Errorf("%w: %s has no %s file but holds %s: refusing to start over on it", ErrCorrupt, s.dir, formatFile, what)
	}
	for _, n := range []string{indexDir, walDir, formatFile + ".tmp", clockFile, clockFile + ".tmp"} {
		if err := fs.RemoveAll(fs.PathJoin(s.dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// storeData names data that only a created store writes: a checkpoint, a
// Pebble table or a WAL record. An interrupted creation leaves none, since
// FORMAT is written before Open returns and so before any write.
func storeData(fs vfs.FS, dir string) (string, error) {
	if what, err := index.HasData(fs, fs.PathJoin(dir, indexDir)); what != "" || err != nil {
		return what, err
	}
	written, err := wal.HasRecords(fs, fs.PathJoin(dir, walDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if written {
		return "WAL records", nil
	}
	return "", nil
}

func writeFormat(fs vfs.FS, dir string) error {
	p := fmt.Appendf(nil, "dedup store format %d\n", FormatVersion)
	return fsutil.ReplaceFile(fs, fs.PathJoin(dir, formatFile), p)
}

// storeError maps the packages' sentinels onto the store's.
func storeError(err error) error {
	switch {
	case errors.Is(err, wal.ErrCorrupt), errors.Is(err, index.ErrCorrupt):
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case errors.Is(err, wal.ErrIncompatibleFormat), errors.Is(err, index.ErrIncompatibleFormat):
		return fmt.Errorf("%w: %w", ErrIncompatibleFormat, err)
	case errors.Is(err, wal.ErrClosed):
		return ErrClosed
	case isPermission(err) && !errors.Is(err, ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}

// CheckAndMark reports whether id is new, that is, has no live mark, and if
// so marks it for ttl (0 means Options.DefaultTTL). Among concurrent
// callers exactly one sees isNew for an ID. It returns once the mark is
// durable as Options.Sync defines; a duplicate answer likewise waits until
// the mark it found is durable.
func (s *Store) CheckAndMark(id []byte, ttl time.Duration) (isNew bool, err error) {
	isNews, err := s.CheckAndMarkBatch([][]byte{id}, ttl)
	if err != nil {
		return false, err
	}
	return isNews[0], nil
}

// CheckAndMarkBatch is CheckAndMark for many IDs in one WAL record: isNew[i]
// answers for ids[i]. An ID repeated in the batch is new at most once, at
// its first occurrence. If any ID is invalid the whole batch is rejected
// and nothing is marked.
func (s *Store) CheckAndMarkBatch(ids [][]byte, ttl time.Duration) (isNew []bool, err error) {
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
	wait, fresh, err := s.checkAndMark(ids, ttl, isNew)
	if err != nil {
		return nil, err
	}
	defer s.calls.Done()
	if err := s.durable(wait); err != nil {
		return nil, err
	}
	s.newMarks.Add(fresh)
	s.duplicates.Add(uint64(len(ids)) - fresh)
	return isNew, nil
}

// checkAndMark is the atomic part of CheckAndMarkBatch: under the
// exclusive lock it looks each ID up and writes one WAL record marking the
// new ones. It returns the WAL record the answers depend on, for the
// caller to wait for outside the lock; without an error the call is
// admitted (see enter).
func (s *Store) checkAndMark(ids [][]byte, ttl time.Duration, isNew []bool) (wait, fresh uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(); err != nil {
		return 0, 0, err
	}
	defer s.leaveOnError(&err)
	now := s.opts.Clock.Now()
	deadline, gen, err := expiry(now, ttl)
	if err != nil {
		return 0, 0, err
	}
	s.batch.Reset()
	s.batch.Time = now.UnixNano()
	s.inBatch.reset(len(ids))
	s.keys, s.positions = s.keys[:0], s.positions[:0]
	for i, id := range ids {
		k := s.idx.Key(id)
		if len(ids) > 1 && s.inBatch.add(k) {
			continue // a repeat of an ID earlier in the batch
		}
		s.keys = append(s.keys, k)
		s.positions = append(s.positions, i)
	}
	s.results = slices.Grow(s.results[:0], len(s.keys))[:len(s.keys)]
	if err := s.idx.LookupBatch(s.keys, s.opts.Clock, s.results); err != nil {
		return 0, 0, storeError(err)
	}
	for j, r := range s.results {
		k := s.keys[j]
		if r.Live {
			if s.opts.SlidingTTL && r.Entry.Deadline < deadline {
				s.batch.Extend(k, gen, deadline, r.Entry.Value) // the newest version decides
			} else {
				wait = max(wait, r.Entry.LSN) // a duplicate answer waits for the mark it saw
			}
			continue
		}
		isNew[s.positions[j]] = true
		fresh++
		s.batch.Mark(k, gen, deadline, nil)
	}
	if err := s.makeRoom(int(fresh)); err != nil {
		return 0, 0, err
	}
	if len(s.batch.Ops) > 0 {
		if wait, err = s.append(); err != nil {
			return 0, 0, err
		}
	}
	return wait, fresh, nil
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
		if !s.dropOldest() {
			return fmt.Errorf("%w: %d marks held, %d more would pass MaxMarks %d", ErrFull, s.idx.Marks(), n, limit)
		}
	}
	// The disk is measured at checkpoints, so one drop at a time: the next
	// measure, after the checkpoint that gives its space back, decides
	// whether another is needed.
	if limit := s.opts.MaxDiskBytes; limit > 0 && s.diskBytes >= limit && !s.dropPending {
		if !s.dropOldest() {
			if s.idx.MemMarks() > 0 {
				s.requestCheckpoint() // measure again once the WAL behind it is gone
			}
			return fmt.Errorf("%w: %d bytes on disk at the last checkpoint, MaxDiskBytes %d", ErrFull, s.diskBytes, limit)
		}
		s.dropPending, dropped = true, true
	}
	if dropped {
		s.requestCheckpoint() // make the drop durable, and its space free, soon
	}
	return nil
}

// dropOldest drops the oldest closed generation if WhenFull allows it and
// there is one. The caller holds s.mu exclusively.
func (s *Store) dropOldest() bool {
	if s.opts.WhenFull != DropOldest {
		return false
	}
	_, ok := s.idx.DropOldest(s.opts.Clock.Now())
	return ok
}

// measureDisk returns the bytes the index and the WAL keep on disk, for
// MaxDiskBytes.
func (s *Store) measureDisk() int64 {
	wal, err := s.log.Bytes()
	if err != nil { // a segment removed meanwhile: the next measure is right
		s.opts.Logf("dedup: measuring the WAL for MaxDiskBytes: %v", err)
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
		// Back-pressure: the memtable may grow to twice its size, plus the
		// batches of the writers under way, while the checkpoint requested
		// starts and runs; past that, writes wait for it.
		for s.idx.MemMarks() >= 2*s.opts.MemtableMarks && s.err == nil && !s.closed.Load() {
			s.flushed.Wait()
		}
	}
	return lsn, nil
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
	if err := s.checkID(id); err != nil {
		return false, err
	}
	if s.closed.Load() {
		return false, ErrClosed
	}
	k := s.idx.Key(id)
	if !s.idx.MayHold(k) {
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
	return live, nil
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
	if err := s.checkID(id); err != nil {
		return err
	}
	lsn, err := s.forget(id)
	if err != nil {
		return err
	}
	defer s.calls.Done()
	return s.durable(lsn)
}

func (s *Store) forget(id []byte) (_ uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leaveOnError(&err)
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

// enter admits a write call: it fails as writable does, or counts the
// call in s.calls, for Close to wait for. The caller holds s.mu and, once
// admitted, calls s.calls.Done when the call has its answer; a call that
// fails under the lock leaves with leaveOnError.
func (s *Store) enter() error {
	if err := s.writable(); err != nil {
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

// Checkpoint writes the memtable to Pebble, snapshots the filters that
// changed and removes the WAL segments behind them, so that the next Open
// has less to replay. The store does this on its own whenever the memtable
// fills; call it to bound replay before a planned restart, or to reclaim
// WAL space at once.
func (s *Store) Checkpoint() error {
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
	err = s.enter()
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

// VerifyReport is what Verify checked and found.
type VerifyReport struct {
	// WALRecords is the number of WAL records read: those of the
	// segments Open reads, from the one holding the checkpoint on.
	WALRecords uint64 `json:"wal_records"`
	// IndexKeys is the number of keys in Pebble.
	IndexKeys uint64 `json:"index_keys"`
	// Uncovered lists Pebble keys, in hex, that no filter covers: marks
	// the store would wrongly call new. It should be empty.
	Uncovered []string `json:"uncovered,omitempty"`
}

// Verify checks the whole store: the WAL as Open reads it (the CRCs and
// LSN sequence of the segments from the checkpoint on, and that none is
// missing or cut short), every Pebble block's checksum, and that every
// live key in Pebble is covered by its generation's filter. Damage is an
// error wrapping ErrCorrupt; uncovered keys are listed in the report.
// Writes and checkpoints wait while it runs.
func (s *Store) Verify() (VerifyReport, error) {
	// No checkpoint may move the replay start, or remove the segments
	// before it, while the WAL is read as Open would read it.
	s.checkpointMu.Lock()
	defer s.checkpointMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return VerifyReport{}, ErrClosed
	}
	var r VerifyReport
	var err error
	if r.WALRecords, err = wal.Verify(s.opts.FS, s.opts.FS.PathJoin(s.dir, walDir), s.idx.CheckpointLSN()); err != nil {
		return r, storeError(err)
	}
	c, err := s.idx.Verify(s.opts.Clock.Now())
	r.IndexKeys, r.Uncovered = c.Keys, c.Uncovered
	return r, storeError(err)
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
	s.mu.Lock()
	if err := s.writable(); err != nil {
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
	} else {
		s.idx.Release(frozen)
	}
	s.flushed.Broadcast()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.log.Remove(frozen.LSN()); err != nil {
		s.opts.Logf("dedup: removing WAL segments behind LSN %d: %v", frozen.LSN(), err)
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
		s.opts.Logf("dedup: %v", err)
	}
}

// Dir returns the directory the store was opened in, as given to Open.
func (s *Store) Dir() string { return s.dir }

// Close waits for a running checkpoint and for the calls already under
// way, makes every acknowledged write durable in every sync mode, and
// releases the directory. A call under way when Close begins gets its
// own answer, not ErrClosed; later calls get ErrClosed and have no effect.
// A writable store records the confirmed time in its CLOCK file, so that
// the next Open in the same boot can trust the wall clock at once. It
// returns the failure that made the store fail-stop, if any, or that of
// writing that file. Calling it twice is fine.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil
	}
	s.closed.Store(true)
	s.flushed.Broadcast()
	s.mu.Unlock()
	s.calls.Wait()
	if !s.opts.ReadOnly {
		close(s.checkpoint)
	}
	<-s.done
	s.checkpointMu.Lock() // wait for a Checkpoint call in progress
	defer s.checkpointMu.Unlock()
	var clockErr error
	if !s.opts.ReadOnly && s.err == nil {
		// The next Open in this boot then knows the time is right up to
		// now, and how long the store was closed.
		r, confirmed := s.expiry.closing()
		if err := s.expiry.persist(s.opts.FS, s.dir, r, confirmed); err != nil {
			clockErr = fmt.Errorf("dedup: writing the %s file at Close: %w", clockFile, storeError(err))
		}
	}
	return errors.Join(s.err, clockErr, storeError(s.log.Close()), s.idx.Close(), s.lock.Close())
}
