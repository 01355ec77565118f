package dedup

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

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
			o := Options{Clock: clock, ClockJumpGrace: grace, Logf: t.Logf}
			c := newExpiryClock(&o, "store", time.Time{}, false)
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
// clock for a store with nothing to drop, at the persisted confirmed time
// for one whose clock is past it, and nowhere for one that holds marks but
// no confirmed time, until the grace has passed.
func TestDropTimeAtOpen(t *testing.T) {
	start := testutil.Epoch
	const grace = time.Hour
	for _, tc := range []struct {
		name       string
		persisted  time.Time
		holdsMarks bool
		want       time.Time // the drop time at Open
		confirmed  bool
	}{
		{"a new store", time.Time{}, false, start, true},
		{"in step", start.Add(-time.Millisecond), true, start, true},
		{"behind the confirmed time", start.Add(time.Hour), true, start, true},
		{"past the confirmed time", start.Add(-time.Hour), true, start.Add(-time.Hour), true},
		{"no confirmed time", time.Time{}, true, unknownTime, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(start)
			o := Options{Clock: clock, ClockJumpGrace: grace, Logf: t.Logf}
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

// TestDropTimeAfterOpenTrustsAStepOnlyAfterItsOwnGrace reopens a store a
// minute after its last checkpoint and steps the clock a year ahead just
// before that minute is trusted: the step still waits a whole grace.
func TestDropTimeAfterOpenTrustsAStepOnlyAfterItsOwnGrace(t *testing.T) {
	start := testutil.Epoch
	const grace = time.Hour
	clock := ttl.NewFake(start)
	var log testutil.Log
	o := Options{Clock: clock, ClockJumpGrace: grace, Logf: log.Logf}
	c := newExpiryClock(&o, "store", start.Add(-time.Minute), true)
	got, _ := c.now()
	assert.Equal(t, start.Add(-time.Minute), got, "the minute since the checkpoint waits for the grace")
	assert.Empty(t, log.Lines(), "a restart's gap is not logged")

	clock.Advance(grace - time.Second)
	clock.Set(start.Add(grace - time.Second + 365*24*time.Hour))
	got, _ = c.now()
	assert.Equal(t, start.Add(grace-time.Second-time.Minute), got)
	assert.Len(t, log.Lines(), 1, "the step is logged")
	clock.Advance(time.Second)
	got, _ = c.now()
	assert.Equal(t, start.Add(grace-time.Minute), got, "the step has not held for the grace")
	clock.Advance(grace)
	got, _ = c.now()
	assert.Equal(t, clock.Now(), got)
}
