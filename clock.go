package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
// checkpoint dropped generations, which had kept pace with the monotonic
// clock or held for the grace. Open takes it as the last time known to be
// right, since the time the store was closed is unknown.
//
//	| magic "dedupclk" (8B) | version (4B) | confirmed time, Unix ns (8B) |
//	| CRC32C of the above (4B) |
//
// Little-endian. Part of the on-disk format.
const (
	clockFile    = "CLOCK"
	clockMagic   = "dedupclk"
	clockVersion = 1
	clockSize    = len(clockMagic) + 4 + 8 + 4
)

var clockCRC = crc32.MakeTable(crc32.Castagnoli)

// unknownTime is what generations are dropped by while no wall time is
// confirmed: the Unix epoch, before every generation's end, so none is.
var unknownTime = time.Unix(0, 0)

// expiryClock decides the time by which generations are dropped, for good:
// the wall clock as long as it keeps pace with the monotonic clock. A
// forward step of the wall clock is trusted only once it has held for the
// grace; until then generations are dropped by the confirmed wall time
// before the step plus the time elapsed since, so that a step undone
// within the grace drops nothing that is live again once it is undone.
// A step back is trusted at once: it only keeps generations longer. Reads
// do not use it: they follow the wall clock, so a mark reads as expired
// as soon as the wall clock passes its deadline.
type expiryClock struct {
	clock ttl.Clock
	grace time.Duration
	logf  func(format string, args ...any)

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
	opened string

	persisted time.Time // the time in the CLOCK file; zero if none. Under Store.checkpointMu
}

// newExpiryClock starts judging the clock at Open. persisted is the
// confirmed time the CLOCK file holds, zero if it holds none; holdsMarks
// says whether the store has any generation that a wrong clock could drop.
func newExpiryClock(o *Options, dir string, persisted time.Time, holdsMarks bool) *expiryClock {
	c := &expiryClock{clock: o.Clock, grace: o.ClockJumpGrace, logf: o.Logf, persisted: persisted}
	wall, elapsed := c.clock.Now(), c.clock.Elapsed()
	switch {
	case persisted.IsZero() && !holdsMarks:
		c.trust(wall, elapsed) // nothing to drop
	case persisted.IsZero():
		c.since = elapsed
		c.opened = fmt.Sprintf("dedup: %s has no %s file: no generation is dropped by expiry until the wall clock has run for %v (ClockJumpGrace) since Open",
			dir, clockFile, c.grace)
	case wall.Sub(persisted) > jumpTolerance:
		c.known, c.confirmed, c.at = true, persisted, elapsed
		c.ahead, c.aheadBy, c.since = true, wall.Sub(persisted), elapsed
		if c.quiet = wall.Sub(persisted) <= c.grace; c.quiet {
			break // the time a restart takes
		}
		c.opened = fmt.Sprintf("dedup: %s: at Open the wall clock was %v past the last confirmed time, %v: the generations that ended since are dropped once it has held for %v (ClockJumpGrace)",
			dir, wall.Sub(persisted), persisted.UTC(), c.grace)
	default:
		c.trust(wall, elapsed)
	}
	return c
}

// trust confirms wall, read at elapsed.
func (c *expiryClock) trust(wall time.Time, elapsed time.Duration) {
	c.known, c.confirmed, c.at, c.ahead, c.quiet = true, wall, elapsed, false, false
}

// now looks at the clock and returns the time by which generations may be
// dropped: the wall time, unless it runs ahead of the confirmed time plus
// the time elapsed since and has not held there for the grace. A further
// step forward starts the grace again. It is
// unknownTime, and confirmed false, while no wall time is confirmed. It
// logs each step it sees, and the end of each.
func (c *expiryClock) now() (t time.Time, confirmed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall, elapsed := c.clock.Now(), c.clock.Elapsed()
	if c.opened != "" {
		c.logf("%s", c.opened)
		c.opened = ""
	}
	if !c.known {
		if elapsed-c.since < c.grace {
			return unknownTime, false
		}
		c.logf("dedup: the wall clock has run for %v (ClockJumpGrace) since Open: expired generations are dropped by it", c.grace)
		c.trust(wall, elapsed)
		return wall, true
	}
	expected := c.confirmed.Add(elapsed - c.at)
	skew := wall.Sub(expected)
	switch {
	case skew > jumpTolerance && (!c.ahead || skew > c.aheadBy+jumpTolerance):
		c.ahead, c.aheadBy, c.since, c.quiet = true, skew, elapsed, false
		c.logf("dedup: the wall clock jumped: it runs %v ahead of the monotonic clock: marks read as expired by it, but their generations are kept until it has held for %v (ClockJumpGrace)",
			skew, c.grace)
		return expected, true
	case skew > jumpTolerance && elapsed-c.since < c.grace:
		c.aheadBy = min(c.aheadBy, skew)
		return expected, true
	case skew > jumpTolerance && !c.quiet:
		c.logf("dedup: the wall clock has held %v ahead for %v (ClockJumpGrace): expired generations are dropped by it", skew, c.grace)
	case skew < -jumpTolerance:
		c.logf("dedup: the wall clock stepped %v back: expired generations are dropped by it", -skew)
	case c.ahead && !c.quiet:
		c.logf("dedup: the wall clock is back in step with the confirmed time: no generation was dropped by the time it ran ahead")
	}
	c.trust(wall, elapsed)
	return wall, true
}

// persist makes t, by which the running checkpoint drops generations,
// the confirmed time in the CLOCK file before the checkpoint drops any, so
// that after a crash Open starts from it and the next checkpoint finishes
// a drop this one leaves half done. An unconfirmed t is not persisted.
// The caller holds the store's checkpointMu.
func (c *expiryClock) persist(fs vfs.FS, dir string, t time.Time, confirmed bool) error {
	if !confirmed || t.Equal(c.persisted) {
		return nil
	}
	if err := writeClock(fs, dir, t); err != nil {
		return err
	}
	c.persisted = t
	return nil
}

// readClock returns the confirmed time the store in dir persisted, zero if
// it has no CLOCK file.
func readClock(fs vfs.FS, dir string) (time.Time, error) {
	path := fs.PathJoin(dir, clockFile)
	p, err := fsutil.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	if len(p) != clockSize || string(p[:len(clockMagic)]) != clockMagic {
		return time.Time{}, fmt.Errorf("%w: %s: offset 0: bad magic or %d bytes, not %d", ErrCorrupt, path, len(p), clockSize)
	}
	body := p[:clockSize-4]
	if crc32.Checksum(body, clockCRC) != binary.LittleEndian.Uint32(p[clockSize-4:]) {
		return time.Time{}, fmt.Errorf("%w: %s: offset %d: CRC mismatch", ErrCorrupt, path, len(body))
	}
	if v := binary.LittleEndian.Uint32(body[len(clockMagic):]); v != clockVersion {
		return time.Time{}, fmt.Errorf("%w: %s: version %d, this build reads %d", ErrIncompatibleFormat, path, v, clockVersion)
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(body[len(clockMagic)+4:]))), nil
}

// writeClock replaces the CLOCK file of the store in dir with t, durably.
func writeClock(fs vfs.FS, dir string, t time.Time) error {
	b := []byte(clockMagic)
	b = binary.LittleEndian.AppendUint32(b, clockVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(t.UnixNano()))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, clockCRC))
	return fsutil.ReplaceFile(fs, fs.PathJoin(dir, clockFile), b)
}
