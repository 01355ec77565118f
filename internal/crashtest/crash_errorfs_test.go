package crashtest_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// pebbleDir is where the store keeps its Pebble database, under its own
// directory.
const pebbleDir = "index/db"

// TestCrashInjectedErrors fails each filesystem operation of the workload in
// turn, and checks that the failure reaches the caller, that the store then
// refuses writes if the WAL failed, and that what was acknowledged survives:
// both in what was synced (a crash right after the failure) and on the same
// filesystem reopened (a process that carries on).
func TestCrashInjectedErrors(t *testing.T) {
	counter := &faultAt{at: -1}
	runFaulty(t, errorfs.Wrap(vfs.NewMem(), counter), newSimLog(), counter, testutil.Discard)
	ops := int(counter.ops.Load())
	points := sweepPoints(ops, 400)
	t.Logf("the workload makes %d operations; failing %d of them", ops, len(points))

	for _, i := range points {
		t.Run(fmt.Sprintf("op=%d", i), func(t *testing.T) {
			fault := &faultAt{at: int64(i)}
			mem := vfs.NewCrashableMem()
			log := newSimLog()
			var sink testutil.Log
			sawError := runFaulty(t, errorfs.Wrap(mem, fault), log, fault, sink.Logger())
			if op, failed := fault.failed(); failed {
				t.Logf("failed the %s", describe(op))
				reported := sawError || ((cleanup(op) || spare(op)) && sink.Contains(errorfs.ErrInjected.Error()))
				if !byPebble(op) {
					assert.True(t, reported, "the failure of the %s was neither returned nor, for a cleanup, logged", describe(op))
				}
			}
			t.Run("synced", func(t *testing.T) { verifyRecovered(t, mem.CrashClone(vfs.CrashCloneCfg{}), log) })
			t.Run("reopened", func(t *testing.T) {
				fs := vfs.FS(mem)
				if sink.Contains(index.ErrFailed.Error()) {
					// Pebble stopped on a fatal error and keeps its
					// directory locked until the process ends: the next
					// Open is a new process's, which finds the files as
					// the page cache left them.
					fs = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
				}
				verifyRecovered(t, fs, log)
			})
		})
	}
}

// faultAt is an errorfs injector that fails the at-th operation of the
// filesystem and remembers it.
type faultAt struct {
	at  int64 // -1 only counts the operations
	ops atomic.Int64

	mu  sync.Mutex // protects hit
	hit *errorfs.Op
}

func (f *faultAt) String() string { return fmt.Sprintf("fail op %d", f.at) }

// MaybeError implements errorfs.Injector. It neither counts nor fails the
// operations that pebblePanics names: this test cannot survive their failure.
func (f *faultAt) MaybeError(op errorfs.Op) error {
	if pebblePanics(op) || f.ops.Add(1)-1 != f.at {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hit = &op
	return errorfs.ErrInjected
}

// failed returns the operation that was failed, if one was.
func (f *faultAt) failed() (errorfs.Op, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hit == nil {
		return errorfs.Op{}, false
	}
	return *f.hit, true
}

// opKindNames names the operations, which errorfs leaves unnamed.
var opKindNames = map[errorfs.OpKind]string{
	errorfs.OpCreate: "Create", errorfs.OpLink: "Link", errorfs.OpOpen: "Open", errorfs.OpOpenDir: "OpenDir",
	errorfs.OpRemove: "Remove", errorfs.OpRemoveAll: "RemoveAll", errorfs.OpRename: "Rename",
	errorfs.OpReuseForWrite: "ReuseForWrite", errorfs.OpMkdirAll: "MkdirAll", errorfs.OpLock: "Lock",
	errorfs.OpList: "List", errorfs.OpFilePreallocate: "Preallocate", errorfs.OpStat: "Stat",
	errorfs.OpGetDiskUsage: "GetDiskUsage", errorfs.OpFileClose: "Close", errorfs.OpFileRead: "Read",
	errorfs.OpFileReadAt: "ReadAt", errorfs.OpFileWrite: "Write", errorfs.OpFileWriteAt: "WriteAt",
	errorfs.OpFileStat: "FileStat", errorfs.OpFileSync: "Sync", errorfs.OpFileSyncData: "SyncData",
	errorfs.OpFileSyncTo: "SyncTo", errorfs.OpFileFlush: "Flush",
}

func describe(op errorfs.Op) string {
	return fmt.Sprintf("%s of %s", opKindNames[op.Kind], op.Path)
}

// pebblePanics reports whether Pebble panics on the failure of op, whatever
// its logger does: a write or sync of its directory, which moving one of its
// markers includes ("Fsync errors are unrecoverable"). Failures that Pebble
// calls fatal through Logger.Fatalf are failed like any other: the store
// turns them into errors.
func pebblePanics(op errorfs.Op) bool {
	return op.Kind.ReadOrWrite() == errorfs.OpIsWrite && op.Path == path.Join(simDir, pebbleDir)
}

func inPebble(p string) bool {
	dir := path.Join(simDir, pebbleDir)
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// byPebble reports whether Pebble makes op, and so answers its failure in its
// own way, such as retrying a flush later: an operation on its files, or the
// link by which it ingests a table the store wrote (it copies the table
// instead if the link fails).
func byPebble(op errorfs.Op) bool {
	return inPebble(op.Path) || op.Kind == errorfs.OpLink
}

// walWrite reports whether op writes or syncs the WAL: after such a failure
// the store must refuse every write until it is reopened.
func walWrite(op errorfs.Op) bool {
	switch op.Kind {
	case errorfs.OpCreate, errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFilePreallocate,
		errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return strings.HasSuffix(op.Path, ".wal")
	}
	return false
}

// cleanup reports whether op may be part of removing obsolete files (WAL
// segments behind a checkpoint, stale filter snapshots). The store only logs
// such a failure: a leftover file wastes space, not correctness.
func cleanup(op errorfs.Op) bool {
	return op.Kind == errorfs.OpList || op.Kind == errorfs.OpRemove
}

// spare reports whether op prepares the WAL's spare segment or renames it
// into place. The store only logs such a failure: without a spare, the
// rotation creates its segment instead.
func spare(op errorfs.Op) bool {
	return strings.HasSuffix(op.Path, "/next.spare")
}

// runFaulty runs the workload on fs, which fails one operation, and reports
// whether any call, Open or Close returned an error. It fails t if a call
// succeeds after a WAL write or sync failed.
func runFaulty(t *testing.T, fs vfs.FS, log *simLog, fault *faultAt, logger *slog.Logger) (sawError bool) {
	t.Helper()
	s, err := dedup.Open(simDir, simOptions(fs, logger))
	if err != nil {
		return true
	}
	for i, c := range simCalls {
		op, failed := fault.failed()
		err := log.call(s, c)
		if err == nil && simCheckpointAfter(i) {
			err = s.Checkpoint()
		}
		if err != nil {
			sawError = true
		} else if failed && walWrite(op) {
			assert.Failf(t, "write accepted after a WAL failure",
				"call %d (IDs %v) succeeded after the %s failed", i, c.ns, describe(op))
		}
	}
	return s.Close() != nil || sawError
}

// TestPebbleFatalIsAnError fails every write to Pebble's MANIFEST files, as
// an index/db that is not writable does. Pebble calls that fatal; Open, and
// a checkpoint of an open store, must fail with an error that names the
// cause, not crash the process, and the store must then refuse its work.
func TestPebbleFatalIsAnError(t *testing.T) {
	var failing atomic.Bool
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasPrefix(path.Base(op.Path), "MANIFEST-") {
			return errorfs.ErrInjected
		}
		return nil
	}))
	opts := &dedup.Options{FS: fs, Logger: testutil.Discard}
	ids := storetest.IDs("fatal", 200)
	for _, dir := range []string{"at-open", "at-checkpoint"} {
		s, err := dedup.Open(dir, opts)
		require.NoError(t, err)
		storetest.MarkAll(t, s, ids[:100], 0)
		require.NoError(t, s.Checkpoint())
		if dir == "at-open" {
			require.NoError(t, s.Close())
		}

		failing.Store(true)
		if dir == "at-open" {
			s, err = dedup.Open(dir, opts)
			assert.Nil(t, s)
		} else {
			storetest.MarkAll(t, s, ids[100:], 0)
			err = s.Checkpoint()
		}
		failing.Store(false)
		require.Error(t, err, dir)
		assert.ErrorIs(t, err, errorfs.ErrInjected, "%s: the error must name its cause", dir)
		if dir == "at-checkpoint" {
			_, err = s.Seen(ids[0])
			assert.ErrorIs(t, err, errorfs.ErrInjected, "a read that reaches Pebble after the fatal")
			_, err = s.CheckAndMark(ids[0], 0)
			assert.Error(t, err, "a write after the fatal")
			assert.ErrorIs(t, s.Close(), errorfs.ErrInjected, "Close reports the failure")
		}
	}
}

// TestPebbleFatalInACompactionIsAnError fails the MANIFEST write of the
// compaction Compact asks Pebble for, which Pebble runs, and ends, on a
// goroutine of its own. Compact must return the failure rather than wait
// for ever for the compaction, and every later call that reaches Pebble,
// Close included, must return it too.
func TestPebbleFatalInACompactionIsAnError(t *testing.T) {
	fault := &testutil.CompactionFault{}
	s, err := dedup.Open("store", &dedup.Options{FS: errorfs.Wrap(vfs.NewMem(), fault), Logger: testutil.Discard})
	require.NoError(t, err)
	// Tables whose keys interleave, for Pebble to compact.
	ids := storetest.IDs("fatal", 200)
	for i := range 3 {
		var some [][]byte
		for j := i; j < 150; j += 3 {
			some = append(some, ids[j])
		}
		storetest.MarkAll(t, s, some, 0)
		require.NoError(t, s.Checkpoint())
	}
	fault.On.Store(true)

	calls := []struct {
		name string
		call func() error
	}{
		{"Compact", func() error { return s.Compact(context.Background()) }},
		{"Checkpoint", s.Checkpoint},
		{"Snapshot", func() error { return s.Snapshot("copy") }},
		{"a write", func() error { _, err := s.CheckAndMark(ids[150], 0); return err }},
		{"Close", s.Close},
	}
	for _, c := range calls {
		err := testutil.ReturnsWithin(t, c.name, c.call)
		assert.ErrorIs(t, err, index.ErrFailed, c.name)
		assert.ErrorIs(t, err, errorfs.ErrInjected, "%s: the error must name its cause", c.name)
	}
}

// TestASnapshotWhoseDirectorySyncFailsIsAnError fails the fsync of the
// directory Pebble copies itself into, which Pebble answers with a panic,
// taking a failed fsync as beyond repair. That fsync is the snapshot's,
// not the store's: Snapshot must return the failure, naming its cause,
// and the store carry on.
func TestASnapshotWhoseDirectorySyncFailsIsAnError(t *testing.T) {
	var failing atomic.Bool
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && op.Kind == errorfs.OpFileSync && op.Path == path.Join("snap", pebbleDir) {
			return errorfs.ErrInjected
		}
		return nil
	}))
	s, err := dedup.Open("store", &dedup.Options{FS: fs, Logger: testutil.Discard})
	require.NoError(t, err)
	ids := storetest.IDs("snap", 100)
	storetest.MarkAll(t, s, ids[:50], 0)

	failing.Store(true)
	err = testutil.ReturnsWithin(t, "Snapshot", func() error { return s.Snapshot("snap") })
	failing.Store(false)
	assert.ErrorIs(t, err, errorfs.ErrInjected, "the error must name its cause")
	assert.NotErrorIs(t, err, index.ErrFailed, "the store has not failed")

	storetest.MarkAll(t, s, ids[50:], 0)
	require.NoError(t, testutil.ReturnsWithin(t, "Snapshot", func() error { return s.Snapshot("snap-2") }))
	require.NoError(t, testutil.ReturnsWithin(t, "Close", s.Close))
	c, err := dedup.Open("snap-2", &dedup.Options{FS: fs, Logger: testutil.Discard})
	require.NoError(t, err)
	assert.Equal(t, len(ids), storetest.SeenAll(t, c, ids), "marks in the snapshot")
	require.NoError(t, c.Close())
}
