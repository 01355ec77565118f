package ttl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/seed42300104/dedup/internal/testutil"
)

func TestDeadlineLive(t *testing.T) {
	now := time.Unix(1000, 0)
	d := DeadlineOf(now, time.Second)
	assert.True(t, d.Live(now))
	assert.True(t, d.Live(now.Add(time.Second-1)))
	assert.False(t, d.Live(now.Add(time.Second)), "expiry is exact at the deadline")
	assert.Equal(t, now.Add(time.Second), d.Time())
}

func TestGenBoundsDeadline(t *testing.T) {
	base := testutil.Epoch.Add(123)
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		span time.Duration
	}{
		{"sub-second", 10 * time.Millisecond, time.Second},
		{"seconds", 5 * time.Second, time.Second},
		{"minute", time.Minute, 8 * time.Second},
		{"day", 24 * time.Hour, 16384 * time.Second},
		{"week", 7 * 24 * time.Hour, 131072 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 1000 {
				now := base.Add(time.Duration(i) * 7777 * time.Millisecond)
				d := DeadlineOf(now, tc.ttl)
				g := GenOf(tc.ttl, d)
				assert.Equal(t, tc.span, g.Span())
				assert.True(t, d.Time().Before(g.End()), "deadline %v must be before gen end %v", d.Time(), g.End())
				assert.False(t, g.Expired(d.Time().Add(-1)))
				if tc.ttl >= 4*time.Second {
					// A generation ends no later than TTL/4 after any of its deadlines.
					assert.LessOrEqual(t, g.End().Sub(d.Time()), tc.ttl/4)
				}
				assert.Equal(t, g, DecodeGen(g.Append(nil)))
			}
		})
	}
}

func TestGenOrderFollowsTime(t *testing.T) {
	ttl := time.Hour
	a := GenOf(ttl, DeadlineOf(time.Unix(1000, 0), ttl))
	b := GenOf(ttl, DeadlineOf(time.Unix(1000+3600, 0), ttl))
	assert.Less(t, uint64(a), uint64(b))
	assert.True(t, a.End().Before(b.End()))
}

func TestFakeClock(t *testing.T) {
	c := NewFake(time.Unix(5, 0))
	c.Advance(time.Minute)
	assert.Equal(t, time.Unix(65, 0), c.Now())
	c.Set(time.Unix(1, 0))
	assert.Equal(t, time.Unix(1, 0), c.Now())
}

func TestFakeZeroValueStartsAtTheUnixEpoch(t *testing.T) {
	var c Fake
	assert.Equal(t, time.Unix(0, 0), c.Now())
	assert.Zero(t, c.Elapsed())
	c.Advance(time.Second)
	assert.Equal(t, time.Unix(1, 0), c.Now())
}

func TestFakeAdvancePassesTimeAndSetStepsTheWallTime(t *testing.T) {
	c := NewFake(testutil.Epoch)
	c.Advance(time.Hour)
	assert.Equal(t, time.Hour, c.Elapsed(), "time passing moves Elapsed")
	c.Set(time.Unix(1_800_000_000, 0))
	assert.Equal(t, time.Unix(1_800_000_000, 0), c.Now())
	assert.Equal(t, time.Hour, c.Elapsed(), "a step of the wall time does not move Elapsed")
	c.Set(time.Unix(1_600_000_000, 0))
	assert.Equal(t, time.Hour, c.Elapsed(), "nor does a step back")
	assert.Panics(t, func() { c.Advance(-time.Second) }, "time does not pass backwards")
}

func TestFakeSetBootNamesABootAndMovesNoTime(t *testing.T) {
	c := NewFake(testutil.Epoch)
	assert.Empty(t, c.Boot(), "a new Fake names no boot")
	c.Advance(time.Hour)
	c.SetBoot("boot-1")
	assert.Equal(t, "boot-1", c.Boot())
	assert.Equal(t, time.Unix(1_700_003_600, 0), c.Now(), "the wall time does not move")
	assert.Equal(t, time.Hour, c.Elapsed(), "nor does Elapsed")
}

func TestRealElapsedFollowsTimePassing(t *testing.T) {
	var c Real
	a := c.Elapsed()
	time.Sleep(time.Millisecond)
	assert.GreaterOrEqual(t, c.Elapsed()-a, time.Millisecond, "Elapsed follows time passing")
}

func TestGenClosed(t *testing.T) {
	for _, d := range []time.Duration{5 * time.Second, time.Minute, time.Hour, 24 * time.Hour} {
		now := time.Unix(1_700_000_123, 0)
		g := GenOf(d, DeadlineOf(now, d))
		assert.False(t, g.Closed(now), "%v: the generation a mark just went to is open", d)
		// Once closed, no TTL of the class puts a mark in it.
		for later := now; !g.Expired(later); later = later.Add(time.Second) {
			if !g.Closed(later) {
				continue
			}
			for ttl := g.MinTTL(); GenOf(ttl, DeadlineOf(later, ttl)).Class() == g.Class(); ttl += g.Span() / 2 {
				assert.NotEqual(t, g, GenOf(ttl, DeadlineOf(later, ttl)), "%v: closed at %v, but a %v mark goes to it", d, later, ttl)
			}
			break
		}
	}
}
