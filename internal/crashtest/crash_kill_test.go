package crashtest_test

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
)

// crashCyclesEnv sets the number of kill cycles (default 5).
const crashCyclesEnv = "DEDUP_CRASH_CYCLES"

const (
	killTTL           = time.Hour
	killSegmentSize   = 64 << 10
	killMemtableMarks = 500
	// killExpectedMarks is small enough that filter chains grow and
	// checkpoints merge them while the child is killed.
	killExpectedMarks = 200
	killMinDelay      = 20 * time.Millisecond
	killMaxDelay      = 300 * time.Millisecond
)

func killOptions(logger *slog.Logger) *dedup.Options {
	return &dedup.Options{SegmentSize: killSegmentSize, MemtableMarks: killMemtableMarks, ExpectedMarks: killExpectedMarks, Logger: logger}
}

func killID(n int) string { return "id-" + strconv.Itoa(n) }

// TestCrashKill kills a child process that is writing to the store with
// SIGKILL at a random moment, again and again on the same directory, and
// after each kill checks the reopened store against what the child printed:
// every acknowledged ID is seen, every seen ID was attempted, and no ID was
// ever acknowledged as new twice. DEDUP_CRASH_CYCLES sets the number of
// cycles; the checks grow with the IDs of all cycles, so a soak of 200 needs
// a go test -timeout above the default 10m.
func TestCrashKill(t *testing.T) {
	cycles, rng := killCycles(t)

	dir := t.TempDir()
	h := newKillHistory()
	for cycle := range cycles {
		delay := killMinDelay + time.Duration(rng.Int64N(int64(killMaxDelay-killMinDelay)))
		out := runKilledChild(t, dir, h.next, rng.Uint64(), delay)
		h.record(t, cycle, out)
		h.verify(t, cycle, dir)
		if t.Failed() {
			t.Fatalf("cycle %d failed (child killed after %v); later cycles would build on a broken store", cycle, delay)
		}
	}
	t.Logf("%d IDs attempted, %d acknowledged", len(h.tried), len(h.acked))
}

// killCycles returns the number of kill cycles to run, DEDUP_CRASH_CYCLES
// or 5, and a random source whose seed it logs.
func killCycles(t *testing.T) (int, *rand.Rand) {
	cycles := 5
	if v := os.Getenv(crashCyclesEnv); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "%s=%q", crashCyclesEnv, v)
		cycles = n
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d cycles", seed, cycles)
	return cycles, rand.New(rand.NewPCG(seed, 0))
}

// runKilledChild starts the child on dir, kills it after delay and returns
// what it printed. It fails the test if the child exited on its own.
func runKilledChild(t *testing.T, dir string, start int, seed uint64, delay time.Duration) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := testutil.ChildCommand(t, "crash-kill", dir, strconv.Itoa(start), strconv.FormatUint(seed, 10))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	time.Sleep(delay)
	// This fails only if the child has already exited, which the status
	// below reports.
	_ = cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child exited on its own (%v) before it was killed:\nstdout:\n%s\nstderr:\n%s",
			err, outputTail(stdout.Bytes()), outputTail(stderr.Bytes()))
	}
	return stdout.Bytes()
}

// outputTail returns the end of a child's output, enough to explain a failure.
func outputTail(b []byte) []byte {
	const n = 4000
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// killHistory is what the children printed, accumulated over all cycles.
type killHistory struct {
	tried map[string]bool
	acked map[string]bool
	newIn map[string]int // cycle in which an ID was acknowledged as new
	next  int            // sequence number of the next fresh ID
}

// killProbes is how many IDs past the last attempted one are checked to be
// unseen.
const killProbes = 100

func newKillHistory() *killHistory {
	return &killHistory{tried: map[string]bool{}, acked: map[string]bool{}, newIn: map[string]int{}}
}

// record parses a child's output and fails t for an ID acknowledged as new
// a second time. Only whole lines count: the child may have been killed
// halfway through writing the last one.
func (h *killHistory) record(t *testing.T, cycle int, out []byte) {
	t.Helper()
	out = out[:bytes.LastIndexByte(out, '\n')+1]
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "try":
			h.tried[f[1]] = true
			if n, err := strconv.Atoi(strings.TrimPrefix(f[1], "id-")); err == nil {
				h.next = max(h.next, n+1)
			}
		case len(f) == 3 && f[0] == "ack":
			h.acked[f[1]] = true
			if f[2] != "true" {
				continue
			}
			if prev, ok := h.newIn[f[1]]; ok {
				assert.Failf(t, "ID acknowledged as new twice",
					"%s was acknowledged as new in cycle %d and again in cycle %d", f[1], prev, cycle)
				continue
			}
			h.newIn[f[1]] = cycle
		}
	}
}

// verify reopens the store after a kill and checks it against the history.
func (h *killHistory) verify(t *testing.T, cycle int, dir string) {
	t.Helper()
	s, err := dedup.Open(dir, killOptions(testutil.NewLog(t).Logger()))
	require.NoError(t, err, "cycle %d: reopening after the kill", cycle)
	defer func() { require.NoError(t, s.Close(), "cycle %d: closing", cycle) }()
	var lost, phantom []string
	for id := range h.acked {
		isSeen, err := s.Seen([]byte(id))
		require.NoError(t, err, "cycle %d: Seen(%s)", cycle, id)
		if !isSeen {
			lost = append(lost, id)
		}
	}
	for n := range h.next + killProbes {
		id := killID(n)
		isSeen, err := s.Seen([]byte(id))
		require.NoError(t, err, "cycle %d: Seen(%s)", cycle, id)
		if isSeen && !h.tried[id] {
			phantom = append(phantom, id)
		}
	}
	assertNoIDs(t, lost, "cycle %d: acknowledged but not seen", cycle)
	assertNoIDs(t, phantom, "cycle %d: seen but never attempted", cycle)
}

// assertNoIDs fails t if ids is not empty, naming a few of them.
func assertNoIDs(t *testing.T, ids []string, format string, args ...any) {
	t.Helper()
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	assert.Failf(t, fmt.Sprintf(format, args...), "%d IDs, among them %v", len(ids), ids[:min(len(ids), 20)])
}

// crashKillChild is the child process of TestCrashKill. Its arguments are
// the store directory, the sequence number of its first fresh ID and the
// seed of its choice of batches and duplicates. It marks IDs until it is
// killed, printing "try <id>" before each call and "ack <id> <isNew>"
// after each call returns.
func crashKillChild(t *testutil.Child, args []string) {
	dir := args[0]
	start, err := strconv.Atoi(args[1])
	require.NoError(t, err)
	seed, err := strconv.ParseUint(args[2], 10, 64)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(seed, 1))

	s, err := dedup.Open(dir, killOptions(nil))
	require.NoError(t, err)
	next := start
	var line bytes.Buffer
	for {
		ids, batch := childCall(rng, &next)
		line.Reset()
		for _, id := range ids {
			fmt.Fprintf(&line, "try %s\n", id)
		}
		_, err := os.Stdout.Write(line.Bytes())
		require.NoError(t, err)

		var isNew []bool
		if !batch {
			var n bool
			n, err = s.CheckAndMark(ids[0], killTTL)
			isNew = []bool{n}
		} else {
			isNew, err = s.CheckAndMarkBatch(ids, killTTL)
		}
		require.NoError(t, err)

		line.Reset()
		for i, id := range ids {
			fmt.Fprintf(&line, "ack %s %t\n", id, isNew[i])
		}
		_, err = os.Stdout.Write(line.Bytes())
		require.NoError(t, err)
	}
}

// childCall returns the IDs of the child's next call: half of the time one
// ID for CheckAndMark, else 1 to 64 distinct IDs for CheckAndMarkBatch, or
// one time in 16 400 to 639, enough new marks for the store to start their
// fsync before it applies them. Most are fresh IDs from *next on; about
// one in four is an earlier ID, possibly one an earlier child attempted,
// attempted again.
func childCall(rng *rand.Rand, next *int) (ids [][]byte, batch bool) {
	n := 1
	if batch = rng.IntN(2) == 0; batch {
		n = 1 + rng.IntN(64)
		if rng.IntN(16) == 0 {
			n = 400 + rng.IntN(240)
		}
	}
	ids = make([][]byte, 0, n)
	inCall := map[int]bool{}
	for len(ids) < n {
		k := *next
		if k > 0 && rng.IntN(4) == 0 {
			k = rng.IntN(*next)
		} else {
			*next++
		}
		if inCall[k] {
			continue
		}
		inCall[k] = true
		ids = append(ids, []byte(killID(k)))
	}
	return ids, batch
}
