package dedup

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/ttl"
)

// TestDropTimeFollowsTheWallClockOnlyInStep drives the expiry clock of a
// running store through steps of the wall clock, looking at it after each
// move: it follows the wall clock while that keeps pace with time passing,
// follows a step back at once, and a step forward only once it has held
// for the grace.
func TestDropTimeFollowsTheWallClockOnlyInStep(t *testing.T) {
	start := testutil.Epoch
	const grace = time.Hour
	const year = 365 * 24 * time.Hour
	// A move lets time pass, then sets the wall clock off the true time
	// (start plus the time passed) by off, and looks.
	type move struct {
		advance, off time.Duration
		want         time.Duration // the drop time, after start
	}
	for _, tc := range []struct {
		name  string
		moves []move
	}{
		{"in step", []move{{time.Minute, 0, time.Minute}, {year, 0, year + time.Minute}}},
		{"a step within the tolerance", []move{{0, jumpTolerance, jumpTolerance}}},
		{"a step forward", []move{{0, year, 0}, {grace / 2, year, grace / 2}}},
		{"a step forward undone", []move{{0, year, 0}, {time.Minute, 0, time.Minute}, {grace, 0, grace + time.Minute}}},
		{"a step forward held for the grace", []move{{0, year, 0}, {grace - 1, year, grace - 1}, {1, year, year + grace}}},
		{"a step forward seen late", []move{{grace, year, grace}, {grace - 1, year, 2*grace - 1}, {1, year, year + 2*grace}}},
		{"a step forward, then further", []move{{0, time.Hour, 0}, {grace - 1, year, grace - 1}, {1, year, grace}, {grace, year, year + 2*grace}}},
		{"a step forward, partly undone", []move{{0, year, 0}, {grace / 2, year / 2, grace / 2}, {grace / 2, year / 2, year/2 + grace}}},
		{"a step back", []move{{0, -time.Hour, -time.Hour}, {time.Minute, -time.Hour, -time.Hour + time.Minute}}},
		{"a step back, then forward again", []move{{0, -time.Hour, -time.Hour}, {0, 0, -time.Hour}, {grace, 0, grace}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(start)
			o := Options{Clock: clock, ClockJumpGrace: grace, Logger: testutil.NewLog(t).Logger()}
			c := newExpiryClock(&o, "store", clockRecord{}, false)
			for i, m := range tc.moves {
				clock.Advance(m.advance)
				clock.Set(start.Add(clock.Elapsed() + m.off))
				got, confirmed := c.now()
				assert.True(t, confirmed)
				assert.Equal(t, start.Add(m.want), got, "move %d: %+v", i, m)
			}
		})
	}
}

// TestDropTimeAtOpen checks where the expiry clock starts: at the wall
// clock for a store with nothing to drop; nowhere for one that holds marks
// but no confirmed time, until the grace has passed; for a CLOCK file of
// this boot, where the wall clock would be had it kept pace with Elapsed
// since, or had a lead it had already held for the grace; and for a file
// of another boot, or a clock that names none, at the persisted confirmed
// time if the wall clock is past it. TrustClock starts at the wall clock.
func TestDropTimeAtOpen(t *testing.T) {
	start := testutil.Epoch
	const grace = time.Hour
	const day = 24 * time.Hour
	const up = 2 * day // Elapsed at Open: the time since boot
	this, other := digestBoot("boot-2"), digestBoot("boot-1")
	for _, tc := range []struct {
		name       string
		boot       string // the clock's, at Open
		persisted  clockRecord
		holdsMarks bool
		trust      bool      // Options.TrustClock
		want       time.Time // the drop time at Open
		confirmed  bool
	}{
		{name: "a new store", boot: "boot-2", want: start, confirmed: true},
		{name: "no confirmed time", boot: "boot-2", holdsMarks: true, want: unknownTime},
		{name: "this boot, closed for a day", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-day), at: up - day, boot: this},
			want:      start, confirmed: true},
		{name: "this boot, the wall clock ahead of the time closed", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-day), at: up - day + time.Hour, boot: this},
			want:      start.Add(-time.Hour), confirmed: true},
		{name: "this boot, the wall clock behind the time closed", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-day), at: up - day - time.Hour, boot: this},
			want:      start, confirmed: true},
		{name: "this boot, a lead held for the grace", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-5*time.Hour - grace), at: up - grace, boot: this, aheadBy: 5 * time.Hour, since: up - grace},
			want:      start, confirmed: true},
		{name: "this boot, a lead held for less than the grace", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-5*time.Hour - grace/2), at: up - grace/2, boot: this, aheadBy: 5 * time.Hour, since: up - grace/2},
			want:      start.Add(-5 * time.Hour), confirmed: true},
		{name: "this boot, a lead grown further", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-5*time.Hour - grace), at: up - grace, boot: this, aheadBy: time.Hour, since: up - grace},
			want:      start.Add(-5 * time.Hour), confirmed: true},
		{name: "this boot, Elapsed behind the file", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-time.Hour), at: up + time.Hour, boot: this},
			want:      start.Add(-time.Hour), confirmed: true},
		{name: "another boot, in step", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-time.Millisecond), at: time.Hour, boot: other},
			want:      start, confirmed: true},
		{name: "another boot, behind the confirmed time", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(time.Hour), at: up, boot: other},
			want:      start, confirmed: true},
		{name: "another boot, past the confirmed time", boot: "boot-2", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-day), at: up - day, boot: other},
			want:      start.Add(-day), confirmed: true},
		{name: "no boot named, past the confirmed time", holdsMarks: true,
			persisted: clockRecord{confirmed: start.Add(-day), at: up - day},
			want:      start.Add(-day), confirmed: true},
		{name: "TrustClock, another boot", boot: "boot-2", holdsMarks: true, trust: true,
			persisted: clockRecord{confirmed: start.Add(-day), at: up - day, boot: other},
			want:      start, confirmed: true},
		{name: "TrustClock, no confirmed time", boot: "boot-2", holdsMarks: true, trust: true,
			want: start, confirmed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(start.Add(-up))
			clock.Advance(up)
			clock.SetBoot(tc.boot)
			o := Options{Clock: clock, ClockJumpGrace: grace, TrustClock: tc.trust, Logger: testutil.NewLog(t).Logger()}
			c := newExpiryClock(&o, "store", tc.persisted, tc.holdsMarks)
			got, confirmed := c.now()
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.confirmed, confirmed)

			clock.Advance(grace)
			got, confirmed = c.now()
			assert.Equal(t, start.Add(grace), got, "the wall clock is trusted once it has run for the grace")
			assert.True(t, confirmed)
		})
	}
}

// TestClockRecordRoundTrips checks that the CLOCK file gives back what was
// written, to the nanosecond.
func TestClockRecordRoundTrips(t *testing.T) {
	fs := vfs.NewMem()
	want := clockRecord{confirmed: testutil.Epoch.Add(123), at: 5 * time.Hour, boot: digestBoot("boot-1"),
		aheadBy: 3 * time.Minute, since: 4 * time.Hour}
	require.NoError(t, writeClock(fs, "", want))
	got, err := readClock(fs, "")
	require.NoError(t, err)
	assert.True(t, want.equal(got), "got %+v; want %+v", got, want)
	assert.Equal(t, bootDigest{}, digestBoot(""), "a clock that names no boot")
}

// TestDropTimeAfterOpenTrustsAStepOnlyAfterItsOwnGrace reopens a store a
// minute after its last checkpoint and steps the clock a year ahead just
// before that minute is trusted: the step still waits a whole grace.
func TestDropTimeAfterOpenTrustsAStepOnlyAfterItsOwnGrace(t *testing.T) {
	start := testutil.Epoch
	const grace = time.Hour
	clock := ttl.NewFake(start)
	var log testutil.Log
	o := Options{Clock: clock, ClockJumpGrace: grace, Logger: log.Logger()}
	c := newExpiryClock(&o, "store", clockRecord{confirmed: start.Add(-time.Minute)}, true)
	got, _ := c.now()
	assert.Equal(t, start.Add(-time.Minute), got, "the minute since the checkpoint waits for the grace")
	assert.Empty(t, log.Records(), "a restart's gap is not logged")

	clock.Advance(grace - time.Second)
	clock.Set(start.Add(grace - time.Second + 365*24*time.Hour))
	got, _ = c.now()
	assert.Equal(t, start.Add(grace-time.Second-time.Minute), got)
	assert.Len(t, log.Records(), 1, "the step is logged")
	clock.Advance(time.Second)
	got, _ = c.now()
	assert.Equal(t, start.Add(grace-time.Minute), got, "the step has not held for the grace")
	clock.Advance(grace)
	got, _ = c.now()
	assert.Equal(t, clock.Now(), got)
}
