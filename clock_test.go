package dedup_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// year is the forward step of a bad clock in these tests.
const year = 365 * 24 * time.Hour

// TestClockJumpUndoneWithinGraceKeepsEveryMark steps the wall clock a year
// ahead, checkpoints while it stays there for less than the grace, and
// sets it back: every mark, checkpointed or still in the memtable at the
// step, is live again, and stays so across reopen. Meanwhile the marks
// read as expired, since expiry on read is exact on the wall clock.
func TestClockJumpUndoneWithinGraceKeepsEveryMark(t *testing.T) {
	for _, tc := range []struct {
		name       string
		checkpoint bool // the marks are in Pebble at the step
	}{
		{"checkpointed", true},
		{"in the memtable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openClocked(t, tc.checkpoint)
			clock, log, opts, s, dir, marks, gens := c.clock, c.log, c.opts, c.s, c.dir, c.marks, c.gens

			clock.Set(testutil.Epoch.Add(year))
			assert.Zero(t, storetest.SeenAll(t, s, marks), "past their deadlines by the wall clock, the marks read as expired")
			require.NoError(t, s.Checkpoint())
			clock.Advance(dedup.DefaultClockJumpGrace / 2)
			require.NoError(t, s.Checkpoint())
			assert.Equal(t, gens, generationEnds(s), "no generation is dropped within the grace")
			assert.Len(t, log.Find("clock: the wall clock jumped ahead, expiry drops wait for ClockJumpGrace"), 1, "the step is logged")

			clock.Set(testutil.Epoch.Add(dedup.DefaultClockJumpGrace / 2))
			assert.Equal(t, len(marks), storetest.SeenAll(t, s, marks), "with the clock set back, every mark is live again")
			require.NoError(t, s.Checkpoint())
			assert.Len(t, log.Find("clock: the wall clock is back in step"), 1, "the end of the step is logged")
			s = storetest.Reopen(t, s, dir, opts)
			assert.Equal(t, len(marks), storetest.SeenAll(t, s, marks), "and stays live across reopen")
		})
	}
}

// TestClockJumpHeldPastGraceDropsGenerations checks that a forward step
// that holds for the grace is trusted: the next checkpoint drops the
// generations it expired, which setting the clock back does not bring
// back.
func TestClockJumpHeldPastGraceDropsGenerations(t *testing.T) {
	c := openClocked(t, true)
	clock, log, s, marks := c.clock, c.log, c.s, c.marks
	require.NotEmpty(t, c.gens)

	clock.Set(testutil.Epoch.Add(year))
	require.NoError(t, s.Checkpoint())
	require.NotEmpty(t, generationEnds(s), "kept within the grace")
	clock.Advance(dedup.DefaultClockJumpGrace)
	require.NoError(t, s.Checkpoint())
	assert.Empty(t, generationEnds(s), "dropped once the step has held for the grace")
	assert.Len(t, log.Find("clock: the wall clock has held ahead for ClockJumpGrace, expiry drops follow it"), 1, "the trust in the step is logged")

	clock.Set(testutil.Epoch.Add(dedup.DefaultClockJumpGrace))
	assert.Zero(t, storetest.SeenAll(t, s, marks), "a dropped generation is gone for good")
}

// TestReopenWithClockAheadKeepsGenerationsUntilGrace reopens a store with
// the clock a year past its last checkpoint, or past its creation if it
// never checkpointed: Open cannot tell a step of the clock from the time
// the store was closed, so no checkpoint drops the generations that ended
// meanwhile until the clock has run for the grace. Set back, the clock
// finds every mark live; held past the grace, the generations are dropped.
func TestReopenWithClockAheadKeepsGenerationsUntilGrace(t *testing.T) {
	for _, tc := range []struct {
		name       string
		checkpoint bool // the store checkpointed before it was closed
	}{
		{"after a checkpoint", true},
		{"before any checkpoint", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openClocked(t, tc.checkpoint)
			clock, log, opts, s, dir, marks, gens := c.clock, c.log, c.opts, c.s, c.dir, c.marks, c.gens

			clock.Set(testutil.Epoch.Add(year))
			s = storetest.Reopen(t, s, dir, opts)
			require.NoError(t, s.Checkpoint(), "the first checkpoint after Open")
			assert.True(t, log.Contains("ClockJumpGrace"), "the checkpoint logs that it does not trust the clock yet")
			assert.Equal(t, gens, generationEnds(s), "no generation is dropped on the clock Open found")

			clock.Set(testutil.Epoch.Add(time.Minute))
			s = storetest.Reopen(t, s, dir, opts)
			assert.Equal(t, len(marks), storetest.SeenAll(t, s, marks), "with the clock set back, every mark is live")

			clock.Set(testutil.Epoch.Add(year))
			s = storetest.Reopen(t, s, dir, opts)
			clock.Advance(dedup.DefaultClockJumpGrace)
			require.NoError(t, s.Checkpoint())
			assert.Empty(t, generationEnds(s), "dropped once the clock has run for the grace since Open")
		})
	}
}

// TestReopenInStepDropsAsTheClockRuns checks that the grace costs
// nothing when the clock at Open is where the last checkpoint left it:
// the generations that end while the store runs are dropped as they end.
func TestReopenInStepDropsAsTheClockRuns(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock}
	s, dir := storetest.Open(t, opts)
	storetest.MarkAll(t, s, storetest.IDs("mark", 100), time.Minute)
	require.NoError(t, s.Checkpoint())
	s = storetest.Reopen(t, s, dir, opts)

	clock.Advance(time.Hour)
	require.NoError(t, s.Checkpoint())
	assert.Empty(t, generationEnds(s))
}

// TestDamagedClockFileFailsOpen checks that the CLOCK file is checked as
// the store's other files are: damage is ErrCorrupt, another version
// ErrIncompatibleFormat.
func TestDamagedClockFileFailsOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		want   error
	}{
		{"magic", func(b []byte) []byte { b[0] ^= 0x40; return b }, dedup.ErrCorrupt},
		{"time", func(b []byte) []byte { b[12] ^= 0x40; return b }, dedup.ErrCorrupt},
		{"boot", func(b []byte) []byte { b[30] ^= 0x40; return b }, dedup.ErrCorrupt},
		{"lead", func(b []byte) []byte { b[50] ^= 0x40; return b }, dedup.ErrCorrupt},
		{"checksum", func(b []byte) []byte { b[len(b)-4] ^= 0x40; return b }, dedup.ErrCorrupt},
		{"truncated", func(b []byte) []byte { return b[:10] }, dedup.ErrCorrupt},
		{"version 2", func(b []byte) []byte {
			b[8] = 2
			body := b[:len(b)-4]
			return binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
		}, dedup.ErrIncompatibleFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			s, dir := storetest.Open(t, &dedup.Options{Clock: clock})
			storetest.MarkAll(t, s, storetest.IDs("mark", 10), time.Hour)
			require.NoError(t, s.Checkpoint())
			require.NoError(t, s.Close())

			path := filepath.Join(dir, "CLOCK")
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tc.damage(b), 0o600))
			_, err = dedup.Open(dir, &dedup.Options{Clock: clock})
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

// TestSnapshotCarriesTheConfirmedTime checks that a snapshot opened with
// the clock where its store left it drops generations as they end, as its
// store would, rather than waiting for the grace as a store without a
// confirmed time does.
func TestSnapshotCarriesTheConfirmedTime(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock}
	s, _ := storetest.Open(t, opts)
	storetest.MarkAll(t, s, storetest.IDs("mark", 100), time.Minute)
	copyDir := filepath.Join(t.TempDir(), "snapshot")
	require.NoError(t, s.Snapshot(copyDir))

	c := storetest.OpenAt(t, copyDir, opts)
	require.NotEmpty(t, generationEnds(c))
	clock.Advance(10 * time.Minute)
	require.NoError(t, c.Checkpoint())
	assert.Empty(t, generationEnds(c))
}

// TestReopenDropsWhatEndedWhileClosedWhenTheBootTellsHowLong closes a
// store for a day and reopens it: in the same boot, Elapsed tells how long
// it was closed, so the first checkpoint drops the generations that ended
// meanwhile; after a reboot, or on a clock that names no boot, the lead is
// taken as a step and they are dropped once the clock has run for the
// grace. So are they when the store was closed for a minute in the same
// boot and the wall clock stepped a day ahead meanwhile.
func TestReopenDropsWhatEndedWhileClosedWhenTheBootTellsHowLong(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name    string
		boot    string // the clock's boot while the store is open first
		closed  func(clock *ttl.Fake)
		atFirst bool // the first checkpoint drops them
	}{
		{"in the same boot", "boot-1", func(c *ttl.Fake) { c.Advance(day) }, true},
		{"in the same boot, the wall clock ahead of the time closed", "boot-1", func(c *ttl.Fake) {
			c.Advance(time.Minute)
			c.Set(c.Now().Add(day))
		}, false},
		{"after a reboot", "boot-1", func(c *ttl.Fake) { c.Advance(day); c.SetBoot("boot-2") }, false},
		{"on a clock that names no boot", "", func(c *ttl.Fake) { c.Advance(day) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			clock.SetBoot(tc.boot)
			var log testutil.Log
			opts := &dedup.Options{Clock: clock, Logger: log.Logger(), ExpiryInterval: day}
			s, dir := storetest.Open(t, opts)
			storetest.MarkAll(t, s, storetest.IDs("mark", 100), time.Hour)
			require.NoError(t, s.Checkpoint())
			gens := generationEnds(s)
			require.NotEmpty(t, gens)

			require.NoError(t, s.Close())
			tc.closed(clock)
			s = storetest.OpenAt(t, dir, opts)
			require.NoError(t, s.Checkpoint(), "the first checkpoint after Open")
			if tc.atFirst {
				assert.Empty(t, generationEnds(s), "dropped by the first checkpoint")
				assert.False(t, log.Contains("ClockJumpGrace"), "nothing waits for the grace, nor is logged")
				return
			}
			assert.Equal(t, gens, generationEnds(s), "kept by the first checkpoint")
			clock.Advance(dedup.DefaultClockJumpGrace)
			require.NoError(t, s.Checkpoint())
			assert.Empty(t, generationEnds(s), "dropped once the clock has run for the grace")
		})
	}
}

// TestCloseRecordsTheTimeTrusted opens a store after a reboot, lets the
// clock run for the grace without a checkpoint, and reopens it in the same
// boot: Close recorded the wall time it came to trust, so the first
// checkpoint after the reopen drops the generations ended by it.
func TestCloseRecordsTheTimeTrusted(t *testing.T) {
	const day = 24 * time.Hour
	clock := ttl.NewFake(testutil.Epoch)
	clock.SetBoot("boot-1")
	opts := &dedup.Options{Clock: clock, ExpiryInterval: day}
	s, dir := storetest.Open(t, opts)
	storetest.MarkAll(t, s, storetest.IDs("mark", 100), time.Hour)
	require.NoError(t, s.Checkpoint())

	require.NoError(t, s.Close())
	clock.Advance(day)
	clock.SetBoot("boot-2")
	s = storetest.OpenAt(t, dir, opts)
	clock.Advance(dedup.DefaultClockJumpGrace)
	s = storetest.Reopen(t, s, dir, opts)
	require.NoError(t, s.Checkpoint())
	assert.Empty(t, generationEnds(s))
}

// TestShortRunsKeepDroppingExpiredGenerations runs a store as a cron job
// does: 50 runs of ten seconds, each marking new IDs and checkpointing
// once, as a filling memtable or ExpiryInterval would. In one boot the
// generations that ended between runs are dropped at once; after a reboot
// the grace runs on across the runs, so once it has passed they are too.
// Either way the store's generations stay bounded.
func TestShortRunsKeepDroppingExpiredGenerations(t *testing.T) {
	const runs = 50
	for _, tc := range []struct {
		name    string
		reboot  bool          // before the first run, a day after the store was last open
		between time.Duration // from one run's start to the next's
		from    int           // the first run after which generations are bounded
	}{
		{"every 3h in one boot", false, 3 * time.Hour, 0},
		{"every 5m after a reboot", true, 5 * time.Minute, int(dedup.DefaultClockJumpGrace / (5 * time.Minute))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ttl.NewFake(testutil.Epoch)
			clock.SetBoot("boot-1")
			opts := &dedup.Options{Clock: clock, ExpiryInterval: 24 * time.Hour}
			s, dir := storetest.Open(t, opts)
			storetest.MarkAll(t, s, storetest.IDs("before", 10), time.Minute)
			require.NoError(t, s.Close())
			if tc.reboot {
				clock.Advance(24 * time.Hour)
				clock.SetBoot("boot-2")
			}
			for run := range runs {
				s, err := dedup.Open(dir, opts)
				require.NoError(t, err, "run %d: Open", run)
				storetest.MarkAll(t, s, storetest.IDs(fmt.Sprintf("run-%d", run), 10), time.Minute)
				clock.Advance(10 * time.Second)
				require.NoError(t, s.Checkpoint(), "run %d", run)
				gens := len(generationEnds(s))
				require.NoError(t, s.Close(), "run %d: Close", run)
				if run >= tc.from {
					assert.LessOrEqual(t, gens, 2, "run %d: generations left", run)
				}
				clock.Advance(tc.between - 10*time.Second)
			}
		})
	}
}

// clocked is a store on a fake clock started at testutil.Epoch, holding
// 100 marks of an hour, with its log kept for assertions.
type clocked struct {
	s     *dedup.Store
	dir   string
	opts  *dedup.Options
	clock *ttl.Fake
	log   *testutil.Log
	marks [][]byte
	gens  []time.Time // the generations' ends once the marks are written
}

// openClocked opens a clocked store and marks it, then checkpoints it if
// asked to.
func openClocked(t *testing.T, checkpoint bool) clocked {
	t.Helper()
	c := clocked{clock: ttl.NewFake(testutil.Epoch), log: new(testutil.Log), marks: storetest.IDs("mark", 100)}
	c.opts = &dedup.Options{Clock: c.clock, Logger: c.log.Logger()}
	c.s, c.dir = storetest.Open(t, c.opts)
	storetest.MarkAll(t, c.s, c.marks, time.Hour)
	if checkpoint {
		require.NoError(t, c.s.Checkpoint())
	}
	c.gens = generationEnds(c.s)
	return c
}
