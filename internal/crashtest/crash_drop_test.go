package crashtest_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

const (
	dropShortTTL = 10 * time.Second // a generation of these ends every 2 s
	dropLongTTL  = time.Hour
	dropStep     = 3 * time.Second // fake time between the child's checkpoints
	dropPerCall  = 40
)

// dropTTLOf returns the TTL the child marks id with, which its name says.
func dropTTLOf(id []byte) time.Duration {
	if bytes.HasPrefix(id, []byte("short-")) {
		return dropShortTTL
	}
	return dropLongTTL
}

// dropOptions are the options of the drop child and of the reopen after
// its kill. A store reopened later than its last checkpoint drops the
// generations that ended meanwhile once its clock has run for the grace;
// a grace of one step lets each child's first checkpoint drop them.
func dropOptions(clock ttl.Clock) *dedup.Options {
	return &dedup.Options{Clock: clock, SegmentSize: 64 << 10, MemtableMarks: 1000, ClockJumpGrace: dropStep}
}

// TestCrashKillWhileDropping kills, with SIGKILL, a child that marks IDs
// with a short and a long TTL while its fake clock runs fast enough for
// most of its checkpoints to drop an expired generation, so the kills land
// in and around drops: range deletions ingested, filter snapshots removed,
// CHECKPOINT replaced. After each kill the store is reopened at the child's
// last time: every acknowledged mark whose deadline has not passed is
// seen, none whose deadline has passed is, Verify finds no damage and no
// uncovered key, and once the clock has run for the grace a checkpoint
// leaves no key of an ended generation.
// DEDUP_CRASH_CYCLES sets the number of cycles, as for TestCrashKill.
func TestCrashKillWhileDropping(t *testing.T) {
	cycles, rng := killCycles(t)

	dir := t.TempDir()
	deadlines := map[string]time.Time{} // acknowledged IDs
	now := testutil.Epoch
	next, drops := 0, 0
	// A child slowed down by the race detector on a busy machine may be
	// killed before its first checkpoint; cycles go on, up to four times
	// as many, until some child has dropped a generation.
	for cycle := 0; cycle < cycles || drops == 0 && cycle < 4*cycles; cycle++ {
		delay := killMinDelay + time.Duration(rng.Int64N(int64(killMaxDelay-killMinDelay)))
		out := runDropChild(t, dir, next, now, delay)
		last := now
		sc := bufio.NewScanner(bytes.NewReader(out[:bytes.LastIndexByte(out, '\n')+1]))
		for sc.Scan() {
			// "ack <id> <deadline ns>" or "now <ns> <generations dropped>"
			f := strings.Fields(sc.Text())
			require.Len(t, f, 3, "child line %q", sc.Text())
			n, err := strconv.ParseInt(f[2], 10, 64)
			require.NoError(t, err)
			switch f[0] {
			case "ack":
				deadlines[f[1]] = time.Unix(0, n)
				seq, err := strconv.Atoi(f[1][strings.IndexByte(f[1], '-')+1:])
				require.NoError(t, err)
				next = max(next, seq+1)
			case "now":
				ns, err := strconv.ParseInt(f[1], 10, 64)
				require.NoError(t, err)
				last, drops = time.Unix(0, ns), drops+int(n)
			}
		}
		// The child may have marked a call's IDs past the last it
		// acknowledged, and moved its clock once more, without saying so.
		next += dropPerCall
		now = last.Add(dropStep)
		verifyAfterDropKill(t, cycle, dir, now, deadlines)
		if t.Failed() {
			t.Fatalf("cycle %d failed (child killed after %v)", cycle, delay)
		}
		// Time passes before the next child, past the end of every short
		// generation written so far (a short TTL and a 2 s span), so that
		// its first checkpoint, however slow its start, drops them.
		now = now.Add(dropShortTTL + 2*time.Second + time.Duration(rng.Int64N(int64(dropShortTTL))))
	}
	t.Logf("%d marks acknowledged, %d generations dropped by the children", len(deadlines), drops)
	require.NotZero(t, drops, "the children never dropped a generation: the test does not test drops")
}

// runDropChild starts the drop child and kills it once it has opened the
// store and run for delay more: under the race detector a child takes
// long to start, and a kill before its first write would test nothing.
func runDropChild(t *testing.T, dir string, start int, now time.Time, delay time.Duration) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := testutil.ChildCommand(t, "crash-drop", dir, strconv.Itoa(start), strconv.FormatInt(now.UnixNano(), 10))
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	out := bufio.NewReader(pipe)
	opened, err := out.ReadString('\n')
	if err == nil && opened == "open\n" {
		time.Sleep(delay)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL) // fails only if the child exited, reported below
	rest, _ := io.ReadAll(out)
	stdout := bytes.NewBuffer(rest)
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("drop child exited on its own (%v):\nstdout:\n%s\nstderr:\n%s",
			err, outputTail(stdout.Bytes()), outputTail(stderr.Bytes()))
	}
	return stdout.Bytes()
}

func verifyAfterDropKill(t *testing.T, cycle int, dir string, now time.Time, deadlines map[string]time.Time) {
	t.Helper()
	clock := ttl.NewFake(now)
	s, err := dedup.Open(dir, dropOptions(clock))
	require.NoError(t, err, "cycle %d: reopening after the kill", cycle)
	defer func() { require.NoError(t, s.Close(), "cycle %d: closing", cycle) }()

	var lost, resurrected []string
	for id, dl := range deadlines {
		seen, err := s.Seen([]byte(id))
		require.NoError(t, err)
		switch live := now.Before(dl); {
		case live && !seen:
			lost = append(lost, id)
		case !live && seen:
			resurrected = append(resurrected, id)
		}
	}
	assertNoIDs(t, lost, "cycle %d: live marks lost", cycle)
	assertNoIDs(t, resurrected, "cycle %d: expired marks seen", cycle)

	report, err := s.Verify()
	require.NoError(t, err, "cycle %d: Verify", cycle)
	assert.Empty(t, report.Uncovered, "cycle %d: keys no filter covers", cycle)

	clock.Advance(dropStep)
	now = clock.Now()
	require.NoError(t, s.Checkpoint(), "cycle %d: the checkpoint that finishes interrupted drops", cycle)
	var stale []string
	require.NoError(t, s.Scan(nil, true, func(m dedup.Mark) bool {
		if m.Deadline.IsZero() {
			return true
		}
		if g := ttl.GenOf(dropTTLOf(m.ID), ttl.DeadlineOf(m.Deadline, 0)); g.Expired(now) {
			stale = append(stale, string(m.ID))
		}
		return true
	}))
	assertNoIDs(t, stale, "cycle %d: keys of ended generations left after a checkpoint", cycle)
}

// crashDropChild is the child process of TestCrashKillWhileDropping. Its
// arguments are the store directory, the sequence number of its first ID
// and its fake time at start in Unix nanoseconds. Each round it marks
// fresh IDs with the short and the long TTL, printing "ack <id>
// <deadline>" for each, moves its fake clock on and checkpoints, printing
// "now <time> <generations dropped>". It says "open" first.
func crashDropChild(t *testutil.Child, args []string) {
	dir := args[0]
	next, err := strconv.Atoi(args[1])
	require.NoError(t, err)
	ns, err := strconv.ParseInt(args[2], 10, 64)
	require.NoError(t, err)
	clock := ttl.NewFake(time.Unix(0, ns))

	s, err := dedup.Open(dir, dropOptions(clock))
	require.NoError(t, err)
	_, err = os.Stdout.WriteString("open\n")
	require.NoError(t, err)
	var line bytes.Buffer
	for {
		for _, kind := range []string{"short", "long"} {
			ids := make([][]byte, dropPerCall)
			for i := range ids {
				ids[i] = fmt.Appendf(nil, "%s-%d", kind, next)
				next++
			}
			d := dropTTLOf(ids[0])
			isNew, err := s.CheckAndMarkBatch(ids, d)
			require.NoError(t, err)
			line.Reset()
			for i, id := range ids {
				require.True(t, isNew[i], "a fresh ID %s is not new", id)
				fmt.Fprintf(&line, "ack %s %d\n", id, clock.Now().Add(d).UnixNano())
			}
			_, err = os.Stdout.Write(line.Bytes())
			require.NoError(t, err)
		}
		clock.Advance(dropStep)
		dropped := 0 // the generations this checkpoint drops
		for _, g := range s.Stats().Generations {
			if !g.Ends.After(clock.Now()) {
				dropped++
			}
		}
		require.NoError(t, s.Checkpoint())
		_, err = fmt.Fprintf(os.Stdout, "now %d %d\n", clock.Now().UnixNano(), dropped)
		require.NoError(t, err)
	}
}

// TestCrashWhileDroppingAGeneration takes a crash clone before every write
// of a checkpoint that drops a generation, keeping none, half or all of
// the unsynced data: after reopen no live mark is lost and no expired one
// is seen.
func TestCrashWhileDroppingAGeneration(t *testing.T) {
	start := testutil.Epoch
	short, long := storetest.IDs("short", 150), storetest.IDs("long", 150)
	// setup runs the workload up to the dropping checkpoint and returns the
	// store and its clock.
	setup := func(t *testing.T, fs vfs.FS) (*dedup.Store, *ttl.Fake) {
		clock := ttl.NewFake(start)
		s, err := dedup.Open(simDir, &dedup.Options{FS: fs, Clock: clock, SegmentSize: 64 << 10})
		require.NoError(t, err)
		storetest.MarkAll(t, s, short[:100], time.Minute)
		storetest.MarkAll(t, s, long[:100], time.Hour)
		require.NoError(t, s.Checkpoint())
		storetest.MarkAll(t, s, short[100:], time.Minute)
		storetest.MarkAll(t, s, long[100:], time.Hour)
		clock.Advance(2 * time.Minute)
		return s, clock
	}

	// Count the writes of the dropping checkpoint and Close.
	counter := newCrashPoint(-1, vfs.CrashCloneCfg{})
	s, _ := setup(t, counter.fs())
	first := counter.ops.Load()
	require.NoError(t, s.Checkpoint())
	require.NoError(t, s.Close())
	last := counter.ops.Load()
	t.Logf("the dropping checkpoint and Close make %d write operations", last-first)

	for at := first; at <= last; at++ {
		for _, pct := range []int{0, 50, 100} {
			t.Run(fmt.Sprintf("op=%d/unsynced=%d%%", at, pct), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(at), uint64(pct)))
				c := newCrashPoint(int(at), vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
				s, _ := setup(t, c.fs())
				require.NoError(t, s.Checkpoint())
				require.NoError(t, s.Close())
				clone := c.crash()

				s, err := dedup.Open(simDir, &dedup.Options{FS: clone, Clock: ttl.NewFake(start.Add(2 * time.Minute))})
				require.NoError(t, err, "Open after the crash")
				defer s.Close()
				assert.Equal(t, len(long), storetest.SeenAll(t, s, long), "live marks lost")
				assert.Zero(t, storetest.SeenAll(t, s, short), "expired marks resurrected")
			})
		}
	}
}
