package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
)

// The sweeps below run one workload in every sync mode on an in-memory
// filesystem and cut the power before, or fail, each of its operations
// in turn. The workload mixes Append, whose records the writer syncs in
// the system call, and AppendStart, whose syncs run in the syncer while
// more records are appended; its records fill several 4 KiB segments, so
// that spares are prepared and used. The syncer is the one production
// picks for an in-memory FS: the portable one.

var sweepModes = []Options{
	{Sync: SyncAlways},
	{Sync: SyncInterval, SyncInterval: time.Millisecond},
	{Sync: SyncNone},
}

// sweepSizes are the segment sizes the sweeps run with: fixed, and
// growing while records come fast, shrinking while they come slowly, and
// shrunk by Remove once every record is behind a checkpoint.
var sweepSizes = []struct {
	name  string
	sized bool
}{{"fixed", false}, {"sized", true}}

// sweepClock is the clock of a sized workload: each reading moves it on by
// step.
type sweepClock struct{ now, step atomic.Int64 }

func (c *sweepClock) read() time.Time { return time.Unix(0, c.now.Add(c.step.Load())) }

// sweepAcks is what the workload was told. A power cut stops it, since
// nothing the workload is told after the cut can be in what survives.
type sweepAcks struct {
	stopped  atomic.Bool
	appended []entry
	acked    uint64 // the highest LSN known durable
	// checkpoint is the LSN that Remove was told records are checkpointed
	// up to, before a power cut: Open replays from there.
	checkpoint uint64
	// failed, if set, says that a segment's write or sync has failed;
	// lateAcks are the records appended after that whose Wait succeeded.
	failed   func() bool
	lateAcks []uint64
}

// runSweepWorkload opens the log on fs and appends rounds of one to four
// records, by Append and AppendStart in turn, waiting for each round
// before the next, and every fourth round for the spare being prepared. Under SyncAlways a record is durable once Wait returns;
// in the other modes, once Close has. Sized, segments of 4 to 16 KiB
// follow a clock that runs slowly in rounds 10 to 15 only, so that they
// grow, shrink and grow again; after round 23 Remove is told that every
// record is checkpointed, which shrinks the newest, and four more rounds
// follow. It returns the first error.
func runSweepWorkload(fs vfs.FS, mode Options, sized bool, acks *sweepAcks, logger *slog.Logger) error {
	opts := mode
	opts.FS, opts.SegmentSize, opts.Logger = fs, 4096, logger
	var clock sweepClock
	if sized {
		opts.MinSegmentSize, opts.SegmentSize, opts.testNow = 4096, 16384, clock.read
	}
	l, err := Open(logDir, opts, 0, func(uint64, []byte) error { return nil })
	if err != nil {
		return err
	}
	next := 0
	rounds := 24
	if sized {
		rounds = 28
	}
	for round := 0; round < rounds && err == nil; round++ {
		clock.step.Store(int64(time.Millisecond))
		if round >= 10 && round < 16 {
			clock.step.Store(int64(20 * time.Second))
		}
		appendLog := l.Append
		if round%2 == 1 {
			appendLog = l.AppendStart
		}
		var lsns []uint64
		dead := acks.failed != nil && acks.failed()
		for range 1 + round%4 {
			p := testPayload(next)
			next++
			var lsn uint64
			if lsn, err = appendLog(p); err != nil {
				break
			}
			lsns = append(lsns, lsn)
			acks.appended = append(acks.appended, entry{lsn, string(p)})
		}
		for _, lsn := range lsns {
			if err := l.Wait(lsn); err != nil {
				return errors.Join(err, l.Close())
			}
			if dead {
				acks.lateAcks = append(acks.lateAcks, lsn)
			}
			if mode.Sync == SyncAlways && !acks.stopped.Load() {
				acks.acked = lsn
			}
		}
		if round%4 == 3 {
			waitSpare(l) // so that rotations find it ready, as well as busy
		}
		if sized && round == 23 {
			upTo := l.LastLSN()
			if !acks.stopped.Load() {
				acks.checkpoint = upTo
			}
			if err := l.Remove(upTo); err != nil {
				return errors.Join(err, l.Close())
			}
		}
	}
	if err != nil {
		return errors.Join(err, l.Close())
	}
	if err := l.Close(); err != nil {
		return err
	}
	if !acks.stopped.Load() {
		acks.acked = uint64(len(acks.appended))
	}
	return nil
}

// powerCut is an errorfs injector that cuts the power just before the
// at-th write operation: it stops the workload's acknowledgements and
// takes a crash clone of mem. It injects no errors.
type powerCut struct {
	mem       *vfs.MemFS
	cfg       vfs.CrashCloneCfg
	at        int64 // -1 only counts
	acks      *sweepAcks
	ops       atomic.Int64
	spareUsed atomic.Int64 // renames that make the spare a segment

	mu    sync.Mutex // held to take the clone
	clone *vfs.MemFS
}

func (c *powerCut) String() string { return fmt.Sprintf("power cut before write op %d", c.at) }

func (c *powerCut) MaybeError(op errorfs.Op) error {
	if op.Kind == errorfs.OpRename && strings.HasSuffix(op.Path, spareName) {
		c.spareUsed.Add(1)
	}
	if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && c.ops.Add(1)-1 == c.at {
		c.crash()
	}
	return nil
}

// crash takes the crash clone, once.
func (c *powerCut) crash() *vfs.MemFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clone == nil {
		c.acks.stopped.Store(true)
		c.clone = c.mem.CrashClone(c.cfg)
	}
	return c.clone
}

// sweepSample is testutil.SweepPoints with limit, or 20 under -short.
func sweepSample(n, limit int) []int {
	if testing.Short() {
		limit = min(limit, 20)
	}
	return testutil.SweepPoints(n, limit)
}

// TestPowerLossSweep cuts the power before each write operation of the
// workload, in every sync mode, keeping none, half or all of the data not
// yet synced: Open must succeed and replay a prefix of what was appended
// that holds every record acknowledged as durable.
func TestPowerLossSweep(t *testing.T) {
	for _, mode := range sweepModes {
		for _, size := range sweepSizes {
			t.Run(mode.Sync.String()+"/"+size.name, func(t *testing.T) {
				powerLossSweep(t, mode, size.sized)
			})
		}
	}
}

func powerLossSweep(t *testing.T, mode Options, sized bool) {
	counter := &powerCut{mem: vfs.NewCrashableMem(), at: -1, acks: &sweepAcks{}}
	require.NoError(t, runSweepWorkload(errorfs.Wrap(counter.mem, counter), mode, sized, counter.acks, testutil.Discard))
	require.Positive(t, counter.spareUsed.Load(), "the workload must rotate into a prepared spare")
	ops := int(counter.ops.Load())
	points := sweepSample(ops+1, 150) // index ops: after the last operation
	t.Logf("the workload makes %d write operations; cutting the power before %d of them", ops, len(points))
	for _, i := range points {
		for _, p := range []int{0, 50, 100} {
			t.Run(fmt.Sprintf("op=%d/unsynced=%d%%", i, p), func(t *testing.T) {
				cut := &powerCut{mem: vfs.NewCrashableMem(), at: int64(i), acks: &sweepAcks{},
					cfg: vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rand.New(rand.NewPCG(uint64(i), uint64(p)))}}
				require.NoError(t, runSweepWorkload(errorfs.Wrap(cut.mem, cut), mode, sized, cut.acks, testutil.Discard))
				requireSurvivors(t, cut.crash(), cut.acks, "after the power cut")
			})
		}
	}
}

// requireSurvivors opens the log on fs after the checkpoint acks saw: it
// must replay a prefix of the records appended after it that holds every
// one acknowledged as durable.
func requireSurvivors(t *testing.T, fs vfs.FS, acks *sweepAcks, what string) {
	t.Helper()
	ckpt := acks.checkpoint
	l, got, err := tryOpen(fs, Options{}, ckpt)
	require.NoError(t, err, "Open %s", what)
	require.NoError(t, l.Close())
	requirePrefix(t, acks.appended[ckpt:], got, max(acks.acked, ckpt)-ckpt)
}

// failOp is an errorfs injector that fails the at-th operation and
// remembers it.
type failOp struct {
	at  int64 // -1 only counts
	ops atomic.Int64

	mu  sync.Mutex // protects hit
	hit *errorfs.Op
}

func (f *failOp) String() string { return fmt.Sprintf("fail op %d", f.at) }

func (f *failOp) MaybeError(op errorfs.Op) error {
	if f.ops.Add(1)-1 != f.at {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hit = &op
	return errorfs.ErrInjected
}

func (f *failOp) failed() (errorfs.Op, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hit == nil {
		return errorfs.Op{}, false
	}
	return *f.hit, true
}

// TestInjectedErrorSweep fails each operation of the workload in turn, in
// every sync mode. The failure must reach the workload, or, for the
// spare, the log; a log whose segment write or sync failed acknowledges
// nothing more; and what was acknowledged survives both a power loss
// right after and a reopen of the same files.
func TestInjectedErrorSweep(t *testing.T) {
	for _, mode := range sweepModes {
		for _, size := range sweepSizes {
			t.Run(mode.Sync.String()+"/"+size.name, func(t *testing.T) {
				injectedErrorSweep(t, mode, size.sized)
			})
		}
	}
}

func injectedErrorSweep(t *testing.T, mode Options, sized bool) {
	counter := &failOp{at: -1}
	require.NoError(t, runSweepWorkload(errorfs.Wrap(vfs.NewMem(), counter), mode, sized, &sweepAcks{}, testutil.Discard))
	ops := int(counter.ops.Load())
	points := sweepSample(ops, 200)
	t.Logf("the workload makes %d operations; failing %d of them", ops, len(points))
	for _, i := range points {
		t.Run(fmt.Sprintf("op=%d", i), func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			fault := &failOp{at: int64(i)}
			acks := &sweepAcks{failed: func() bool {
				op, failed := fault.failed()
				return failed && segmentWrite(op)
			}}
			var sink testutil.Log
			err := runSweepWorkload(errorfs.Wrap(mem, fault), mode, sized, acks, sink.Logger())
			if op, failed := fault.failed(); failed {
				t.Logf("failed the %v of %s", op.Kind, op.Path)
				if strings.HasSuffix(op.Path, spareName) {
					assert.True(t, err != nil || sink.Contains(errorfs.ErrInjected.Error()),
						"the failure of the spare's %v was neither returned nor logged", op.Kind)
				} else {
					assert.ErrorIs(t, err, errorfs.ErrInjected, "the failure of the %v of %s", op.Kind, op.Path)
				}
				assert.Empty(t, acks.lateAcks, "records appended after the %v of %s failed, and acknowledged", op.Kind, op.Path)
			}
			for name, fs := range map[string]vfs.FS{
				"after a power loss": mem.CrashClone(vfs.CrashCloneCfg{}),
				"reopened":           mem,
			} {
				requireSurvivors(t, fs, acks, name)
			}
		})
	}
}

// segmentWrite reports whether op writes or syncs a segment: after such a
// failure the log must acknowledge nothing more.
func segmentWrite(op errorfs.Op) bool {
	switch op.Kind {
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFilePreallocate,
		errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return strings.HasSuffix(op.Path, ".wal")
	}
	return false
}
