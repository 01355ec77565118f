package dedup

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/ttl"
	"github.com/seed42300104/dedup/wal"
)

// SyncMode says when a write is made durable, and so what a crash can lose.
// It is the WAL's own type, so that the store hands it down unchanged.
type SyncMode = wal.SyncMode

const (
	// SyncAlways fsyncs the WAL before any write call returns. Concurrent
	// callers share fsyncs (group commit). Nothing acknowledged is lost on
	// kill -9 or power loss. This is the default.
	SyncAlways = wal.SyncAlways
	// SyncInterval hands each write to the operating system before the call
	// returns and fsyncs the WAL every Options.SyncInterval. kill -9 loses
	// nothing; a power loss or kernel crash loses at most the marks
	// acknowledged in the last SyncInterval (plus the time one fsync takes).
	SyncInterval = wal.SyncInterval
	// SyncNone hands each write to the operating system before the call
	// returns and never fsyncs the WAL, except at segment rotation and
	// Close. kill -9 loses nothing; a power loss loses whatever the kernel
	// had not written back (on Linux up to dirty_expire_centisecs, 30 s by
	// default).
	SyncNone = wal.SyncNone
)

// The largest ExpectedMarks and MemtableMarks: each sizes memory that is
// allocated whole, a filter or a hash table, so a mistyped value would
// exhaust memory at the first mark rather than fail at Open.
const (
	maxExpectedMarks = 1 << 30
	maxMemtableMarks = 1 << 28
)

// DefaultMaxTTL is Options.MaxTTL when it is zero.
const DefaultMaxTTL = 7 * 24 * time.Hour

// FullPolicy says what a write of new marks does when the store is at a
// capacity bound, Options.MaxMarks or Options.MaxDiskBytes.
type FullPolicy int

const (
	// FailClosed refuses the write with ErrFull and marks nothing of it;
	// writes resume as generations expire and are dropped. Nothing is
	// forgotten before its time. This is the default.
	FailClosed FullPolicy = iota
	// DropOldest drops the generation that ends first, among those that
	// take no new marks, so that its marks are new again early; the
	// effective dedup window shrinks. If no generation can be dropped the
	// write fails with ErrFull.
	DropOldest
)

// Options configures a Store. A nil *Options, or a zero field, means the
// documented default. Open never writes to the caller's Options.
type Options struct {
	// FS is the filesystem every file of the store goes through: the WAL,
	// the filter snapshots and Pebble. Zero means the operating system's
	// (vfs.Default). Tests pass vfs.NewCrashableMem() or an errorfs.
	FS vfs.FS

	// Clock decides expiry. Zero means the wall clock, with CLOCK_BOOTTIME
	// and the boot's name on Linux (ttl.Real) to tell its steps from time
	// passing, within a process and across restarts in one boot.
	Clock ttl.Clock
	// ClockJumpGrace is how long a forward step of the wall clock must
	// hold before generations are dropped by it. A mark reads as expired
	// as soon as the wall clock passes its deadline, but a dropped
	// generation is gone for good: within the grace, setting the clock
	// back makes the marks of a step live again. Reopened in the boot its
	// CLOCK file was written in, a store knows how long it was closed and
	// judges only the wall clock's lead beyond that; reopened after a
	// reboot, or where Clock names no boot, it cannot tell the time it was
	// closed from a step, so it takes the wall clock's lead over the last
	// confirmed time as one. The grace runs on across restarts within one
	// boot. Zero means DefaultClockJumpGrace (1h).
	ClockJumpGrace time.Duration
	// TrustClock takes the wall clock at Open as right, however far it is
	// past the last confirmed time: the generations that ended by it are
	// dropped at the first checkpoint, without waiting for
	// ClockJumpGrace. It is for one-off maintenance of a store closed
	// across a reboot, by someone who knows the clock is right (dedupctl
	// compact --trust-clock); steps while the store runs are judged as
	// ever. False means the wall clock's lead at Open waits as
	// ClockJumpGrace says.
	TrustClock bool

	// DefaultTTL is the TTL of a mark written with ttl 0. Zero means 24h.
	DefaultTTL time.Duration
	// MaxTTL is the largest TTL accepted; a larger one is ErrInvalidTTL.
	// Zero means 7 days. Deadlines are Unix nanoseconds in an int64, so
	// Open refuses one that would take a deadline past the year 2262, and
	// a write whose deadline would pass it fails with ErrInvalidTTL.
	MaxTTL time.Duration
	// CacheSize is the memory of Pebble's block cache, in bytes: duplicates
	// of marks already checkpointed are read through it, so a store whose
	// index outgrows it answers them from the file system. Zero means
	// 64 MiB. Under cgo the cache is C memory, and glibc's malloc gives
	// threads arenas of their own, where room an evicted block frees
	// serves only that arena's threads: MALLOC_ARENA_MAX keeps the cache
	// near its size (README, Memory).
	CacheSize int64
	// MaxValueSize bounds what an idempotency record stores, its
	// fingerprint and result together, in bytes; more is ErrValueTooLarge.
	// Zero means 1 MiB.
	MaxValueSize int
	// MaxIDSize is the longest ID accepted, in bytes; a longer one is
	// ErrIDTooLong. Zero means 4096.
	MaxIDSize int

	// Sync is the durability mode. Zero means SyncAlways.
	Sync SyncMode
	// SyncInterval is the fsync period in SyncInterval mode. Zero means
	// 10ms.
	SyncInterval time.Duration

	// ExpectedMarks sizes the Bloom filter of each generation: the number of
	// marks one generation is expected to hold. A generation that outgrows
	// it gets a second, larger filter rather than a worse false-positive
	// rate, and the next checkpoint merges the two into one sized for twice
	// the generation's marks. Zero means 1<<20. It may not pass 1<<30,
	// whose filter alone takes over a gigabyte at the default rate.
	ExpectedMarks int
	// FalsePositiveRate is the Bloom filters' target rate: the share of new
	// IDs, and of Seen's absent ones, that cost a Pebble read. Zero means
	// 0.001: a Pebble read of a store larger than its block cache costs far
	// more than a filter test, so a tenth of the reads is worth the half
	// more filter memory that 0.001 takes over 0.01. It must be at least 1e-6
	// and below 1: below 1e-6 a filter's memory grows far faster than the
	// reads it saves shrink.
	FalsePositiveRate float64

	// MemtableMarks is how many marks are held in memory before they are
	// flushed to Pebble and a checkpoint lets old WAL segments go. It bounds
	// both memory and replay time. Zero means 1<<20. It may not pass
	// 1<<28, whose hash table alone would take gigabytes.
	MemtableMarks int
	// SegmentSize is the largest size WAL segments are preallocated to.
	// A new store's first segment takes 4 MiB (or SegmentSize, if
	// smaller); while segments fill in under a second each, the next is
	// twice the size, up to SegmentSize, and while they take over 16
	// seconds, half. Once a checkpoint covers every record, a larger
	// segment is replaced by a 4 MiB one, so an idle store keeps little
	// WAL. The spare segment the WAL fills with zeros ahead of its next
	// rotation has the next segment's size. Zero means 64 MiB.
	SegmentSize int64
	// ExpiryInterval is how often the store looks for generations whose
	// marks have all expired, and drops them: one excised key range and one
	// discarded filter each, with no per-key work. A mark with TTL T leaves
	// the index by 1.25 × T after it was written plus this interval, while
	// the wall clock is not stepped forward (see ClockJumpGrace). Zero
	// means 10s.
	ExpiryInterval time.Duration

	// MaxMarks bounds the marks the store holds, counting expired ones
	// until their generation is dropped. Zero means no bound. What a write
	// that would go past it does is WhenFull's choice.
	MaxMarks int
	// MaxDiskBytes bounds the bytes the store uses on disk, Pebble's and
	// the WAL's, as measured at Open and after each checkpoint: writes of
	// new marks meet WhenFull once the last measure reached it. It is a
	// soft bound, passed by at most what is written between two
	// checkpoints (MemtableMarks marks, the WAL's 4 MiB of zeros ahead of
	// its records, and its next segment, prepared ahead of a rotation). A
	// dropped generation's space comes back at the checkpoint that drops
	// it. Zero means no bound.
	MaxDiskBytes int64
	// WhenFull is the policy at MaxMarks and MaxDiskBytes. Zero means
	// FailClosed.
	WhenFull FullPolicy
	// SlidingTTL makes a duplicate seen within its TTL extend it: the
	// mark's deadline moves to now + ttl when that is later. Each such
	// duplicate costs a WAL record, as a new mark does. Off by default.
	SlidingTTL bool

	// FileMode is the permissions of the files the store creates, given
	// exactly, whatever the process umask. Zero means 0600: the WAL holds
	// stored responses. It must let the owner read and write.
	FileMode os.FileMode
	// DirMode is the permissions of the directories the store creates,
	// given exactly, whatever the process umask. Zero means 0700. It must
	// let the owner read, write and search.
	DirMode os.FileMode

	// ReadOnly opens the store without writing anything: no WAL replay is
	// persisted and every write call fails with ErrReadOnly. It takes the
	// LOCK file shared, so read-only Stores run side by side, in one
	// process or several, and refuse a store that a writable Store holds.
	// It opens a store in a directory it may not write, such as a backup
	// copy; if that directory has no LOCK file it takes no lock.
	ReadOnly bool
	// MustExist makes Open fail with ErrNotStore, rather than create a
	// store, where dir holds none. Tools that only change existing marks
	// set it, so that a mistyped path is an error and not a new, empty
	// store. ReadOnly implies it.
	MustExist bool

	// Logger receives the store's operational events as structured
	// records, never one per ID: Open's recovery (Info; a truncated torn
	// tail, Warn), each checkpoint (Debug), each generation dropped (Info,
	// or Warn when dropped early for room), a store going full and a step
	// of the wall clock (Warn), what Repair found (Info) or cut (Warn),
	// and the failure that makes the store fail-stop (Error). Nil means
	// slog.Default(), which prints Info and above through the standard
	// logger unless the program set another default;
	// slog.New(slog.DiscardHandler) silences the store.
	Logger *slog.Logger
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Clock == nil {
		c.Clock = ttl.Real{}
	}
	if c.ClockJumpGrace == 0 {
		c.ClockJumpGrace = DefaultClockJumpGrace
	}
	if c.DefaultTTL == 0 {
		c.DefaultTTL = 24 * time.Hour
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.MaxIDSize == 0 {
		c.MaxIDSize = 4096
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = 1 << 20
	}
	if c.CacheSize == 0 {
		c.CacheSize = 64 << 20
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 10 * time.Millisecond
	}
	if c.ExpectedMarks == 0 {
		c.ExpectedMarks = 1 << 20
	}
	if c.FalsePositiveRate == 0 {
		c.FalsePositiveRate = 0.001
	}
	if c.MemtableMarks == 0 {
		c.MemtableMarks = 1 << 20
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = 64 << 20
	}
	if c.ExpiryInterval == 0 {
		c.ExpiryInterval = 10 * time.Second
	}
	if c.FileMode == 0 {
		c.FileMode = 0o600
	}
	if c.DirMode == 0 {
		c.DirMode = 0o700
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports every problem with o at once.
func (o *Options) validate() error {
	var errs []error
	if o.DefaultTTL < 0 || o.DefaultTTL > o.MaxTTL {
		errs = append(errs, fmt.Errorf("DefaultTTL %v must be in (0, MaxTTL=%v]", o.DefaultTTL, o.MaxTTL))
	}
	if o.MaxTTL < 0 {
		errs = append(errs, fmt.Errorf("MaxTTL %v is negative", o.MaxTTL))
	} else if _, _, err := expiry(o.Clock.Now(), o.MaxTTL); err != nil {
		errs = append(errs, fmt.Errorf("MaxTTL %v: %w", o.MaxTTL, err))
	}
	if o.MaxIDSize < 0 || o.MaxIDSize > 1<<20 {
		errs = append(errs, fmt.Errorf("MaxIDSize %d must be in (0, 1MiB]", o.MaxIDSize))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("CacheSize %d is negative", o.CacheSize))
	}
	if o.MaxValueSize < 0 || o.MaxValueSize > 64<<20 {
		errs = append(errs, fmt.Errorf("MaxValueSize %d must be in (0, 64MiB]", o.MaxValueSize))
	}
	if o.Sync < SyncAlways || o.Sync > SyncNone {
		errs = append(errs, fmt.Errorf("unknown %v", o.Sync))
	}
	if o.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("SyncInterval %v is negative", o.SyncInterval))
	}
	if o.ExpectedMarks < 0 || o.ExpectedMarks > maxExpectedMarks {
		errs = append(errs, fmt.Errorf("ExpectedMarks %d must be in (0, %d]", o.ExpectedMarks, maxExpectedMarks))
	}
	if !(o.FalsePositiveRate >= index.MinFalsePositiveRate && o.FalsePositiveRate < 1) {
		errs = append(errs, fmt.Errorf("FalsePositiveRate %v must be in [%v, 1)", o.FalsePositiveRate, index.MinFalsePositiveRate))
	}
	if o.WhenFull < FailClosed || o.WhenFull > DropOldest {
		errs = append(errs, fmt.Errorf("unknown FullPolicy %d", o.WhenFull))
	}
	if o.MaxDiskBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxDiskBytes %d is negative", o.MaxDiskBytes))
	}
	if o.MaxMarks < 0 {
		errs = append(errs, fmt.Errorf("MaxMarks %d is negative", o.MaxMarks))
	}
	if o.MemtableMarks < 0 || o.MemtableMarks > maxMemtableMarks {
		errs = append(errs, fmt.Errorf("MemtableMarks %d must be in (0, %d]", o.MemtableMarks, maxMemtableMarks))
	}
	if o.ClockJumpGrace < 0 {
		errs = append(errs, fmt.Errorf("ClockJumpGrace %v is negative", o.ClockJumpGrace))
	}
	if o.ExpiryInterval < 0 {
		errs = append(errs, fmt.Errorf("ExpiryInterval %v is negative", o.ExpiryInterval))
	}
	if o.FileMode&^os.ModePerm != 0 || o.FileMode&0o600 != 0o600 {
		errs = append(errs, fmt.Errorf("FileMode %v must be permission bits that let the owner read and write", o.FileMode))
	}
	if o.DirMode&^os.ModePerm != 0 || o.DirMode&0o700 != 0o700 {
		errs = append(errs, fmt.Errorf("DirMode %v must be permission bits that let the owner read, write and search", o.DirMode))
	}
	if o.SegmentSize < 1<<16 {
		errs = append(errs, fmt.Errorf("SegmentSize %d is below 64KiB", o.SegmentSize))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return nil
}
