package dedup

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/ttl"
)

// DefaultClockJumpGrace is Options.ClockJumpGrace when it is zero.
const DefaultClockJumpGrace = time.Hour

// jumpTolerance is how far the wall clock may move apart from the
// monotonic clock between two looks at them and still count as keeping
// pace. NTP slews both alike, so they part only when the wall clock is
// stepped or the machine is suspended; the tolerance covers the instants
// between reading the two.
const jumpTolerance = time.Second

// clockFile records the confirmed time: the wall time by which the last
// checkpoint, or Close, dropped generations, which had kept pace with
// Clock.Elapsed or held for the grace. With it go the Elapsed it was read
// at and the boot of that Elapsed, so that Open in the same boot knows
// how long the store was closed, and any lead of the wall clock over the
// confirmed time that was not yet trusted, with the Elapsed since which it
// has held, so that the grace runs on across restarts in one boot.
//
//	| magic "dedupclk" (8B) | version (4B) | confirmed time, Unix ns (8B) |
//	| Elapsed at the confirmed time, ns (8B) |
//	| boot: SHA-256 of Clock.Boot, first 16B; zeros if it names none (16B) |
//	| unconfirmed lead of the wall clock, ns; 0 if none (8B) |
//	| Elapsed since which the lead has held, ns (8B) |
//	| CRC32C of the above (4B) |
//
// Little-endian. Part of the on-disk format.
const (
	clockFile    = "CLOCK"
	clockMagic   = "dedupclk"
	clockVersion = 1
	clockSize    = len(clockMagic) + 4 + 8 + 8 + len(bootDigest{}) + 8 + 8 + 4
)

var clockCRC = crc32.MakeTable(crc32.Castagnoli)

// bootDigest stands for a Clock.Boot in the CLOCK file: equal boots give
// equal digests, and a clock that names no boot gives zeros.
type bootDigest [16]byte

func digestBoot(boot string) bootDigest {
	var d bootDigest
	if boot != "" {
		sum := sha256.Sum256([]byte(boot))
		copy(d[:], sum[:])
	}
	return d
}

// clockRecord is what the CLOCK file holds.
type clockRecord struct {
	confirmed time.Time     // the confirmed time; zero if there is none
	at        time.Duration // Elapsed when confirmed was the time
	boot      bootDigest    // the boot of at and since
	aheadBy   time.Duration // the wall clock's lead not yet trusted, zero if none, ...
	since     time.Duration // ... held since this Elapsed
}

// sameBoot reports whether r was written in the boot named boot, at or
// before elapsed, so that elapsed - r.at is the time passed since.
func (r clockRecord) sameBoot(boot bootDigest, elapsed time.Duration) bool {
	return boot != (bootDigest{}) && r.boot == boot && r.at <= elapsed
}

func (r clockRecord) equal(o clockRecord) bool {
	return r.confirmed.Equal(o.confirmed) && r.at == o.at && r.boot == o.boot && r.aheadBy == o.aheadBy && r.since == o.since
}

// unknownTime is what generations are dropped by while no wall time is
// confirmed: the Unix epoch, before every generation's end, so none is.
var unknownTime = time.Unix(0, 0)

// expiryClock decides the time by which generations are dropped, for good:
// the wall clock as long as it keeps pace with Clock.Elapsed. A forward
// step of the wall clock is trusted only once it has held for the grace;
// until then generations are dropped by the confirmed wall time before the
// step plus the time elapsed since, so that a step undone within the grace
// drops nothing that is live again once it is undone. A step back is
// trusted at once: it only keeps generations longer. Reads do not use it:
// they follow the wall clock, so a mark reads as expired as soon as the
// wall clock passes its deadline.
type expiryClock struct {
	clock ttl.Clock
	grace time.Duration
	log   *slog.Logger

	mu        sync.Mutex    // protects known through opened
	known     bool          // some wall time is confirmed: false after Open found none
	confirmed time.Time     // the last wall time trusted, ...
	at        time.Duration // ... read at this Elapsed
	ahead     bool          // the wall clock runs ahead of confirmed, ...
	aheadBy   time.Duration // ... by at least this much ...
	since     time.Duration // ... at every look since this Elapsed, ...
	quiet     bool          // ... by no more than a restart's gap: not logged
	// opened is what Open found, logged at the first look, so that a store
	// that never drops a generation (read-only, or a command's brief
	// run) says nothing of it.
	opened clockEvent

	persisted clockRecord // what the CLOCK file holds. Under Store.checkpointMu
}

// newExpiryClock starts judging the clock at Open. persisted is what the
// CLOCK file holds, zero if there is none; holdsMarks says whether the
// store has any generation that a wrong clock could drop. Written in this
// boot, the file tells how long the store was closed, so the wall clock is
// judged as if the store had run all along. Written in another boot, it
// does not: the wall clock's lead over the confirmed time is taken as a
// step, unless o.TrustClock.
func newExpiryClock(o *Options, dir string, persisted clockRecord, holdsMarks bool) *expiryClock {
	c := &expiryClock{clock: o.Clock, grace: o.ClockJumpGrace, log: o.Logger, persisted: persisted}
	wall, elapsed := c.clock.Now(), c.clock.Elapsed()
	lead := wall.Sub(persisted.confirmed)
	switch {
	case persisted.confirmed.IsZero() && !holdsMarks:
		c.trust(wall, elapsed) // nothing to drop
	case o.TrustClock:
		c.trust(wall, elapsed)
		if persisted.confirmed.IsZero() || lead > jumpTolerance {
			c.opened = clockEvent{"clock: the wall clock at Open is trusted (TrustClock)", []any{"dir", dir, "wall", wall.UTC()}}
		}
	case persisted.confirmed.IsZero():
		c.since = elapsed
		c.opened = clockEvent{"clock: no CLOCK file, expiry drops wait for ClockJumpGrace", []any{"dir", dir, "grace", c.grace}}
	case persisted.sameBoot(digestBoot(c.clock.Boot()), elapsed):
		c.known, c.confirmed, c.at = true, persisted.confirmed, persisted.at
		c.ahead, c.aheadBy, c.since = persisted.aheadBy > 0, persisted.aheadBy, persisted.since
		if _, e := c.judge(wall, elapsed); e.msg != "" {
			c.opened = clockEvent{e.msg, append([]any{"dir", dir, "at_open", true}, e.attrs...)}
		}
	case lead > jumpTolerance:
		c.known, c.confirmed, c.at = true, persisted.confirmed, elapsed
		c.ahead, c.aheadBy, c.since = true, lead, elapsed
		if c.quiet = lead <= c.grace; c.quiet {
			break // the time a reboot takes
		}
		// How long the store was closed is unknown, its CLOCK file not
		// being from this boot.
		c.opened = clockEvent{"clock: wall clock ahead at Open in another boot, expiry drops wait for ClockJumpGrace",
			[]any{"dir", dir, "ahead", lead, "confirmed", persisted.confirmed.UTC(), "grace", c.grace}}
	default:
		c.trust(wall, elapsed)
	}
	return c
}

// trust confirms wall, read at elapsed.
func (c *expiryClock) trust(wall time.Time, elapsed time.Duration) {
	c.known, c.confirmed, c.at, c.ahead, c.aheadBy, c.quiet = true, wall, elapsed, false, 0, false
}

// now looks at the clock and returns the time by which generations may be
// dropped, as look does.
func (c *expiryClock) now() (t time.Time, confirmed bool) {
	r, confirmed := c.look()
	return r.confirmed, confirmed
}

// look looks at the clock and returns the time by which generations may
// be dropped, as the record to persist: the wall time, unless it runs
// ahead of the confirmed time plus the time elapsed since and has not held
// there for the grace. A further step forward starts the grace again. The
// time is unknownTime, and confirmed false, while no wall time is
// confirmed. It logs each step it sees, and the end of each.
func (c *expiryClock) look() (r clockRecord, confirmed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opened.msg != "" {
		c.log.Info(c.opened.msg, c.opened.attrs...)
		c.opened = clockEvent{}
	}
	return c.lookLocked()
}

// closing looks at the clock a last time, for Close, as look does, but
// leaves unsaid what Open found: the store drops nothing more.
func (c *expiryClock) closing() (r clockRecord, confirmed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opened = clockEvent{}
	return c.lookLocked()
}

// lookLocked is look without what Open found. The caller holds c.mu.
func (c *expiryClock) lookLocked() (r clockRecord, confirmed bool) {
	wall, elapsed := c.clock.Now(), c.clock.Elapsed()
	t, e := c.judge(wall, elapsed)
	if e.msg != "" {
		c.log.Warn(e.msg, e.attrs...)
	}
	r = clockRecord{confirmed: t, at: elapsed, boot: digestBoot(c.clock.Boot())}
	if c.ahead {
		r.aheadBy, r.since = c.aheadBy, c.since
	}
	return r, c.known
}

// clockEvent is what to log of a move of the clock: nothing if msg is
// empty.
type clockEvent struct {
	msg   string
	attrs []any
}

// judge moves the state on to the wall time wall, read at elapsed, and
// returns the time by which generations may be dropped, with what to log
// of the move, if anything. The caller holds c.mu.
func (c *expiryClock) judge(wall time.Time, elapsed time.Duration) (time.Time, clockEvent) {
	if !c.known {
		if elapsed-c.since < c.grace {
			return unknownTime, clockEvent{}
		}
		c.trust(wall, elapsed)
		return wall, clockEvent{"clock: ClockJumpGrace has passed since Open, expiry drops follow the wall clock", []any{"grace", c.grace}}
	}
	expected := c.confirmed.Add(elapsed - c.at)
	skew := wall.Sub(expected)
	var e clockEvent
	switch {
	case skew > jumpTolerance && (!c.ahead || skew > c.aheadBy+jumpTolerance):
		// Marks read as expired by it, but their generations are kept
		// until it has held for the grace.
		c.ahead, c.aheadBy, c.since, c.quiet = true, skew, elapsed, false
		return expected, clockEvent{"clock: the wall clock jumped ahead, expiry drops wait for ClockJumpGrace", []any{"ahead", skew, "grace", c.grace}}
	case skew > jumpTolerance && elapsed-c.since < c.grace:
		c.aheadBy = min(c.aheadBy, skew)
		return expected, clockEvent{}
	case skew > jumpTolerance && !c.quiet:
		e = clockEvent{"clock: the wall clock has held ahead for ClockJumpGrace, expiry drops follow it", []any{"ahead", skew, "grace", c.grace}}
	case skew < -jumpTolerance:
		e = clockEvent{"clock: the wall clock stepped back", []any{"back", -skew}}
	case c.ahead && !c.quiet:
		// No generation was dropped by the time it ran ahead.
		e = clockEvent{"clock: the wall clock is back in step", nil}
	}
	c.trust(wall, elapsed)
	return wall, e
}

// persist makes r, by which the running checkpoint drops generations, the
// CLOCK file's record before the checkpoint drops any, so that after a
// crash Open starts from it and the next checkpoint finishes a drop this
// one leaves half done. Close persists its last look, so that the next
// Open in the same boot starts from the latest. An unconfirmed r is not
// persisted. The caller holds the store's checkpointMu.
func (c *expiryClock) persist(fs vfs.FS, dir string, r clockRecord, confirmed bool) error {
	if !confirmed || r.equal(c.persisted) {
		return nil
	}
	if err := writeClock(fs, dir, r); err != nil {
		return err
	}
	c.persisted = r
	return nil
}

// readClock returns the record of the store in dir, zero if it has no
// CLOCK file.
func readClock(fs vfs.FS, dir string) (clockRecord, error) {
	path := fs.PathJoin(dir, clockFile)
	p, err := fsutil.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return clockRecord{}, nil
	}
	if err != nil {
		return clockRecord{}, err
	}
	if len(p) != clockSize || string(p[:len(clockMagic)]) != clockMagic {
		return clockRecord{}, fmt.Errorf("%w: %s: offset 0: bad magic or %d bytes, not %d", ErrCorrupt, path, len(p), clockSize)
	}
	body := p[:clockSize-4]
	if crc32.Checksum(body, clockCRC) != binary.LittleEndian.Uint32(p[clockSize-4:]) {
		return clockRecord{}, fmt.Errorf("%w: %s: offset %d: CRC mismatch", ErrCorrupt, path, len(body))
	}
	b := body[len(clockMagic):]
	if v := binary.LittleEndian.Uint32(b); v != clockVersion {
		return clockRecord{}, fmt.Errorf("%w: %s: version %d, this build reads %d", ErrIncompatibleFormat, path, v, clockVersion)
	}
	b = b[4:]
	next := func() int64 {
		v := int64(binary.LittleEndian.Uint64(b))
		b = b[8:]
		return v
	}
	var r clockRecord
	r.confirmed = time.Unix(0, next())
	r.at = time.Duration(next())
	b = b[copy(r.boot[:], b):]
	r.aheadBy = time.Duration(next())
	r.since = time.Duration(next())
	return r, nil
}

// writeClock replaces the CLOCK file of the store in dir with r, durably.
func writeClock(fs vfs.FS, dir string, r clockRecord) error {
	b := []byte(clockMagic)
	b = binary.LittleEndian.AppendUint32(b, clockVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.confirmed.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.at))
	b = append(b, r.boot[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.aheadBy))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.since))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, clockCRC))
	return fsutil.ReplaceFile(fs, fs.PathJoin(dir, clockFile), b)
}
