package wal

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/internal/metric"
)

var (
	// ErrCorrupt marks a segment that fails a check: magic, CRC, LSN
	// sequence. The wrapping error names the file and offset.
	ErrCorrupt = errors.New("wal: corrupt")
	// ErrIncompatibleFormat marks a segment of an unknown format version.
	ErrIncompatibleFormat = errors.New("wal: incompatible format version")
	// ErrClosed is returned by calls on a closed Log.
	ErrClosed = errors.New("wal: closed")
	// ErrReadOnly is returned by Append on a Log opened read-only.
	ErrReadOnly = errors.New("wal: read-only")
	// ErrInvalidOptions reports Options out of range: a segment size that
	// leaves no room for a record, or a negative minimum.
	ErrInvalidOptions = errors.New("wal: invalid options")
)

// SyncMode says when appended records are fsynced.
type SyncMode int

const (
	// SyncAlways: Wait returns once the record is fsynced.
	SyncAlways SyncMode = iota
	// SyncInterval: Wait returns once the record is written to the OS;
	// fsync runs every Options.SyncInterval.
	SyncInterval
	// SyncNone: Wait returns once the record is written to the OS; fsync
	// runs only at segment rotation and Close.
	SyncNone
)

func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// Options configures a Log. Zero fields take the defaults named.
type Options struct {
	FS vfs.FS
	// SegmentSize is the largest size segments are preallocated to and
	// rotated at. A record larger than a segment gets a segment of its
	// own.
	SegmentSize int64
	// MinSegmentSize is the size of a new log's first segment, and the
	// smallest segments shrink to. Zero means 4 MiB, or SegmentSize if
	// that is smaller. A segment that fills in under a second makes the
	// next twice its size, up to SegmentSize; one that takes over 16
	// seconds, half; and once every record is behind the caller's
	// checkpoint, Remove starts a segment of this size in place of a
	// larger one. So a busy log rotates seldom, and an idle one keeps
	// little disk.
	MinSegmentSize int64
	Sync           SyncMode
	// SyncInterval is the fsync period of SyncInterval mode.
	SyncInterval time.Duration
	// ReadOnly replays without repairing a torn tail and refuses Append.
	ReadOnly bool
	// Logger receives what recovery repaired (a truncated torn tail), the
	// failure that makes the log fail-stop, and the failures that cost
	// only speed (the spare segment). Nil means silent.
	Logger *slog.Logger
	// Direct says that FS's files are the operating system's, with nothing
	// interposed on their writes and syncs, as vfs.Default's are (a wrapper
	// that only sets the modes of new files qualifies; an error-injecting
	// one does not). The kernel may then sync them through their
	// descriptors (see sync.go), and a failure to write or sync them is
	// recorded (failed.go). FS == vfs.Default implies it.
	Direct bool
	// Boot names the boot the process runs in (Linux's boot_id), "" if
	// unknown. A log that fails on direct files records it, so that Open in
	// the same boot, or in one it cannot tell apart, refuses the log with
	// ErrFailedSync.
	Boot string

	// testSyncer, if set, makes the syncer in place of newSyncer: the
	// seam through which tests inject sync completions.
	testSyncer func(done func(completion)) syncer
	// testNow, if set, is the clock segment sizes are decided by.
	testNow func() time.Time
}

// The fill times that size the next segment (see MinSegmentSize).
const (
	growBelow   = time.Second
	shrinkAbove = 16 * time.Second
)

// minSegment is MinSegmentSize's default.
const minSegment = 4 << 20

// minSize returns the smallest segment size.
func (o Options) minSize() int64 {
	return min(cmp.Or(o.MinSegmentSize, minSegment), o.SegmentSize)
}

// sizeAfter returns the size of the segment after one of size cap whose
// first half filled in d.
func (o Options) sizeAfter(cap int64, d time.Duration) int64 {
	next := cap
	switch {
	case 2*d < growBelow:
		next = 2 * cap
	case 2*d > shrinkAbove:
		next = cap / 2
	}
	return min(max(next, o.minSize()), o.SegmentSize)
}

func (o Options) now() time.Time {
	if o.testNow != nil {
		return o.testNow()
	}
	return time.Now()
}

// direct reports whether the log's files are the operating system's own.
func (o Options) direct() bool { return o.Direct || o.FS == vfs.Default }

// Log is an open write-ahead log. Append and Wait are safe for concurrent
// use. Records appended while a write and fsync are under way share the
// next ones (group commit). A writer goroutine does the writes and
// fsyncs, except those AppendStart starts (see sync.go).
type Log struct {
	opts Options
	dir  string

	mu   sync.Mutex // protects the fields below
	cond *sync.Cond // broadcast when written, synced or err change
	// pending holds appended records not yet handed to the writer, one
	// chunk per segment they go to.
	pending []chunk
	nextLSN uint64 // LSN of the next Append
	tail    uint64 // first LSN of the segment Append writes to
	tailOff int64  // offset of the next record in that segment
	tailCap int64  // the size of that segment
	// tailBegan is when Append began that segment; halfSeen says that
	// records have filled half of it, and nextCap, decided then, is the
	// size of the next one.
	tailBegan time.Time
	halfSeen  bool
	nextCap   int64
	tailNext  uint64 // at Open, the LSN after the newest segment's last record
	written   uint64 // highest LSN written to the OS
	synced    uint64 // highest LSN fsynced
	// writtenAt and syncedAt are where the written and the synced data end.
	writtenAt, syncedAt position
	segments            []uint64 // first LSNs of the segment files, oldest first
	err                 error    // sticky: the first I/O failure; the Log is then fail-stop
	closed              bool

	// flushing says that a goroutine holds the right to write pending
	// records (see flush). inflight says that a sync runs, started for
	// the LSN inflightTag, covering data that ends at inflightAt;
	// inflightBg that it runs in the syncer, whose completion poll may
	// take. completed counts the syncs ended, for Wait to notice one.
	flushing    bool
	inflight    bool
	inflightBg  bool
	inflightTag uint64
	inflightAt  position
	completed   uint64

	// syncer runs the syncs that AppendStart and completions start (see
	// sync.go). Set by Open, nil if ReadOnly.
	syncer syncer
	kick   chan struct{} // wakes the writer
	done   chan struct{} // closed when the writer exits
	// file is the segment records are written to, fileFirst its first
	// LSN; both are owned by the goroutine that set flushing.
	file      vfs.File
	fileFirst uint64
	// spareReady and spareBusy, under mu, say that the spare segment is
	// ready and being prepared (spare.go), of spareSize bytes; stopSpare
	// stops a preparation when the log closes, and spareWG waits for it.
	spareReady, spareBusy bool
	spareSize             int64
	spareAsked            bool // the spare was asked for since this segment began; owned like file
	stopSpare             atomic.Bool
	spareWG               sync.WaitGroup
	// zeroed is how far the file is known to hold written zeros or data.
	// Records land inside it, so their fdatasync changes no file size and
	// costs no journal commit, which a write that extends the file does.
	zeroed int64
	// fileCap is the size file was preallocated to: zeros go no further.
	fileCap int64
	// state, under mu, is the content of the STATE file, and stated says
	// that the file exists.
	state  logState
	stated bool

	// inflightStart is when the sync under way started, under mu.
	inflightStart time.Time
	stats         stats
}

// stats are the log's counters, read by Metrics without the lock.
type stats struct {
	appends, appendBytes, syncs atomic.Uint64
	syncSeconds                 *metric.Histogram // nanoseconds per record sync
	syncRecords                 *metric.Histogram // records each sync made durable
}

// Bucket bounds of the sync histograms: latencies from a fast NVMe's
// fdatasync to a struggling disk's, and group-commit sizes in powers of
// four.
var (
	syncNanosBounds  = []int64{50e3, 100e3, 250e3, 500e3, 1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9}
	syncRecordBounds = []int64{1, 4, 16, 64, 256, 1024, 4096, 16384}
)

// Metrics is a snapshot of the log's counters since Open.
type Metrics struct {
	// Appends counts the records appended, AppendBytes their framed size.
	Appends, AppendBytes uint64
	// Syncs counts the fsyncs of records that ended, failed ones included.
	Syncs uint64
	// SyncNanos is the time each took, in nanoseconds; SyncRecords how
	// many records each made durable (the group commit's size), over the
	// syncs that succeeded.
	SyncNanos, SyncRecords metric.Snapshot
}

// Metrics returns the log's counters. It takes no lock.
func (l *Log) Metrics() Metrics {
	return Metrics{
		Appends: l.stats.appends.Load(), AppendBytes: l.stats.appendBytes.Load(),
		Syncs:     l.stats.syncs.Load(),
		SyncNanos: l.stats.syncSeconds.Snapshot(), SyncRecords: l.stats.syncRecords.Snapshot(),
	}
}

// logger returns the Logger of the options, or one that discards.
func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// zeroAhead is how far ahead of the records the writer fills the segment
// with zeros.
const zeroAhead = 4 << 20

// position is an offset in the segment whose first LSN is first.
type position struct {
	first uint64
	off   int64
}

// chunk is a run of framed records bound for one segment at one offset.
type chunk struct {
	first   uint64 // first LSN of the segment
	size    int64  // the size the segment is preallocated to
	off     int64  // where data starts in it
	data    []byte
	lastLSN uint64
}

// Open opens or creates the log in dir and replays it: fn sees every
// record with an LSN above after, in order, and may keep its payload,
// which nothing overwrites. A torn tail of the newest
// segment is truncated (zeroed) unless ReadOnly; any other damage fails
// with ErrCorrupt (see format.go for what recovery can tell apart). New
// records get LSNs after the log's last record, after after, and after
// every LSN a repair cut.
func Open(dir string, opts Options, after uint64, fn func(lsn uint64, payload []byte) error) (*Log, error) {
	if opts.SegmentSize <= headerSize || opts.MinSegmentSize < 0 {
		return nil, fmt.Errorf("%w: SegmentSize %d, MinSegmentSize %d", ErrInvalidOptions, opts.SegmentSize, opts.MinSegmentSize)
	}
	opts.Logger = opts.logger()
	l := &Log{opts: opts, dir: dir, kick: make(chan struct{}, 1), done: make(chan struct{})}
	l.stats.syncSeconds = metric.NewHistogram(syncNanosBounds...)
	l.stats.syncRecords = metric.NewHistogram(syncRecordBounds...)
	l.cond = sync.NewCond(&l.mu)
	if !opts.ReadOnly {
		if err := fsutil.MkdirAll(opts.FS, dir); err != nil {
			return nil, err
		}
	}
	stale, err := l.checkFailed()
	if err != nil {
		return nil, err
	}
	if err := l.recover(after, fn); err != nil {
		return nil, err
	}
	if stale && !opts.ReadOnly {
		if err := l.clearFailed(); err != nil {
			return nil, err
		}
	}
	if opts.ReadOnly {
		close(l.done)
		return l, nil
	}
	if err := l.openTail(); err != nil {
		return nil, err
	}
	l.syncer = newSyncer(opts, l.complete)
	go l.writer()
	return l, nil
}

// recover reads the segments that may hold records above after.
func (l *Log) recover(after uint64, fn func(uint64, []byte) error) error {
	r, err := readLog(l.opts.FS, l.dir, after, fn)
	if err != nil {
		return err
	}
	l.segments, l.state, l.stated = r.firsts, r.state, r.stated
	if r.drop != "" && !l.opts.ReadOnly {
		if err := l.opts.FS.Remove(r.drop); err != nil {
			return err
		}
		// A crash in creating it left it; no record reached it.
		l.opts.Logger.Info("wal: removed an empty newest segment", "path", r.drop)
	}
	if n := len(r.firsts); n > 0 {
		l.tail, l.tailOff, l.tailNext, l.tailCap = r.firsts[n-1], r.tail.end, r.tail.next, cmp.Or(r.tailCap, l.opts.SegmentSize)
		if r.tail.torn && !l.opts.ReadOnly {
			if err := l.truncateTail(l.opts.FS.PathJoin(l.dir, segmentName(l.tail)), r.tail); err != nil {
				return err
			}
		}
	}
	l.nextLSN = r.next
	l.written, l.synced = r.next-1, r.next-1
	l.syncedAt = position{l.tail, l.tailOff}
	l.writtenAt = l.syncedAt
	return nil
}

// truncateTail zeroes a torn tail so the next writer starts on clean space.
func (l *Log) truncateTail(path string, s scan) error {
	f, err := l.opts.FS.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeZeros(f, s.end, s.tornEnd); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	// No surviving record says these bytes were synced: a write cut short
	// by a crash leaves this, and was never acknowledged. Damage to the
	// records of the last fsync before a crash looks the same, and under
	// SyncAlways those were acknowledged: hence a warning.
	l.opts.Logger.Warn("wal: truncated a torn tail", "path", path, "offset", s.end,
		"bytes", s.tornEnd-s.end, "first_lost_lsn", s.next)
	return nil
}

// openTail opens the newest segment for writing. It starts a new one if
// there is none, or if the newest ends before the LSNs the caller asked to
// follow (a log that lost its tail behind a checkpoint, or was cut by a
// repair).
func (l *Log) openTail() error {
	l.tailBegan = l.opts.now()
	if len(l.segments) == 0 || l.tailNext != l.nextLSN {
		l.tail, l.tailOff, l.tailCap = l.nextLSN, headerSize, l.opts.minSize()
		l.nextCap = l.tailCap
		l.syncedAt = position{l.tail, headerSize}
		l.writtenAt = l.syncedAt
		return l.createSegment(l.tail, l.tailCap)
	}
	l.nextCap = min(max(l.tailCap, l.opts.minSize()), l.opts.SegmentSize)
	l.halfSeen = l.tailOff >= l.tailCap/2
	f, err := l.opts.FS.OpenReadWrite(l.opts.FS.PathJoin(l.dir, segmentName(l.tail)), vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.file, l.fileFirst, l.zeroed, l.fileCap = f, l.tail, st.Size(), l.tailCap
	// The records just replayed may be in the page cache only, written by
	// a process that died before its fsync: make them durable before any
	// answer rests on them, and before new records vouch for them, with
	// the zeros ahead of them that recovery expects (see checkSize).
	err = l.zeroTo(l.tailOff + zeroAhead/2)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = fsutil.SyncDir(l.opts.FS, l.dir)
	}
	if err == nil && (!l.stated || l.state.newest != l.tail) {
		err = l.recordNewest(l.tail)
	}
	if err != nil {
		l.file = nil
		f.Close()
		return err
	}
	return nil
}

// recordNewest makes STATE name the segment whose first LSN is first as
// the newest. The segment is durable already.
func (l *Log) recordNewest(first uint64) error {
	l.mu.Lock()
	st := l.state
	st.newest = first
	l.mu.Unlock()
	if err := writeState(l.opts.FS, l.dir, st); err != nil {
		return err
	}
	l.mu.Lock()
	l.state, l.stated = st, true
	l.mu.Unlock()
	return nil
}

// createSegment makes the segment whose first LSN is first, size bytes
// long, from the spare if one of that size is ready, and records it as the
// newest. It runs in flush, or in Open before the writer starts.
func (l *Log) createSegment(first uint64, size int64) error {
	used, err := l.useSpare(first, size)
	if !used && err == nil {
		err = l.newSegment(first, size)
	}
	if err == nil {
		err = l.recordNewest(first)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.segments = append(l.segments, first)
	l.syncedAt = position{first, headerSize}
	l.mu.Unlock()
	return nil
}

// newName is the temporary name of a segment created without the spare.
const newName = "next.new"

// newSegment creates, preallocates to size and installs the segment file
// whose first LSN is first. It writes zeros ahead of the first records, as
// checkSize expects of a segment's first records, before the segment
// gets its name.
func (l *Log) newSegment(first uint64, size int64) error {
	fs := l.opts.FS
	tmp := fs.PathJoin(l.dir, newName)
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	zeroed := min(int64(zeroAhead), size)
	err = f.Preallocate(0, size)
	if err == nil {
		err = writeZeros(f, headerSize, zeroed)
	}
	if err != nil {
		f.Close()
		return err
	}
	_, err = l.install(f, tmp, first, size, zeroed)
	return err
}

// install writes the header of segment f, now at path from, whose first
// LSN is first and which is preallocated to size, syncs f, renames it to its segment name and syncs the
// directory, and makes f the file records go to; f holds written zeros or
// data up to zeroed. So a segment name never holds a header that is not
// durable. It closes f; renamed says whether the rename was
// reached, so that a failure before it changed nothing.
func (l *Log) install(f vfs.File, from string, first uint64, size, zeroed int64) (renamed bool, err error) {
	fs := l.opts.FS
	_, err = f.WriteAt(segmentHeader(first, size), 0)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		renamed = true
		err = fs.Rename(from, fs.PathJoin(l.dir, segmentName(first)))
	}
	if err == nil {
		err = fsutil.SyncDir(fs, l.dir)
	}
	// Records go through a descriptor opened by the segment's name.
	err = errors.Join(err, f.Close())
	if err == nil {
		f, err = fs.OpenReadWrite(fs.PathJoin(l.dir, segmentName(first)), vfs.WriteCategoryUnspecified)
	}
	if err != nil {
		return renamed, err
	}
	l.file, l.fileFirst, l.zeroed, l.fileCap, l.spareAsked = f, first, zeroed, size, false
	return true, nil
}

// Append frames payload as the next record and queues it for the writer.
// It returns the record's LSN; Wait(lsn) tells when it is durable. After
// any I/O failure Append returns that failure until the Log is reopened.
func (l *Log) Append(payload []byte) (uint64, error) {
	return l.append(payload, false)
}

// AppendStart is Append for a caller with more work to do before it
// waits: if the log is idle, the caller writes the record itself and
// hands its fsync to the syncer (see sync.go), so the sync overlaps that
// work. Elsewhere it is Append.
func (l *Log) AppendStart(payload []byte) (uint64, error) {
	return l.append(payload, true)
}

func (l *Log) append(payload []byte, start bool) (uint64, error) {
	if len(payload) == 0 || len(payload) > MaxPayload {
		return 0, fmt.Errorf("wal: payload size %d out of range", len(payload))
	}
	l.mu.Lock()
	if err := l.usable(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	size := int64(recordSize(len(payload)))
	if l.tailOff+size > l.tailCap && l.tailOff > headerSize {
		l.tail, l.tailOff, l.tailCap = l.nextLSN, headerSize, l.nextCap
		l.tailBegan, l.halfSeen = l.opts.now(), false
	}
	var syncedTo uint64 // nothing is known synced in a segment not yet created
	if l.syncedAt.first == l.tail {
		syncedTo = uint64(l.syncedAt.off)
	}
	lsn := l.nextLSN
	l.nextLSN++
	if n := len(l.pending); n == 0 || l.pending[n-1].first != l.tail {
		l.pending = append(l.pending, chunk{first: l.tail, size: l.tailCap, off: l.tailOff})
	}
	c := &l.pending[len(l.pending)-1]
	c.data = appendRecord(c.data, lsn, syncedTo, payload)
	l.stats.appends.Add(1)
	l.stats.appendBytes.Add(uint64(size))
	c.lastLSN = lsn
	l.tailOff += size
	if !l.halfSeen && l.tailOff >= l.tailCap/2 {
		l.halfSeen = true
		l.nextCap = l.opts.sizeAfter(l.tailCap, l.opts.now().Sub(l.tailBegan))
	}
	if start && !l.flushing && !l.inflight {
		l.flushing = true
		l.flush(false, false)
		return lsn, nil
	}
	// A flush under way takes the record before it ends, and so does the
	// one that follows a sync under way.
	poll := l.inflight && l.inflightBg
	if !l.inflight {
		l.wake()
	}
	l.mu.Unlock()
	if poll {
		l.syncer.poll() // a finished sync goes on with the records pending
	}
	return lsn, nil
}

func (l *Log) usable() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.opts.ReadOnly:
		return ErrReadOnly
	}
	return l.err
}

// Wait blocks until the record lsn is durable as the sync mode defines:
// fsynced under SyncAlways, written to the OS otherwise.
func (l *Log) Wait(lsn uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		reached := l.written
		if l.opts.Sync == SyncAlways {
			reached = l.synced
		}
		switch {
		case reached >= lsn:
			return nil
		case l.err != nil:
			return l.err
		case l.closed:
			return ErrClosed
		}
		if l.inflight && l.inflightBg {
			seen := l.completed
			l.mu.Unlock()
			l.syncer.poll()
			l.mu.Lock()
			if l.completed != seen {
				continue // a sync ended meanwhile, maybe the one lsn waits for
			}
		}
		l.cond.Wait()
	}
}

func (l *Log) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// writer is the goroutine that flushes for Append, for the SyncInterval
// ticker and for Close, syncing in the system call.
func (l *Log) writer() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case _, ok := <-l.kick:
			if !ok {
				l.writerFlush(true)
				return
			}
			l.writerFlush(false)
		case <-tick:
			l.writerFlush(true)
		}
	}
}

// writerFlush flushes on the writer. Records it finds taken by a flush or
// sync under way are left to them, which go on with them; a sync the mode
// does not ask for by itself (the ticker's, Close's) waits for them to
// end.
func (l *Log) writerFlush(sync bool) {
	l.mu.Lock()
	for sync && (l.flushing || l.inflight) {
		l.cond.Wait()
	}
	if l.flushing {
		l.mu.Unlock()
		return
	}
	l.flushing = true
	l.flush(sync, true)
}

// flush is the one way records reach the disk. The caller holds mu and
// has set l.flushing, so it alone writes to l.file; flush clears it and
// unlocks mu. It writes the pending records and syncs them if the mode
// asks for it (every write under SyncAlways) or sync does: here if wait,
// else in the syncer, whose completion goes on with the records appended
// meanwhile. It returns once nothing is pending, or a sync runs in the
// syncer.
func (l *Log) flush(sync, wait bool) {
	sync = sync || l.opts.Sync == SyncAlways
	for l.err == nil && !l.inflight {
		chunks := l.pending
		l.pending = nil
		if len(chunks) == 0 && (!sync || l.written == l.synced) {
			break
		}
		l.mu.Unlock()
		err := l.write(chunks)
		l.mu.Lock()
		if err != nil {
			l.fail(err)
			break
		}
		if !sync || l.written == l.synced {
			continue
		}
		if wait {
			l.syncHere()
			continue
		}
		tag := l.beginSync(true)
		l.mu.Unlock()
		if err := l.syncer.start(l.file, tag); err != nil {
			l.mu.Lock()
			l.settle(completion{tag, err}) // none started: a failed one
			break
		}
		l.mu.Lock()
	}
	l.flushing = false
	l.cond.Broadcast()
	l.mu.Unlock()
}

// beginSync records that a sync of everything written starts, in the
// syncer if background, and returns its tag. The caller holds mu and the
// right to write, and no sync runs.
func (l *Log) beginSync(background bool) uint64 {
	l.inflight, l.inflightBg = true, background
	l.inflightTag, l.inflightAt = l.written, l.writtenAt
	l.inflightStart = time.Now()
	return l.written
}

// syncHere syncs what is written on this goroutine and settles it. The
// caller holds mu and the right to write, and no sync runs; mu is
// released during the sync. A failed fsync is never retried: the kernel
// may have dropped the dirty pages, so a later success would prove
// nothing (PostgreSQL's fsyncgate).
// That holds for EINTR too, which a network or FUSE filesystem may
// return: Linux's file_write_and_wait_range advances the file's
// writeback-error cursor even when it returns an earlier error, so an
// interrupted sync may have consumed the report of a failed writeback,
// and a retry would succeed over it.
func (l *Log) syncHere() {
	tag := l.beginSync(false)
	l.mu.Unlock()
	err := l.file.SyncData()
	l.mu.Lock()
	l.settle(completion{tag, err})
}

// complete settles a sync the syncer ran, and flushes what was appended
// while it ran, unless a flush under way does.
func (l *Log) complete(c completion) {
	l.mu.Lock()
	l.settle(c)
	if l.err != nil || l.flushing || len(l.pending) == 0 {
		l.mu.Unlock()
		return
	}
	l.flushing = true
	l.flush(false, false)
}

// settle publishes the end of the sync under way: the records up to its
// tag are durable. A failed sync makes the log fail-stop, and so does a
// completion that is not the sync's (errStraySync): nothing is published
// then. The caller holds mu.
func (l *Log) settle(c completion) {
	switch {
	case c.err != nil:
		l.fail(dataFailure{c.err})
	case !l.inflight:
		l.fail(dataFailure{fmt.Errorf("%w: completion for LSN %d, with none under way", errStraySync, c.tag)})
	case c.tag != l.inflightTag:
		l.fail(dataFailure{fmt.Errorf("%w: completion for LSN %d, the sync under way is for LSN %d", errStraySync, c.tag, l.inflightTag)})
	case l.err == nil:
		l.stats.syncRecords.Observe(int64(c.tag - l.synced))
		l.synced, l.syncedAt = c.tag, l.inflightAt
	}
	if l.inflight {
		l.stats.syncs.Add(1)
		l.stats.syncSeconds.Observe(int64(time.Since(l.inflightStart)))
	}
	l.inflight = false
	l.completed++
	l.cond.Broadcast()
}

// fail makes the log fail-stop with the first I/O failure. The caller
// holds mu.
func (l *Log) fail(err error) {
	if l.err == nil {
		l.err = fmt.Errorf("wal: %s: write failed, the log is fail-stop until reopened: %w", l.dir, err)
		l.opts.Logger.Error("wal: fail-stop", "dir", l.dir, "err", err)
		if errors.As(err, new(dataFailure)) {
			l.markFailed(err)
		}
	}
}

// write writes chunks in order, rotating segments as they say.
func (l *Log) write(chunks []chunk) error {
	for _, c := range chunks {
		if c.first != l.fileFirst {
			if err := l.rotate(c.first, c.size); err != nil {
				return err
			}
		}
		end := c.off + int64(len(c.data))
		if !l.spareAsked && end >= l.fileCap/2 {
			l.spareAsked = true
			l.startSpare()
		}
		if err := l.zeroTo(end + zeroAhead/2); err != nil {
			return err
		}
		if n, err := l.file.WriteAt(c.data, c.off); err != nil || n < len(c.data) {
			return dataFailure{cmp.Or(err, io.ErrShortWrite)}
		}
		l.mu.Lock()
		l.written = c.lastLSN
		l.writtenAt = position{c.first, end}
		if l.opts.Sync != SyncAlways {
			l.cond.Broadcast()
		}
		l.mu.Unlock()
	}
	return nil
}

// zeroTo makes sure the file holds written bytes up to off, extending it
// with zeros zeroAhead at a time, up to the size the segment was
// preallocated to. The fsync that
// follows pays for the extension once per zeroAhead bytes of records.
func (l *Log) zeroTo(off int64) error {
	if off <= l.zeroed || l.zeroed >= l.fileCap {
		return nil
	}
	end := min(max(off, l.zeroed+zeroAhead), l.fileCap)
	if err := writeZeros(l.file, l.zeroed, end); err != nil {
		return err
	}
	l.zeroed = end
	return nil
}

// zeroChunk is the buffer zeros are written from.
var zeroChunk = sync.OnceValue(func() []byte { return make([]byte, 1<<20) })

// writeZeros writes zeros to f over [from, to): ahead of records, over a
// torn tail, over a cut log, and into a spare segment.
func writeZeros(f vfs.File, from, to int64) error {
	z := zeroChunk()
	for off := from; off < to; {
		n := min(int64(len(z)), to-off)
		if _, err := f.WriteAt(z[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// rotate syncs and closes the current segment and creates the next one,
// size bytes long, so only the newest segment can ever end in a torn
// write. It runs in flush, where no sync runs.
func (l *Log) rotate(first uint64, size int64) error {
	l.mu.Lock()
	if l.written != l.synced {
		l.syncHere()
	}
	err := l.err
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.file.Close(); err != nil {
		return err
	}
	l.file = nil
	return l.createSegment(first, size)
}

// Err returns the I/O failure that made the log fail-stop, if any.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// LastLSN returns the LSN of the newest appended record.
func (l *Log) LastLSN() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextLSN - 1
}

// Segments returns the number of segment files.
func (l *Log) Segments() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.segments)
}

// Bytes returns the size of the segment files and of the spare.
func (l *Log) Bytes() (int64, error) {
	l.mu.Lock()
	firsts := slices.Clone(l.segments)
	l.mu.Unlock()
	var n int64
	for _, first := range firsts {
		st, err := l.opts.FS.Stat(l.opts.FS.PathJoin(l.dir, segmentName(first)))
		if err != nil {
			return 0, err
		}
		n += st.Size()
	}
	if st, err := l.opts.FS.Stat(l.opts.FS.PathJoin(l.dir, spareName)); err == nil {
		n += st.Size()
	}
	return n, nil
}

// CopyTo copies the segment files into dir, which it creates, fsyncing
// each, and writes the copy's STATE. Records being written meanwhile may be cut short in the copy, as
// by a crash: its Open truncates them.
func (l *Log) CopyTo(dir string) error {
	fs := l.opts.FS
	l.mu.Lock()
	firsts := slices.Clone(l.segments)
	st := l.state
	st.cuts = slices.Clone(st.cuts)
	l.mu.Unlock()
	if err := fsutil.MkdirAll(fs, dir); err != nil {
		return err
	}
	for _, first := range firsts {
		name := segmentName(first)
		if err := fsutil.CopyFile(fs, fs.PathJoin(l.dir, name), fs.PathJoin(dir, name)); err != nil {
			return err
		}
	}
	if err := fsutil.SyncDir(fs, dir); err != nil {
		return err
	}
	st.newest = 0
	if n := len(firsts); n > 0 {
		st.newest = firsts[n-1]
	}
	return writeState(fs, dir, st)
}

// Remove deletes the segments whose records all have LSNs at or below
// upTo, oldest first. The newest segment is always kept; if every record
// is at or below upTo and the newest is larger than the smallest size,
// a segment of that size is started first, so that the larger one goes.
func (l *Log) Remove(upTo uint64) error {
	if err := l.shrink(upTo); err != nil {
		return err
	}
	l.mu.Lock()
	var drop []uint64
	for len(l.segments) > 1 && l.segments[1] <= upTo+1 {
		drop = append(drop, l.segments[0])
		l.segments = l.segments[1:]
	}
	l.mu.Unlock()
	for _, first := range drop {
		if err := l.opts.FS.Remove(l.opts.FS.PathJoin(l.dir, segmentName(first))); err != nil {
			return err
		}
	}
	return nil
}

// shrink starts a segment of the smallest size if every record is at or
// below upTo and the newest segment is larger: an idle log then keeps a
// small segment, and no spare of a larger one. It rotates as flush does,
// holding the right to write, and then writes what was appended
// meanwhile.
func (l *Log) shrink(upTo uint64) error {
	size := l.opts.minSize()
	l.mu.Lock()
	for l.flushing || l.inflight || l.spareBusy {
		l.cond.Wait()
	}
	if l.closed || l.opts.ReadOnly || l.err != nil || len(l.pending) > 0 || l.nextLSN-1 > upTo || l.tailCap <= size {
		l.mu.Unlock()
		return nil
	}
	first := l.nextLSN
	l.tail, l.tailOff, l.tailCap, l.nextCap = first, headerSize, size, size
	l.tailBegan, l.halfSeen = l.opts.now(), false
	l.flushing = true
	l.mu.Unlock()
	err := l.rotate(first, size)
	l.mu.Lock()
	if err != nil {
		l.fail(err)
		err = l.err
	}
	l.flush(false, true)
	return err
}

// Close writes and fsyncs every appended record, in every sync mode, and
// closes the log. It returns the log's sticky error, if any. Calling it
// twice is fine.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for l.flushing || l.inflight {
		l.cond.Wait()
	}
	l.mu.Unlock()
	if !l.opts.ReadOnly {
		close(l.kick) // the writer flushes and syncs what is pending, and exits
	}
	<-l.done
	l.stopSpare.Store(true)
	l.spareWG.Wait()
	if l.syncer != nil {
		if err := l.syncer.close(); err != nil {
			l.mu.Lock()
			l.fail(err)
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	err := l.err
	l.cond.Broadcast()
	l.mu.Unlock()
	if l.file != nil {
		err = errors.Join(err, l.file.Close())
	}
	return err
}
