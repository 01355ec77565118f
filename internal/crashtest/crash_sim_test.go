package crashtest_test

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/ttl"
)

// The simulated crash tests replay one small deterministic workload on an
// in-memory filesystem. Its 600 IDs of 256 bytes fill several 64KiB WAL
// segments early enough for its second checkpoint to remove the first.
const (
	simDir           = "/store"
	simIDs           = 600
	simIDSize        = 256
	simProbes        = 20 // IDs past the workload's checked to be unseen
	simSegmentSize   = 64 << 10
	simMemtableMarks = 10 * simIDs // no checkpoint but the workload's own: the same operations every run
	// simExpectedMarks grows a chain of filters that the workload's
	// checkpoint merges, reading Pebble back.
	simExpectedMarks = simIDs / 8
	simTTL           = time.Hour
	// simBigBatch is the size of one batch of new IDs, a third of the way
	// in, large enough that the store starts its fsync in the background (the AIO
	// path on the OS's files) and, at 256 bytes an ID, larger than a
	// segment.
	simBigBatch = 260
)

// simCalls is the workload: calls of CheckAndMark and of CheckAndMarkBatch
// with 1 to 16 IDs, and one batch of simBigBatch new IDs; about one ID in
// five of the others is an earlier one attempted again.
var simCalls = simWorkload()

// simCall is one call of the workload. IDs are named by their sequence
// number; simID makes the ID itself.
type simCall struct {
	ns    []int
	batch bool
}

func simWorkload() []simCall {
	rng := rand.New(rand.NewPCG(1, 2))
	var calls []simCall
	bigDone := false
	for next := 0; next < simIDs; {
		c := simCall{ns: []int{}, batch: rng.IntN(2) == 0}
		size := 1
		if c.batch {
			size = 1 + rng.IntN(16)
		}
		big := next >= simIDs/3 && !bigDone
		if big {
			c.batch, size, bigDone = true, simBigBatch, true
		}
		for len(c.ns) < size && next < simIDs {
			n := next
			if next > 0 && !big && rng.IntN(5) == 0 {
				n = rng.IntN(next)
			} else {
				next++
			}
			if !slices.Contains(c.ns, n) {
				c.ns = append(c.ns, n)
			}
		}
		calls = append(calls, c)
	}
	return calls
}

// simID returns the ID with sequence number n, padded to simIDSize bytes.
func simID(n int) []byte {
	id := []byte(fmt.Sprintf("id-%04d-", n))
	for len(id) < simIDSize {
		id = append(id, byte('a'+n%26))
	}
	return id
}

func simOptions(fs vfs.FS, logger *slog.Logger) *dedup.Options {
	return &dedup.Options{
		FS:            fs,
		Clock:         ttl.NewFake(testutil.Epoch),
		SegmentSize:   simSegmentSize,
		MemtableMarks: simMemtableMarks,
		ExpectedMarks: simExpectedMarks,
		Logger:        logger,
	}
}

// TestCrashSimulatedPowerLoss simulates a power loss before each write
// operation of the workload (create, write, sync, rename, remove...), keeping
// none, about half or all of the data not yet synced, and checks that the
// store recovers what it acknowledged before the crash.
func TestCrashSimulatedPowerLoss(t *testing.T) {
	counter := newCrashPoint(-1, vfs.CrashCloneCfg{})
	runSim(t, counter.fs(), counter.log)
	// Segments are named after their first LSN: the first one is gone once
	// the WAL has rotated and a checkpoint has covered it.
	segments, err := counter.mem.List(path.Join(simDir, "wal"))
	require.NoError(t, err)
	require.NotContains(t, segments, "0000000000000001.wal",
		"the workload is too small to rotate the WAL and checkpoint past its first segment")
	ops := int(counter.ops.Load())
	points := sweepPoints(ops+1, 300) // index ops: after the last operation
	t.Logf("the workload makes %d write operations; crashing before %d of them", ops, len(points))

	for _, i := range points {
		for _, p := range []int{0, 50, 100} {
			t.Run(fmt.Sprintf("op=%d/unsynced=%d%%", i, p), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(p)))
				cp := newCrashPoint(i, vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng})
				runSim(t, cp.fs(), cp.log)
				// The run may make fewer operations than the counting
				// run did; then the crash comes after the last one.
				verifyRecovered(t, cp.crash(), cp.log)
			})
		}
	}
}

// runSim runs the whole workload on fs, failing t on any error: the
// filesystem under it never fails, it only takes crash clones.
func runSim(t *testing.T, fs vfs.FS, log *simLog) {
	t.Helper()
	s, err := dedup.Open(simDir, simOptions(fs, testutil.Discard))
	require.NoError(t, err, "Open")
	for i, c := range simCalls {
		require.NoError(t, log.call(s, c), "call %d", i)
		if simCheckpointAfter(i) {
			require.NoError(t, s.Checkpoint(), "checkpoint after call %d", i)
		}
	}
	require.NoError(t, s.Close(), "Close")
}

// simCheckpointAfter says whether the workload checkpoints after call i: at
// a third and two thirds of the way, so that the first checkpoint covers a
// rotated segment and the second one removes it.
func simCheckpointAfter(i int) bool {
	return i == len(simCalls)/3 || i == 2*len(simCalls)/3
}

// crashPoint is an errorfs injector that simulates a power loss just before
// the at-th write operation: it stops the workload's log and takes a crash
// clone of mem. It injects no errors.
type crashPoint struct {
	mem *vfs.MemFS
	cfg vfs.CrashCloneCfg
	at  int64 // -1 only counts the operations
	log *simLog
	ops atomic.Int64

	// mu is held to take the clone, and read-held by the operations
	// cloneGuard keeps apart from it.
	mu    sync.RWMutex
	clone *vfs.MemFS
}

func newCrashPoint(at int, cfg vfs.CrashCloneCfg) *crashPoint {
	return &crashPoint{mem: vfs.NewCrashableMem(), cfg: cfg, at: int64(at), log: newSimLog()}
}

// fs returns the filesystem the workload runs on.
func (c *crashPoint) fs() vfs.FS {
	return errorfs.Wrap(cloneGuard{FS: c.mem, mu: &c.mu}, c)
}

func (c *crashPoint) String() string { return fmt.Sprintf("crash before write op %d", c.at) }

// MaybeError implements errorfs.Injector.
func (c *crashPoint) MaybeError(op errorfs.Op) error {
	if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && c.ops.Add(1)-1 == c.at {
		c.crash()
	}
	return nil
}

// crash takes the crash clone, once. The log stops first, so that any
// acknowledgement it still records came before the clone.
func (c *crashPoint) crash() *vfs.MemFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clone == nil {
		c.log.stop()
		c.clone = c.mem.CrashClone(c.cfg)
	}
	return c.clone
}

// cloneGuard works around a deadlock in pebble v2.1.7's MemFS: Link and
// ReuseForWrite read-lock its clone lock twice, so a CrashClone that comes
// in between waits for them while they wait behind it. They hold mu for
// reading, which keeps crash clones out until they finish.
type cloneGuard struct {
	vfs.FS
	mu *sync.RWMutex
}

func (g cloneGuard) Link(oldname, newname string) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.FS.Link(oldname, newname)
}

func (g cloneGuard) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.FS.ReuseForWrite(oldname, newname, category)
}

// simLog is what the workload was told: the IDs it attempted and those
// acknowledged. A simulated crash stops it, since nothing the workload is told
// after the crash can be in the crashed filesystem.
type simLog struct {
	stopped   atomic.Bool
	attempted map[int]bool
	acked     map[int]bool // isNew as first acknowledged
}

func newSimLog() *simLog {
	return &simLog{attempted: map[int]bool{}, acked: map[int]bool{}}
}

func (l *simLog) stop() { l.stopped.Store(true) }

// call makes c on s and records it: the attempt before the call starts, the
// acknowledgement once it has returned successfully.
func (l *simLog) call(s *dedup.Store, c simCall) error {
	if !l.stopped.Load() {
		for _, n := range c.ns {
			l.attempted[n] = true
		}
	}
	isNew, err := simDo(s, c)
	if err != nil || l.stopped.Load() {
		return err
	}
	for i, n := range c.ns {
		if _, ok := l.acked[n]; !ok {
			l.acked[n] = isNew[i]
		}
	}
	return nil
}

func simDo(s *dedup.Store, c simCall) ([]bool, error) {
	if !c.batch {
		isNew, err := s.CheckAndMark(simID(c.ns[0]), simTTL)
		return []bool{isNew}, err
	}
	ids := make([][]byte, len(c.ns))
	for i, n := range c.ns {
		ids[i] = simID(n)
	}
	return s.CheckAndMarkBatch(ids, simTTL)
}

// verifyRecovered opens the store on fs, as a process would after a crash,
// and checks it against log: Open succeeds, every acknowledged ID is seen,
// every seen ID was attempted, and no ID acknowledged as new is new again.
func verifyRecovered(t *testing.T, fs vfs.FS, log *simLog) {
	t.Helper()
	s, err := dedup.Open(simDir, simOptions(fs, testutil.NewLog(t).Logger()))
	require.NoError(t, err, "Open after the crash")
	defer func() { require.NoError(t, s.Close(), "Close after recovery") }()

	var lost, phantom, newAgain []int
	for n := range simIDs + simProbes {
		isSeen, err := s.Seen(simID(n))
		require.NoError(t, err, "Seen(ID %d)", n)
		if _, acked := log.acked[n]; acked && !isSeen {
			lost = append(lost, n)
		}
		if isSeen && !log.attempted[n] {
			phantom = append(phantom, n)
		}
	}
	for n := range simIDs {
		if !log.acked[n] { // not acknowledged, or acknowledged as a duplicate
			continue
		}
		isNew, err := s.CheckAndMark(simID(n), simTTL)
		require.NoError(t, err, "CheckAndMark(ID %d)", n)
		if isNew {
			newAgain = append(newAgain, n)
		}
	}
	assert.Empty(t, lost, "IDs acknowledged before the crash but not seen after it")
	assert.Empty(t, phantom, "IDs seen after the crash but never attempted")
	assert.Empty(t, newAgain, "IDs acknowledged as new before the crash and reported new again after it")
}

// sweepPoints is testutil.SweepPoints with limit, or a sample of 40 under
// -short or -race, which makes each crash point many times slower.
func sweepPoints(n, limit int) []int {
	if testing.Short() || testutil.Race {
		limit = min(limit, 40)
	}
	return testutil.SweepPoints(n, limit)
}
