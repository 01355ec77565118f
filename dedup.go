package dedup

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/ttl"
	"github.com/seed42300104/dedup/wal"
)

// FormatVersion is the on-disk format this build writes. Version 2 stores
// the deadline of a mark without a value in fewer than 8 bytes, which a
// build of version 1 would misread; it reads version 1 too.
const FormatVersion = 2

// oldestFormatVersion is the oldest on-disk format this build reads. Open
// for writing moves a store of an older version up to FormatVersion
// before it writes anything, so that older builds refuse it from then on.
const oldestFormatVersion = 1

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
	// format is the version in the store's FORMAT file, set by Open.
	format int
	lock   io.Closer
	log    *wal.Log
	idx    *index.Index
	// expiry is the time generations are dropped by, for good; reads
	// follow opts.Clock.
	expiry *expiryClock

	// mu orders the write path: a write holds it exclusively from its check
	// to its WAL append and index update, which is what makes
	// check-and-mark atomic. Reads hold it shared, except a Seen that no
	// filter can hold, which needs no lock (index.MayHold). A
	// check-and-mark may look its IDs up under the shared lock first: a
	// live mark found there makes a duplicate, as of that moment, and
	// only the other IDs are checked again, and marked, under the
	// exclusive lock.
	mu           sync.RWMutex
	closed       atomic.Bool   // set under mu
	err          error         // sticky: a failed checkpoint; writes are refused
	batch        index.Batch   // reused by writes, under mu
	buf          []byte        // reused WAL payload, under mu
	inBatch      batchSet      // IDs already in the current Restore batch, under mu
	diskBytes    int64         // on disk at Open or the last checkpoint, under mu
	dropPending  bool          // a drop for MaxDiskBytes awaits its checkpoint, under mu
	flushed      *sync.Cond    // on mu: broadcast when a checkpoint ends
	checkpoint   chan struct{} // wakes the checkpointer
	checkpointMu sync.Mutex    // one checkpoint at a time
	done         chan struct{} // closed when the checkpointer exits
	// calls counts the calls admitted, under mu, before Close: Close
	// waits for them to have their answers before it closes the WAL, so
	// that a call that wrote a record is never told ErrClosed.
	calls sync.WaitGroup

	// readFirst says the last check-and-mark found most of its IDs
	// live, so the next one looks them up under the shared lock first.
	readFirst atomic.Bool

	counters *counters
	full     bool // the last write of new marks met ErrFull, under mu: logged once per episode
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
	s := &Store{opts: o, dir: dir, lock: lock, counters: newCounters(),
		checkpoint: make(chan struct{}, 1), done: make(chan struct{})}
	s.flushed = sync.NewCond(&s.mu)
	start := time.Now()
	replayed, err := s.recover()
	if err != nil {
		lock.Close()
		o.Logger.Error("dedup: open failed", "dir", dir, "err", err)
		return nil, err
	}
	o.Logger.Info("dedup: opened", "dir", dir, "read_only", o.ReadOnly, "marks", s.idx.Marks(),
		"replayed_records", replayed.records, "replayed_bytes", replayed.bytes,
		"checkpoint_lsn", s.idx.CheckpointLSN(), "last_lsn", s.log.LastLSN(), "duration", time.Since(start))
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

// replayed is what recovery replayed of the WAL: records and their
// payload bytes.
type replayed struct{ records, bytes int64 }

// recover checks the format, opens the index and replays the WAL into it.
// A new store gets its FORMAT file last, once its index and WAL exist, so
// that a crash while creating it leaves a directory Open starts over in.
func (s *Store) recover() (r replayed, err error) {
	fresh, err := s.checkFormat()
	if err != nil {
		return r, err
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
		Logger:            s.opts.Logger,
	})
	if err != nil {
		return r, storeError(err)
	}
	after := s.idx.CheckpointLSN()
	replay := s.idx.Replayer()
	s.log, err = wal.Open(fs.PathJoin(s.dir, walDir), wal.Options{
		FS:           fs,
		SegmentSize:  s.opts.SegmentSize,
		Sync:         s.opts.Sync,
		SyncInterval: s.opts.SyncInterval,
		ReadOnly:     s.opts.ReadOnly,
		Logger:       s.opts.Logger,
		Direct:       s.opts.FS.(permFS).direct(),
		Boot:         ttl.Real{}.Boot(), // the kernel's, whatever clock the store reads
	}, after, func(lsn uint64, p []byte) error {
		r.records++
		r.bytes += int64(len(p))
		return replay.Replay(lsn, p)
	})
	if err == nil {
		replay.Flush()
	}
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
		return r, storeError(err)
	}
	return r, nil
}

// Dir returns the directory the store was opened in, as given to Open.
func (s *Store) Dir() string { return s.dir }

// FormatVersion returns the on-disk format version of the store: this
// build's FormatVersion, unless the store is older and was opened
// read-only, which leaves it at its version.
func (s *Store) FormatVersion() int { return s.format }

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

// storeError maps the packages' sentinels onto the store's. Every write
// passes it a nil error at least twice (writable, durable): that case
// returns before the nine errors.Is calls.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wal.ErrCorrupt), errors.Is(err, index.ErrCorrupt):
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case errors.Is(err, wal.ErrIncompatibleFormat), errors.Is(err, index.ErrIncompatibleFormat):
		return fmt.Errorf("%w: %w", ErrIncompatibleFormat, err)
	case errors.Is(err, wal.ErrClosed):
		return ErrClosed
	case errors.Is(err, wal.ErrFailedSync):
		return fmt.Errorf("%w: %w", ErrFailedSync, err)
	case isPermission(err) && !errors.Is(err, ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}
