// Package ttl holds the time arithmetic of the store: absolute deadlines,
// the generation a deadline belongs to, and the clock everything reads.
//
// A deadline is a Unix time in nanoseconds. A mark is live while
// now < deadline, so expiry is exact on read and independent of any sweep.
//
// Marks are grouped into generations by deadline so that expired marks can
// be dropped a whole key range at a time. A generation is a time bucket
// [Start, End) of one span class; the span of a mark's class is the largest
// power-of-two number of seconds no greater than a quarter of its TTL, so a
// generation ends at most TTL/4 after the last deadline it holds. That is
// the bound behind the promise that a mark leaves disk by 1.25 × TTL.
package ttl

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"time"
)

// Clock tells the time. The store reads Now for every expiry decision, so
// a test can drive TTL cycles with a Fake clock instead of sleeping, and
// Elapsed to tell time passing from the wall clock being stepped: a
// generation is dropped for good only by a wall time that has kept pace
// with Elapsed, or held long enough to be trusted. Boot lets a store
// reopened in the same boot measure, with Elapsed, how long it was closed.
type Clock interface {
	// Now returns the wall time.
	Now() time.Time
	// Elapsed returns the time passed since an origin fixed for the
	// boot that Boot names, or for the clock's life if Boot is empty, on
	// a clock that never goes back and that a step of the wall time does
	// not move.
	Elapsed() time.Duration
	// Boot names the boot whose origin Elapsed counts from: two readings
	// of Elapsed under the same non-empty Boot, in any two processes,
	// differ by the time that passed between them. Empty means that
	// Elapsed is comparable only within the clock's life.
	Boot() string
}

// Real is the wall clock. On Linux, Elapsed is CLOCK_BOOTTIME and Boot the
// kernel's boot_id, so that Elapsed counts the time the machine is
// suspended, which Go's monotonic clock (CLOCK_MONOTONIC) does not, and a
// store reopened in the same boot knows how long it was closed. Elsewhere
// Elapsed is Go's monotonic time since the process started and Boot is
// empty.
type Real struct{}

// origin is where Real's Elapsed counts from where there is no boot clock;
// it carries a monotonic reading.
var origin = time.Now()

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Fake is a Clock that moves only when told: Advance is time passing, Set
// is the wall clock being stepped, SetBoot a new boot. Its zero value
// starts at the Unix epoch with nothing elapsed and no boot named, as on a
// system that names none; it is safe for concurrent use. Like deadlines,
// its wall time is a Unix time in nanoseconds, so it spans the years 1678
// to 2262.
type Fake struct {
	mu      sync.Mutex    // protects wall, elapsed and boot
	wall    time.Duration // since the Unix epoch
	elapsed time.Duration
	boot    string
}

// NewFake returns a Fake clock set to t, with nothing elapsed and no boot
// named.
func NewFake(t time.Time) *Fake { return &Fake{wall: time.Duration(t.UnixNano())} }

// Now returns the fake wall time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Unix(0, int64(f.wall))
}

// Elapsed returns the fake time passed: the sum of every Advance.
func (f *Fake) Elapsed() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.elapsed
}

// Boot returns the name SetBoot gave the fake boot, empty if none.
func (f *Fake) Boot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.boot
}

// Advance lets d pass: the wall time and Elapsed both move forward by d.
// It panics if d is negative, since time does not pass backwards; Set
// steps the wall time back.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		panic("ttl: Fake.Advance by a negative duration")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall += d
	f.elapsed += d
}

// Set steps the wall time to t, as setting a machine's clock does:
// Elapsed does not move.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall = time.Duration(t.UnixNano())
}

// SetBoot names the boot Elapsed counts from: a new name is a reboot, to
// which no earlier reading of Elapsed compares; empty names none. Neither
// the wall time nor Elapsed moves.
func (f *Fake) SetBoot(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.boot = id
}

// Deadline is the Unix time, in nanoseconds, at which a mark expires.
type Deadline int64

// DeadlineOf returns the deadline of a mark written at now with ttl.
func DeadlineOf(now time.Time, ttl time.Duration) Deadline {
	return Deadline(now.UnixNano() + int64(ttl))
}

// Live reports whether a mark with deadline d is live at now.
func (d Deadline) Live(now time.Time) bool { return now.UnixNano() < int64(d) }

// Time returns d as a time.Time.
func (d Deadline) Time() time.Time { return time.Unix(0, int64(d)) }

// Gen names a generation: its span class in the top byte and the index of
// its bucket, in units of its span, in the low 56 bits. Gens compare in the
// order of their class first, so the encoding is also the Pebble key prefix.
type Gen uint64

// GenSize is the size of an encoded Gen.
const GenSize = 8

// maxClass bounds the span class: 2^40 s is far beyond any MaxTTL.
const maxClass = 40

// GenOf returns the generation of a mark with the given ttl and deadline.
func GenOf(ttl time.Duration, d Deadline) Gen {
	c := spanClass(ttl)
	sec := int64(d) / int64(time.Second)
	if sec < 0 {
		sec = 0
	}
	return Gen(uint64(c)<<56 | uint64(sec)>>c&(1<<56-1))
}

// spanClass is log2 of the span in seconds: the largest power of two not
// above ttl/4, and at least one second.
func spanClass(ttl time.Duration) uint {
	q := uint64(ttl / 4 / time.Second)
	if q <= 1 {
		return 0
	}
	return min(uint(bits.Len64(q)-1), maxClass)
}

// Class returns the span class of g.
func (g Gen) Class() uint { return uint(g >> 56) }

// Span returns the length of g's time bucket.
func (g Gen) Span() time.Duration { return time.Duration(1<<g.Class()) * time.Second }

// End returns the end of g's bucket: every deadline in g is before it, so g
// holds no live mark from End on.
func (g Gen) End() time.Time {
	idx := uint64(g) & (1<<56 - 1)
	return time.Unix(int64((idx+1)<<g.Class()), 0)
}

// MinTTL is the shortest TTL whose marks go to generations of g's class.
func (g Gen) MinTTL() time.Duration {
	if g.Class() == 0 {
		return 0
	}
	return 4 * g.Span()
}

// Closed reports whether g can receive no new mark at now: every deadline
// of its class from now on falls after its end.
func (g Gen) Closed(now time.Time) bool { return !now.Add(g.MinTTL()).Before(g.End()) }

// Expired reports whether every mark of g has expired at now.
func (g Gen) Expired(now time.Time) bool { return !now.Before(g.End()) }

// Append appends the big-endian encoding of g to b.
func (g Gen) Append(b []byte) []byte { return binary.BigEndian.AppendUint64(b, uint64(g)) }

// DecodeGen decodes a Gen from the first GenSize bytes of b.
func DecodeGen(b []byte) Gen { return Gen(binary.BigEndian.Uint64(b)) }
