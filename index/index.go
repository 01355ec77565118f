// Package index is the store's read structure: a Bloom filter per
// generation in front of Pebble, with an in-memory table of the marks not
// yet flushed.
//
// The WAL, not Pebble, is the durability point, so Pebble runs without its
// own WAL. A mark lives first in the memtable; a checkpoint freezes the
// memtable, writes it to Pebble, flushes Pebble, snapshots the filters that
// changed and records the WAL LSN all of that covers. Replay after a crash
// re-applies the WAL records after that LSN, which is idempotent.
//
// Pebble keys are the 8-byte big-endian generation followed by the ID, so a
// generation is one contiguous key range; values are the deadline, in as
// few bytes as the generation's span allows for a mark without a value of
// its own, followed by the mark's value (see appendValue).
//
// Concurrency: the index does not lock its own state (the memtables, the
// map of filters, the pending drops). Its caller holds one read-write lock
// over it, and each method needs:
//   - no lock: MayHold, which reads an immutable, atomically published set
//     of filter chains, so an absent ID is answered while Apply runs; Key,
//     CheckpointLSN, FilterMisses, CompactionTimes, DiskBytes, KeptBytes
//     and Compact, which read atomics or Pebble's own synchronized state;
//     Persist and MergeChains, on a Frozen the caller owns, one at a time;
//   - the shared lock: Lookup, LookupBatch, LookupLive, Explain, Scan,
//     Verify, Marks, MemMarks, Window, Gens and Expired;
//   - the exclusive lock: Apply, DropOldest, Freeze, EndCheckpoint, EndMerges
//     and CopyTo;
//   - nothing else running: Replay and RebuildFilters, during the caller's
//     Open, and Close.
package index

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/cockroachdb/pebble/v2"
	pebblebloom "github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/ttl"
)

// Options configures an Index.
type Options struct {
	FS vfs.FS
	// ExpectedMarks sizes the first filter of each generation.
	ExpectedMarks int
	// FalsePositiveRate is every filter's target rate, in
	// [MinFalsePositiveRate, 1).
	FalsePositiveRate float64
	// MemtableMarks sizes the memtable: the marks it holds before the
	// caller checkpoints.
	MemtableMarks int
	// CacheSize is Pebble's block cache, in bytes.
	CacheSize int64
	ReadOnly  bool
	// Existing says the index was created before, by an Open that
	// completed: a missing index directory is then damage, not a new
	// index.
	Existing bool
	// Logger receives what Open rebuilt, Pebble's errors and the
	// failures that cost only space. Nil means silent.
	Logger *slog.Logger
}

// Entry is the live mark of an ID.
type Entry struct {
	Gen      ttl.Gen
	Deadline ttl.Deadline
	Value    []byte
	// LSN is the WAL record the answer rests on while it is not yet in
	// Pebble: the mark's, or for no live mark the forget's; else zero.
	LSN uint64
}

// Index is an open index.
type Index struct {
	opts       Options
	dir        string
	db         *pebble.DB
	pebbleOpts *pebble.Options

	filters map[ttl.Gen]*genFilter
	gens    []*genFilter // the values of filters, for fast iteration
	// chains is what MayHold reads without a lock: the filters of each
	// generation in gens. It is replaced, never changed, when a
	// generation comes or goes or a chain grows.
	chains atomic.Pointer[[][]*bloom.BloomFilter]
	mem    *memtable
	frozen []*memtable // oldest first; being persisted
	// pendingDrops are the generations DropOldest took out, whose keys the
	// next checkpoint deletes, each with the memtable's last LSN when it
	// was dropped: marks applied after that (a clock set back can reopen
	// a closed generation) are kept.
	pendingDrops map[ttl.Gen]uint64
	ckpt         checkpoint // the last one written; owned by Persist
	ckptLSN      atomic.Uint64

	filterMisses atomic.Uint64 // see FilterMisses
	lookups      lookupCounts  // see Lookups
	compactions  compactionTimes
	// fatal is the first error Pebble called fatal (see pebbleLogger);
	// nil until then. fatalCh is closed when it is set.
	fatal   atomic.Pointer[pebbleFatal]
	fatalCh chan struct{}
}

// compactionTimes adds up the time Pebble spends compacting, and the time
// spent giving space back: excising dropped generations, and the part of
// compactions spent on input they did not write out.
type compactionTimes struct {
	total   atomic.Int64 // nanoseconds compacting
	reclaim atomic.Int64 // nanoseconds reclaiming
}

// ended records a finished compaction. Its time is shared between the
// bytes it wrote out and those it dropped (expired generations, forgotten
// and superseded marks) in proportion to their size.
func (c *compactionTimes) ended(info pebble.CompactionInfo) {
	if info.Err != nil {
		return
	}
	var in, out uint64
	for _, l := range info.Input {
		for _, t := range l.Tables {
			in += t.Size
		}
	}
	for _, t := range info.Output.Tables {
		out += t.Size
	}
	c.total.Add(int64(info.Duration))
	if in > out {
		c.reclaim.Add(int64(float64(info.Duration) * float64(in-out) / float64(in)))
	}
}

// CompactionTimes returns how long Pebble has spent compacting since Open,
// and how long excising dropped generations and compacting away data that
// was not written out took: the cost of giving back the space of expired
// and forgotten marks.
func (ix *Index) CompactionTimes() (total, reclaim time.Duration) {
	return time.Duration(ix.compactions.total.Load()), time.Duration(ix.compactions.reclaim.Load())
}

// Open opens or creates the index in dir. If the checkpoint names filter
// snapshots that are missing, it rebuilds the filters from Pebble and says
// so through Logger. Once it has been checkpointed, a missing Pebble
// database or table is ErrCorrupt: the marks it held are in no WAL.
func Open(dir string, opts Options) (*Index, error) {
	if fp := opts.FalsePositiveRate; !(fp >= MinFalsePositiveRate && fp < 1) {
		return nil, fmt.Errorf("index: FalsePositiveRate %v is outside [%v, 1)", fp, MinFalsePositiveRate)
	}
	fs := opts.FS
	if opts.Existing {
		if _, err := fs.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s is missing; %s", ErrCorrupt, dir, restoreAdvice)
		} else if err != nil {
			return nil, err
		}
	}
	if !opts.ReadOnly {
		if err := fsutil.MkdirAll(fs, fs.PathJoin(dir, filtersDir)); err != nil {
			return nil, err
		}
	}
	ix := &Index{opts: opts, dir: dir, filters: map[ttl.Gen]*genFilter{}, mem: newMemtable(min(opts.MemtableMarks, firstMemtableMarks)),
		fatalCh: make(chan struct{})}
	ck, err := readCheckpoint(fs, dir)
	if err != nil {
		return nil, err
	}
	ix.ckpt = ck
	ix.ckptLSN.Store(ck.lsn)
	ix.mem.lastLSN = ck.lsn
	if ix.db, ix.pebbleOpts, err = ix.openPebble(fs.PathJoin(dir, pebbleDir), ck.stored); err != nil {
		return nil, err
	}
	if err := ix.loadFilters(); err != nil {
		ix.Close() // leaves Pebble alone after a fatal error
		return nil, err
	}
	ix.publish()
	if !opts.ReadOnly {
		ix.removeIngestLeftovers()
	}
	return ix, nil
}

// openPebble opens the Pebble database in dir. Unless mustExist, it
// creates it if need be; once a checkpoint has moved marks into it, a
// missing or empty database is ErrCorrupt, and so is a missing or short
// table. A fatal error while Pebble opens is returned as soon as it is
// reported: Pebble may wait for ever on the goroutine it stopped.
func (ix *Index) openPebble(dir string, mustExist bool) (*pebble.DB, *pebble.Options, error) {
	opts := ix.opts
	if mustExist {
		if _, err := opts.FS.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, nil, lostDatabase(dir, "is missing")
		} else if err != nil {
			return nil, nil, err
		}
	} else if !opts.ReadOnly {
		if err := fsutil.MkdirAll(opts.FS, dir); err != nil {
			return nil, nil, err
		}
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		FS:         opts.FS,
		Cache:      cache,
		DisableWAL: true,
		// Dropping a generation excises its key range, which needs
		// virtual tables. Tables are columnar: keys share their prefix
		// per bundle, and the sequence numbers of ingested tables, all
		// equal, take no room per key. An index of an older format is
		// moved up to it when opened for writing; old tables stay
		// readable until compactions rewrite them.
		FormatMajorVersion: pebble.FormatTableFormatV6,
		MemTableSize:       64 << 20,
		ReadOnly:           opts.ReadOnly,
		ErrorIfNotExists:   mustExist,
		Logger:             pebbleLogger{ix},
		// Corruption is returned to the caller as ErrCorrupt; Pebble's
		// default listener would end the process.
		EventListener: &pebble.EventListener{
			DataCorruption: func(pebble.DataCorruptionInfo) {},
			CompactionEnd:  ix.compactions.ended,
		},
	}
	// Each checkpoint ingests a table per generation whose random IDs span
	// the generation's whole key range, so it lands in L0 and overlaps all
	// of the generation below it. Pebble compacts L0 once its depth
	// reaches half of L0CompactionThreshold: at 16 it merges such tables
	// eight at a time into one bottom level, which rewrites each key fewer
	// times than the default 4 does, two at a time through a level in
	// between: over 10M new IDs, 1.58-1.91 CPU-s per million against
	// 2.01-2.81 (dedupctl bench, alternating runs). Lookups pay with a
	// filter test per L0 table.
	po.L0CompactionThreshold = 16
	po.L0StopWritesThreshold = 64
	po.LBaseMaxBytes = 1 << 30
	// Random IDs do not compress; a per-table filter saves a block read
	// for most Gets of a key the table does not hold. The bottom level,
	// which holds most marks, has none: its tables do not overlap, so a
	// key is looked for in one of them only, and only once a
	// generation's own filter has said it may be there, which it is but
	// for that filter's false positives. Pebble's reads skip a bottom
	// level's filters unless told otherwise (UseL6Filters), so one would
	// cost disk and save nothing.
	po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = pebblebloom.FilterPolicy(10)
		po.Levels[i].BlockSize = dataBlockSize
	}
	po.Levels[len(po.Levels)-1].FilterPolicy = pebble.NoFilterPolicy
	var db *pebble.DB
	err := ix.awaitPebble(func() (err error) {
		db, err = pebble.Open(dir, po)
		return err
	})
	if ferr := ix.failed(); ferr != nil {
		return nil, nil, ferr // the database, if any, is left to its stopped goroutines
	}
	switch {
	case err == nil:
		return db, po, nil
	case mustExist && errors.Is(err, pebble.ErrDBDoesNotExist):
		return nil, nil, lostDatabase(dir, "holds no database")
	case errors.Is(err, os.ErrNotExist), strings.Contains(err.Error(), "object size mismatch"):
		// Pebble's consistency check: a table its MANIFEST names is
		// missing or of another size.
		return nil, nil, fmt.Errorf("%w: %s: %v; %s", ErrCorrupt, dir, err, restoreAdvice)
	}
	return nil, nil, ix.wrapPebble(err, dir)
}

// lostDatabase is ErrCorrupt for a Pebble directory that a checkpoint
// wrote marks into, and that no longer holds them.
func lostDatabase(dir, what string) error {
	return fmt.Errorf("%w: %s %s, yet the index was checkpointed into it; %s", ErrCorrupt, dir, what, restoreAdvice)
}

// pebbleLogger passes Pebble's errors on and drops its chatter.
//
// Pebble calls Fatalf for failures it does not undo, such as a MANIFEST
// it could not write, and its default ends the process. Pebble's code
// after a Fatalf is not meant to run: a failed flush, for one, is retried
// for ever. So Fatalf records the error and never returns. On a goroutine
// of the index's caller it panics, and the index method Pebble was called
// from recovers the panic and returns the error (catchFatal); Pebble's
// own background goroutine is stopped with runtime.Goexit. Pebble's state
// may then no longer match the disk, and its stopped goroutine may hold
// its locks, so the index is fail-stop: every later call that would reach
// Pebble fails with ErrFailed, and Close leaves Pebble open, its
// directory locked, until the process ends. A call already waiting on
// Pebble's goroutines then, for a compaction, a copy or Close, returns the
// error too (awaitPebble).
type pebbleLogger struct{ ix *Index }

func (pebbleLogger) Infof(string, ...any) {}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.ix.log().Error("index: pebble error", "err", fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	f := &pebbleFatal{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			f.causes = append(f.causes, err)
		}
	}
	if l.ix.fatal.CompareAndSwap(nil, f) {
		l.ix.log().Error("index: fail-stop", "err", f)
		close(l.ix.fatalCh)
	}
	if callerGoroutine() {
		panic(f)
	}
	runtime.Goexit()
}

// callerGoroutine reports whether the running goroutine came through an
// index method or Open, rather than being one that Pebble started.
func callerGoroutine() bool {
	buf := make([]byte, 1<<20)
	stack := buf[:runtime.Stack(buf, false)]
	pkg := reflect.TypeFor[Index]().PkgPath()
	return bytes.Contains(stack, []byte(pkg+".(*Index).")) || bytes.Contains(stack, []byte(pkg+".Open("))
}

// catchFatal, deferred by each method that calls into Pebble, turns the
// panic of a Fatalf on its goroutine into the error it returns in *err.
func (ix *Index) catchFatal(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(*pebbleFatal)
		if !ok {
			panic(r)
		}
		*err = f
	}
}

// awaitPebble runs call, a call into Pebble that may wait on Pebble's own
// goroutines, and returns its error, or the fatal error Pebble reports
// first: Pebble may then wait for ever on the goroutine it stopped, so
// call is left to it. A Fatalf on call's goroutine is caught there.
func (ix *Index) awaitPebble(call func() error) error {
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() { done <- err }()
		defer ix.catchFatal(&err)
		err = call()
	}()
	select {
	case err := <-done:
		return err
	case <-ix.fatalCh:
		return ix.failed()
	}
}

// pebbleFatal is an error Pebble called fatal: ErrFailed, and the errors
// it was reported with.
type pebbleFatal struct {
	msg    string
	causes []error
}

func (f *pebbleFatal) Error() string {
	return fmt.Sprintf("%v: pebble: %s; fix the cause, then reopen the store in a new process", ErrFailed, f.msg)
}

func (f *pebbleFatal) Unwrap() []error { return append([]error{ErrFailed}, f.causes...) }

// failed returns the fatal error Pebble reported, if it did: every method
// that calls into Pebble checks it first.
func (ix *Index) failed() error {
	if f := ix.fatal.Load(); f != nil {
		return f
	}
	return nil
}

// wrapPebble says where an error of Pebble's, or of a check of what Pebble
// returned, came from. Pebble's corruption errors are ErrCorrupt, told
// without the carrier line Pebble adds and with what to do about them.
// Once Pebble has reported a fatal error, it returns that instead,
// whatever err is: nothing Pebble answers can be trusted then.
func (ix *Index) wrapPebble(err error, where string) error {
	if ferr := ix.failed(); ferr != nil {
		return ferr
	}
	switch {
	case err == nil:
		return nil
	case pebble.IsCorruptionError(err):
		return corruptTable(err, where)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// restoreAdvice is what to do about a damaged Pebble table or database:
// the WAL behind a checkpoint is gone, so nothing in the store can rebuild
// them.
const restoreAdvice = "restore the store from a snapshot or backup (dedupctl repair mends the WAL, not the index)"

// corruptTable is ErrCorrupt for a Pebble corruption error met at where.
func corruptTable(err error, where string) error {
	msg := err.Error()
	if info := pebble.ExtractDataCorruptionInfo(err); info != nil {
		msg = fmt.Sprintf("%v (table %s)", info.Details, info.Path)
	}
	return fmt.Errorf("%w: %s: %s; %s", ErrCorrupt, where, msg, restoreAdvice)
}

// log returns the Logger of the options, or one that discards.
func (ix *Index) log() *slog.Logger {
	if ix.opts.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return ix.opts.Logger
}

// CheckpointLSN returns the WAL LSN that Pebble and the filter snapshots
// cover: replay starts after it.
func (ix *Index) CheckpointLSN() uint64 { return ix.ckptLSN.Load() }

// Key is an ID with its filter hash, computed once for a lookup and the
// mark that may follow it.
type Key struct {
	ID   []byte
	hash filterHash
}

// Key hashes id.
func (ix *Index) Key(id []byte) Key { return Key{ID: id, hash: hashOf(id)} }

// Hash returns a 64-bit hash of the key, for the caller's own hash sets.
func (k Key) Hash() uint64 { return k.hash.h1 }

// Apply applies b, written by the WAL record lsn, to the memtable and the
// filters. The caller holds the exclusive lock.
func (ix *Index) Apply(b *Batch, lsn uint64) {
	if len(b.Ops) > 1 {
		ix.mem.warm(b.Ops)
	}
	for _, op := range b.Ops {
		if op.Forget {
			ix.mem.forget(op.ID, lsn)
			continue
		}
		f := ix.filters[op.Gen]
		if f == nil {
			f = newGenFilter(op.Gen, ix.filterCapacity(op.Gen.Class()), ix.opts.FalsePositiveRate)
			ix.addGen(f)
		}
		h := op.hash
		if h.h2 == 0 { // replayed: not hashed yet
			h = hashOf(op.ID)
		}
		// An extension is no new mark: it counts, and takes filter room,
		// only if it moves the ID into a generation that lacks it. The
		// filter may test positive falsely, so a running merge, which
		// rebuilds the filter without the memtable, records it anyway.
		switch {
		case !op.Extend || !f.test(h):
			if f.add(h, ix.opts.FalsePositiveRate) {
				ix.publish()
			}
		case f.added != nil:
			f.added = append(f.added, h.h1)
		}
		f.wrote(b.Time, op.Deadline)
		ix.mem.mark(op, h.h1, lsn)
	}
	ix.mem.lastLSN = lsn
}

// filterCapacity sizes the first filter of a new generation of a span
// class: for the expected marks, or for as many as the fullest generation
// of that class holds, so that steady traffic gets one filter per
// generation rather than a chain.
func (ix *Index) filterCapacity(class uint) uint {
	n := uint(ix.opts.ExpectedMarks)
	for _, f := range ix.gens {
		if f.gen.Class() == class {
			n = max(n, f.marks)
		}
	}
	return n
}

// Marks returns the number of marks the live generations hold, expired
// ones not yet dropped included.
func (ix *Index) Marks() uint64 {
	var n uint64
	for _, f := range ix.gens {
		n += uint64(f.marks)
	}
	return n
}

// Window estimates how far back the store remembers at now: the age of
// its oldest live mark, from each generation's first write and longest
// TTL. It is never less than the true age; it is exact for a generation
// whose marks share one TTL and are written steadily, and it shrinks when
// DropOldest forgets marks early. It is zero when no mark is live.
func (ix *Index) Window(now time.Time) time.Duration {
	var w time.Duration
	for _, f := range ix.gens {
		if !f.gen.Expired(now) {
			w = max(w, f.window(now.UnixNano()))
		}
	}
	return w
}

// memtablesNewestFirst returns the active memtable and then the frozen
// ones, newest first.
func (ix *Index) memtablesNewestFirst() []*memtable {
	ms := make([]*memtable, 0, 1+len(ix.frozen))
	ms = append(ms, ix.mem)
	for i := len(ix.frozen) - 1; i >= 0; i-- {
		ms = append(ms, ix.frozen[i])
	}
	return ms
}

// DropOldest takes out of the read path the generation that ends first
// among those that can receive no new mark at now, so that its marks are
// new again before their time, and returns it. The next checkpoint deletes
// its keys, as for an expired generation. It returns false if no
// generation is closed. The caller holds the exclusive lock.
func (ix *Index) DropOldest(now time.Time) (ttl.Gen, bool) {
	var oldest *genFilter
	for _, f := range ix.gens {
		if f.gen.Closed(now) && (oldest == nil || f.end < oldest.end) {
			oldest = f
		}
	}
	if oldest == nil {
		return 0, false
	}
	ix.dropGen(oldest.gen)
	if ix.pendingDrops == nil {
		ix.pendingDrops = make(map[ttl.Gen]uint64)
	}
	ix.pendingDrops[oldest.gen] = ix.mem.lastLSN
	return oldest.gen, true
}

// dropGen discards a generation's filter.
func (ix *Index) dropGen(g ttl.Gen) {
	delete(ix.filters, g)
	ix.gens = slices.DeleteFunc(ix.gens, func(f *genFilter) bool { return f.gen == g })
	ix.publish()
}

// addGen adds a generation's filter.
func (ix *Index) addGen(f *genFilter) {
	ix.filters[f.gen] = f
	ix.gens = append(ix.gens, f)
	ix.publish()
}

// publish replaces the chains MayHold reads with the current ones.
func (ix *Index) publish() {
	chains := make([][]*bloom.BloomFilter, len(ix.gens))
	for i, f := range ix.gens {
		chains[i] = f.filters
	}
	ix.chains.Store(&chains)
}

// MayHold reports whether a live mark of k may exist: false is certain.
// It takes no lock and may run concurrently with anything, Apply
// included, so an absent ID is answered without the store's lock.
func (ix *Index) MayHold(k Key) bool {
	for _, chain := range *ix.chains.Load() {
		if chainMayContain(chain, k.hash) {
			return true
		}
	}
	return false
}

// A Pebble value takes one of two forms, told apart by its length (part
// of the on-disk format):
//
//	short: offset, shortWidth(class) bytes, 4 to 7, little-endian
//	long:  deadline, 8 bytes, little-endian | the mark's value, if any
//
// The short form is for a mark with no value of its own, the common case,
// of a generation whose span in nanoseconds fits in 7 bytes: offset is its
// deadline less the start of its generation's bucket, in nanoseconds. Only
// a deadline before 1970, outside the bucket GenOf gives it, needs the
// long form then. A store of format 1 holds long values only.

// shortWidth returns the bytes of a short value in a generation of class,
// or 8 if the class's span is too long for one.
func shortWidth(class uint) int {
	if class > 26 { // 2^27 s is more than 2^56 ns
		return 8
	}
	span := uint64(time.Second) << class
	return (bits.Len64(span-1) + 7) / 8
}

// genStart returns the start of g's bucket, in nanoseconds since the Unix
// epoch.
func genStart(g ttl.Gen) int64 { return g.End().UnixNano() - int64(g.Span()) }

// appendValue appends the Pebble value of a mark of generation g with
// deadline d and value v.
func appendValue(b []byte, g ttl.Gen, d ttl.Deadline, v []byte) []byte {
	if w := shortWidth(g.Class()); len(v) == 0 && w < 8 {
		if off := int64(d) - genStart(g); off >= 0 && off < int64(g.Span()) {
			for i := range w {
				b = append(b, byte(off>>(8*i)))
			}
			return b
		}
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(d))
	return append(b, v...)
}

// decodeValue decodes the Pebble value of a mark of generation g.
func decodeValue(g ttl.Gen, v []byte) (Entry, error) {
	if len(v) < 8 {
		if w := shortWidth(g.Class()); len(v) != w {
			return Entry{}, fmt.Errorf("%w: value of %d bytes, where generation %x takes %d or 8 and more", ErrCorrupt, len(v), uint64(g), w)
		}
		var off int64
		for i, c := range v {
			off |= int64(c) << (8 * i)
		}
		return Entry{Gen: g, Deadline: ttl.Deadline(genStart(g) + off)}, nil
	}
	e := Entry{Gen: g, Deadline: ttl.Deadline(binary.LittleEndian.Uint64(v))}
	if len(v) > 8 {
		e.Value = slices.Clone(v[8:])
	}
	return e, nil
}

// MemMarks returns the number of IDs in the active memtable.
func (ix *Index) MemMarks() int { return ix.mem.len() }

// GenStats describes one generation.
type GenStats struct {
	Gen          ttl.Gen
	Marks        uint64 // marks added, live or not
	FilterBytes  uint64
	FalsePosRate float64
	Filters      int // filters in its chain
}

// Gens describes the generations, oldest deadline first.
func (ix *Index) Gens() []GenStats {
	out := make([]GenStats, 0, len(ix.filters))
	for g, f := range ix.filters {
		out = append(out, GenStats{Gen: g, Marks: uint64(f.marks), FilterBytes: f.bytes(), FalsePosRate: f.fpRate(), Filters: len(f.filters)})
	}
	slices.SortFunc(out, func(a, b GenStats) int { return cmp.Compare(a.Gen.End().UnixNano(), b.Gen.End().UnixNano()) })
	return out
}

// DiskBytes returns the bytes Pebble uses on disk, and of them the bytes
// of the tables that hold live data: the rest is compactions in progress
// and files waiting to be deleted. Both are zero once Pebble has failed.
func (ix *Index) DiskBytes() (total, tables uint64) {
	if ix.failed() != nil {
		return 0, 0
	}
	m := ix.db.Metrics()
	return m.DiskSpaceUsage(), uint64(m.Total().TablesSize)
}

// KeptBytes returns the bytes Pebble uses on disk, less the obsolete
// files it is deleting: what a capacity bound should count right after a
// compaction. It is zero once Pebble has failed.
func (ix *Index) KeptBytes() uint64 {
	if ix.failed() != nil {
		return 0
	}
	m := ix.db.Metrics()
	return m.DiskSpaceUsage() - m.Table.Local.ObsoleteSize - m.BlobFiles.Local.ObsoleteSize
}

// Compact has Pebble compact the whole index now, giving back the space of
// dropped generations and deleted marks at once rather than when its
// background compactions get to them. It returns once the tables the
// compaction replaced are deleted: Pebble deletes them in the background,
// and until then the index takes the disk of both.
func (ix *Index) Compact(ctx context.Context) (err error) {
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return err
	}
	// Keys start with a generation, whose first byte is a span class far
	// below 0xff. Pebble compacts on its own goroutines, and waits for
	// them.
	if err := ix.awaitPebble(func() error { return ix.db.Compact(ctx, []byte{0}, []byte{0xff}, true) }); err != nil {
		return ix.wrapPebble(err, "compact")
	}
	return ix.awaitObsoleteDeleted(ctx)
}

// obsoletePoll is how often awaitObsoleteDeleted asks Pebble whether its
// obsolete files are gone.
const obsoletePoll = 5 * time.Millisecond

// awaitObsoleteDeleted waits until Pebble has deleted every table that is
// no longer part of the index, or ctx is done: the obsolete ones, which
// it deletes in the background without pacing (the default), and the
// zombies, which an iterator still reads and which become obsolete when
// it closes. Pebble offers no wait but its metrics.
func (ix *Index) awaitObsoleteDeleted(ctx context.Context) error {
	for {
		if err := ix.failed(); err != nil {
			return err
		}
		m := ix.db.Metrics()
		left := m.Table.Local.ObsoleteCount + m.Table.Local.ZombieCount + m.BlobFiles.Local.ObsoleteCount
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("compact: waiting for Pebble to delete %d replaced files: %w", left, ctx.Err())
		case <-time.After(obsoletePoll):
		}
	}
}

// Close closes Pebble. It does not checkpoint: the WAL holds what the
// memtable held. After a fatal error of Pebble's, even one reported while
// Pebble waits for its compactions to end, it returns that error and
// leaves Pebble as it is (see pebbleLogger).
func (ix *Index) Close() error {
	if err := ix.failed(); err != nil {
		return err
	}
	err := ix.awaitPebble(ix.db.Close)
	if ferr := ix.failed(); ferr != nil {
		return ferr
	}
	return err
}
