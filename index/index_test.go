package index

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/ttl"
)

const testDir = "index"

// testNow is the fixed time the marks of these tests are written at.
var testNow = testutil.Epoch

func testOptions(fs vfs.FS) Options {
	return Options{FS: fs, ExpectedMarks: 1000, FalsePositiveRate: 0.01, MemtableMarks: 1000, CacheSize: 1 << 20}
}

// openIndex opens the index in testDir of opts.FS. It returns a function
// that closes it, which runs at the end of the test if the test has not
// called it: Pebble panics on a second Close.
func openIndex(t *testing.T, opts Options) (*Index, func()) {
	t.Helper()
	ix, err := Open(testDir, opts)
	require.NoError(t, err)
	closed := false
	closeIndex := func() {
		if !closed {
			closed = true
			assert.NoError(t, ix.Close())
		}
	}
	t.Cleanup(closeIndex)
	return ix, closeIndex
}

// mark is one mark to write: an ID with a TTL from testNow and a value.
type mark struct {
	id    string
	ttl   time.Duration
	value string
}

// entryOf is the entry mark m gets, written by WAL record lsn.
func entryOf(m mark, lsn uint64) Entry {
	d := ttl.DeadlineOf(testNow, m.ttl)
	e := Entry{Gen: ttl.GenOf(m.ttl, d), Deadline: d, LSN: lsn}
	if m.value != "" {
		e.Value = []byte(m.value)
	}
	return e
}

// markBatch returns a batch of marks.
func markBatch(ix *Index, marks ...mark) *Batch {
	var b Batch
	for _, m := range marks {
		e := entryOf(m, 0)
		b.Mark(ix.Key([]byte(m.id)), e.Gen, e.Deadline, e.Value)
	}
	return &b
}

// forgetBatch returns a batch of forgets.
func forgetBatch(ids ...string) *Batch {
	var b Batch
	for _, id := range ids {
		b.Forget([]byte(id))
	}
	return &b
}

// checkpointIndex runs a whole checkpoint, the merge of filter chains
// included, and returns the LSN it covers.
func checkpointIndex(t testing.TB, ix *Index) uint64 {
	t.Helper()
	return finishCheckpoint(t, ix, ix.Freeze(testNow))
}

// finishCheckpoint runs the rest of the checkpoint that froze f and
// returns the LSN it covers.
func finishCheckpoint(t testing.TB, ix *Index, f *Frozen) uint64 {
	t.Helper()
	require.NoError(t, ix.Persist(f))
	ix.EndCheckpoint(f)
	require.Equal(t, f.LSN(), ix.CheckpointLSN())
	if f.Merging() {
		require.NoError(t, ix.MergeChains(f))
		ix.EndMerges(f)
	}
	return f.LSN()
}

func lookup(t *testing.T, ix *Index, id string, now time.Time) (Entry, bool) {
	t.Helper()
	e, ok, err := ix.Lookup(ix.Key([]byte(id)), ttl.NewFake(now))
	require.NoError(t, err, "Lookup(%q)", id)
	return e, ok
}

// assertLive asserts that Lookup at now finds want.
func assertLive(t *testing.T, ix *Index, id string, now time.Time, want Entry) {
	t.Helper()
	got, ok := lookup(t, ix, id, now)
	if assert.True(t, ok, "%q must be live at %v", id, now.Sub(testNow)) {
		assert.Equal(t, want, got, "entry of %q", id)
	}
}

// assertAbsent asserts that Lookup at now finds nothing.
func assertAbsent(t *testing.T, ix *Index, id string, now time.Time) {
	t.Helper()
	got, ok := lookup(t, ix, id, now)
	assert.False(t, ok, "%q must not be live at %v, found %+v", id, now.Sub(testNow), got)
}

// generationMarks returns marks of n IDs for each TTL.
func generationMarks(n int, ttls ...time.Duration) []mark {
	var marks []mark
	for _, d := range ttls {
		for i := range n {
			marks = append(marks, mark{id: fmt.Sprintf("%v-%d", d, i), ttl: d, value: fmt.Sprintf("v%d", i%3)})
		}
	}
	return marks
}

func TestIndexLookupAcrossGenerations(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	ttls := []time.Duration{10 * time.Second, time.Minute, time.Hour, 24 * time.Hour}
	marks := generationMarks(50, ttls...)
	lsnOf := map[string]uint64{}
	for i, d := range ttls {
		lsn := uint64(i + 1)
		var batch []mark
		for _, m := range marks {
			if m.ttl == d {
				batch = append(batch, m)
				lsnOf[m.id] = lsn
			}
		}
		ix.Apply(markBatch(ix, batch...), lsn)
	}
	require.Len(t, ix.Gens(), len(ttls), "one generation per TTL")
	assert.Equal(t, len(marks), ix.MemMarks())

	// check looks every mark up at several times; inMem says whether the
	// marks are still in a memtable, where they carry their LSN.
	check := func(t *testing.T, inMem bool) {
		t.Helper()
		for _, m := range marks {
			var lsn uint64
			if inMem {
				lsn = lsnOf[m.id]
			}
			want := entryOf(m, lsn)
			for _, at := range []time.Duration{0, 30 * time.Second, 2 * time.Hour, 48 * time.Hour} {
				if at < m.ttl {
					assertLive(t, ix, m.id, testNow.Add(at), want)
				} else {
					assertAbsent(t, ix, m.id, testNow.Add(at))
				}
			}
			assertAbsent(t, ix, m.id, want.Deadline.Time())
			assertLive(t, ix, m.id, want.Deadline.Time().Add(-1), want)
		}
		for i := range 100 {
			assertAbsent(t, ix, fmt.Sprintf("absent-%d", i), testNow)
		}
	}
	t.Run("memtable", func(t *testing.T) { check(t, true) })

	f := ix.Freeze(testNow)
	assert.Equal(t, uint64(len(ttls)), f.LSN())
	assert.Zero(t, ix.MemMarks(), "Freeze starts a new memtable")
	t.Run("frozen", func(t *testing.T) { check(t, true) })

	require.NoError(t, ix.Persist(f))
	assert.Equal(t, uint64(len(ttls)), ix.CheckpointLSN())
	t.Run("persisted and frozen", func(t *testing.T) { check(t, true) })

	ix.EndCheckpoint(f)
	t.Run("pebble", func(t *testing.T) { check(t, false) })
}

func TestIndexForget(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	long := mark{id: "remarked", ttl: time.Hour, value: "old"}
	kept := mark{id: "kept", ttl: time.Hour}
	gone := mark{id: "gone", ttl: time.Hour}
	ix.Apply(markBatch(ix, long, kept, gone), 1)
	checkpointIndex(t, ix)
	assertLive(t, ix, gone.id, testNow, entryOf(gone, 0))

	t.Run("forget of a persisted ID", func(t *testing.T) {
		ix.Apply(forgetBatch(gone.id), 2)
		assertAbsent(t, ix, gone.id, testNow)
		checkpointIndex(t, ix)
		assertAbsent(t, ix, gone.id, testNow)
		assertLive(t, ix, kept.id, testNow, entryOf(kept, 0))
	})

	t.Run("re-mark after forget in one memtable", func(t *testing.T) {
		short := mark{id: long.id, ttl: 10 * time.Second, value: "new"}
		require.NotEqual(t, entryOf(long, 0).Gen, entryOf(short, 0).Gen, "the re-mark must be in another generation")
		ix.Apply(forgetBatch(long.id), 3)
		ix.Apply(markBatch(ix, short), 4)
		assertLive(t, ix, short.id, testNow, entryOf(short, 4))
		checkpointIndex(t, ix)

		assertLive(t, ix, short.id, testNow, entryOf(short, 0))
		assertAbsent(t, ix, short.id, testNow.Add(time.Minute)) // the old mark would still be live
		key := entryOf(long, 0).Gen.Append(nil)
		_, closer, err := ix.db.Get(append(key, long.id...))
		if err == nil {
			closer.Close()
		}
		assert.ErrorIs(t, err, pebble.ErrNotFound, "the old generation's version must be deleted")
	})

	t.Run("mark then forget in one memtable", func(t *testing.T) {
		m := mark{id: "brief", ttl: time.Hour}
		ix.Apply(markBatch(ix, m), 5)
		ix.Apply(forgetBatch(m.id), 6)
		assertAbsent(t, ix, m.id, testNow)
		checkpointIndex(t, ix)
		assertAbsent(t, ix, m.id, testNow)
	})

	t.Run("forget and re-mark in one batch", func(t *testing.T) {
		m := mark{id: kept.id, ttl: time.Minute, value: "again"}
		b := forgetBatch(kept.id)
		b.Ops = append(b.Ops, markBatch(ix, m).Ops...)
		ix.Apply(b, 7)
		checkpointIndex(t, ix)
		assertLive(t, ix, m.id, testNow, entryOf(m, 0))
		assertAbsent(t, ix, m.id, testNow.Add(2*time.Minute))
	})
}

func TestIndexReopen(t *testing.T) {
	fs := vfs.NewMem()
	ix, closeIndex := openIndex(t, testOptions(fs))
	first := generationMarks(20, time.Minute, time.Hour)
	second := generationMarks(20, 24*time.Hour)
	ix.Apply(markBatch(ix, first...), 1)
	checkpointIndex(t, ix)
	ix.Apply(markBatch(ix, second...), 2)
	lastLSN := checkpointIndex(t, ix) // the first generations' snapshots are kept
	gens := ix.Gens()
	require.Len(t, gens, 3)

	unpersisted := mark{id: "unpersisted", ttl: time.Hour}
	ix.Apply(markBatch(ix, unpersisted), lastLSN+1)
	closeIndex()

	ix, _ = openIndex(t, testOptions(fs))
	assert.Equal(t, lastLSN, ix.CheckpointLSN())
	assert.Equal(t, gens, ix.Gens(), "the filters are loaded from their snapshots")
	names, err := fs.List(fs.PathJoin(testDir, filtersDir))
	require.NoError(t, err)
	assert.Len(t, names, len(gens), "one snapshot per generation, stale ones removed: %v", names)
	for _, m := range append(first, second...) {
		assertLive(t, ix, m.id, testNow, entryOf(m, 0))
		assertAbsent(t, ix, m.id, testNow.Add(m.ttl))
	}
	assertAbsent(t, ix, unpersisted.id, testNow) // the WAL holds it, not the index

	r := ix.Replayer()
	require.NoError(t, r.Replay(lastLSN+1, markBatch(ix, unpersisted).AppendEncoded(nil)))
	r.Flush()
	assertLive(t, ix, unpersisted.id, testNow, entryOf(unpersisted, lastLSN+1))
}

func TestIndexCheckpointWithoutWritesKeepsLSN(t *testing.T) {
	fs := vfs.NewMem()
	ix, closeIndex := openIndex(t, testOptions(fs))
	m := mark{id: "id", ttl: time.Hour}
	ix.Apply(markBatch(ix, m), 41)
	require.Equal(t, uint64(41), checkpointIndex(t, ix))
	closeIndex()

	ix, _ = openIndex(t, testOptions(fs))
	f := ix.Freeze(testNow)
	require.NoError(t, ix.Persist(f))
	ix.EndCheckpoint(f)
	assert.Equal(t, uint64(41), ix.CheckpointLSN(), "a checkpoint of nothing new must not move the LSN back")
	assertLive(t, ix, m.id, testNow, entryOf(m, 0))
}

func TestIndexReplayEqualsApply(t *testing.T) {
	applied, _ := openIndex(t, testOptions(vfs.NewMem()))
	replayed, _ := openIndex(t, testOptions(vfs.NewMem()))
	marks := generationMarks(30, time.Minute, time.Hour)
	batches := []*Batch{
		markBatch(applied, marks[:30]...),
		markBatch(applied, marks[30:]...),
		forgetBatch(marks[0].id, marks[31].id, "never-marked"),
		markBatch(applied, mark{id: marks[0].id, ttl: 24 * time.Hour, value: "re-marked"}),
	}
	// Records of one mark each, over more than one group of the
	// Replayer, some of which change the marks of the records before.
	for _, m := range generationMarks(2*replayGroup, 10*time.Minute) {
		batches = append(batches, markBatch(applied, m))
	}
	batches = append(batches, forgetBatch(marks[1].id), markBatch(applied, marks[59]))
	r := replayed.Replayer()
	for i, b := range batches {
		lsn := uint64(10 + i)
		applied.Apply(b, lsn)
		require.NoError(t, r.Replay(lsn, b.AppendEncoded(nil)))
	}
	r.Flush()

	compare := func(t *testing.T) {
		t.Helper()
		assert.Equal(t, applied.Gens(), replayed.Gens())
		assert.Equal(t, applied.MemMarks(), replayed.MemMarks())
		assert.Equal(t, applied.CheckpointLSN(), replayed.CheckpointLSN())
		for _, id := range []string{marks[0].id, marks[1].id, marks[31].id, marks[59].id, "never-marked"} {
			for _, at := range []time.Duration{0, 2 * time.Minute} {
				want, wantOK := lookup(t, applied, id, testNow.Add(at))
				got, gotOK := lookup(t, replayed, id, testNow.Add(at))
				assert.Equal(t, wantOK, gotOK, "%q found", id)
				assert.Equal(t, want, got, "entry of %q", id)
			}
		}
	}
	t.Run("memtable", compare)
	checkpointIndex(t, applied)
	checkpointIndex(t, replayed)
	t.Run("pebble", compare)

	err := replayed.Replayer().Replay(99, []byte{0x7f})
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.ErrorContains(t, err, "LSN 99")
}

func TestIndexRebuildFilters(t *testing.T) {
	fs := vfs.NewMem()
	ix, closeIndex := openIndex(t, testOptions(fs))
	marks := generationMarks(1500, time.Minute, time.Hour) // past ExpectedMarks: chains
	ix.Apply(markBatch(ix, marks...), 1)
	forgotten := marks[:10]
	var ids []string
	for _, m := range forgotten {
		ids = append(ids, m.id)
	}
	ix.Apply(forgetBatch(ids...), 2)
	checkpointIndex(t, ix)

	// checkFilters asserts that the filters hold every persisted key, and
	// count only those.
	checkFilters := func(t *testing.T, ix *Index) {
		t.Helper()
		perGen := map[ttl.Gen]uint64{}
		for _, m := range marks[len(forgotten):] {
			e := entryOf(m, 0)
			perGen[e.Gen]++
			f := ix.filters[e.Gen]
			if !assert.NotNil(t, f, "no filter for generation %x", uint64(e.Gen)) {
				return
			}
			if !f.test(ix.Key([]byte(m.id)).hash) {
				assert.Failf(t, "false negative", "the filter misses %q", m.id)
				return
			}
			assertLive(t, ix, m.id, testNow, e)
		}
		gens := ix.Gens()
		require.Len(t, gens, len(perGen))
		for _, g := range gens {
			assert.Equal(t, perGen[g.Gen], g.Marks, "marks of generation %x", uint64(g.Gen))
		}
		for _, m := range forgotten {
			assertAbsent(t, ix, m.id, testNow)
		}
	}

	// reopenRebuilding opens the index, which must say it rebuilds the
	// filters because of the snapshot named name, and checks the filters.
	reopenRebuilding := func(t *testing.T, name string) *Index {
		t.Helper()
		var log testutil.Log
		opts := testOptions(fs)
		opts.Logger = log.Logger()
		ix, _ := openIndex(t, opts)
		if logs := log.Records(); assert.Len(t, logs, 1) {
			assert.Contains(t, logs[0].Message, "rebuilding")
			assert.Contains(t, logs[0].Attrs["path"], name)
		}
		checkFilters(t, ix)
		return ix
	}

	t.Run("RebuildFilters", func(t *testing.T) {
		require.NoError(t, ix.RebuildFilters())
		checkFilters(t, ix)
	})

	t.Run("Open with a snapshot missing", func(t *testing.T) {
		closeIndex()
		dir := fs.PathJoin(testDir, filtersDir)
		names, err := fs.List(dir)
		require.NoError(t, err)
		require.NotEmpty(t, names)
		require.NoError(t, fs.Remove(fs.PathJoin(dir, names[0])))

		ix = reopenRebuilding(t, names[0])

		added := mark{id: "new", ttl: time.Hour}
		ix.Apply(markBatch(ix, added), 3)
		marks = append(marks, added) // the subtests after this one see it
		lsn := checkpointIndex(t, ix)
		after, err := fs.List(dir)
		require.NoError(t, err)
		assert.Len(t, after, len(ix.Gens()), "the rebuilt filters are snapshotted: %v", after)
		for _, name := range after {
			assert.True(t, strings.HasSuffix(name, fmt.Sprintf("-%016x.bloom", lsn)), "snapshot %s", name)
		}
	})

	t.Run("Open with a snapshot of the unblocked layout", func(t *testing.T) {
		// The subtest before closed its index at its end.
		dir := fs.PathJoin(testDir, filtersDir)
		names, err := fs.List(dir)
		require.NoError(t, err)
		require.NotEmpty(t, names)
		path := fs.PathJoin(dir, names[0])
		p, err := fsutil.ReadFile(fs, path)
		require.NoError(t, err)
		binary.LittleEndian.PutUint32(p[len(filterMagic):], 2)
		p = binary.LittleEndian.AppendUint32(p[:len(p)-4], crc32.Checksum(p[:len(p)-4], crcTable))
		require.NoError(t, fsutil.WriteFile(fs, path, p))

		ix = reopenRebuilding(t, names[0])
	})
}

// manifestFault fails every write to Pebble's MANIFEST files while on:
// Pebble calls that fatal.
type manifestFault struct{ on atomic.Bool }

func (m *manifestFault) String() string { return "manifestFault" }

func (m *manifestFault) MaybeError(op errorfs.Op) error {
	if m.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasPrefix(path.Base(op.Path), "MANIFEST-") {
		return errorfs.ErrInjected
	}
	return nil
}

// TestPebbleFatalMakesIndexFailStop fails Pebble's MANIFEST writes, which
// Pebble reports through Logger.Fatalf, expecting the process to end. Open
// or the checkpoint must fail with ErrFailed, naming the cause, and not
// panic or hang; after a fatal during a checkpoint, every later call that
// would reach Pebble fails the same way at once, Close included.
func TestPebbleFatalMakesIndexFailStop(t *testing.T) {
	marks := generationMarks(100, time.Hour)
	t.Run("at Open", func(t *testing.T) {
		fault := &manifestFault{}
		opts := testOptions(errorfs.Wrap(vfs.NewMem(), fault))
		ix, closeIndex := openIndex(t, opts)
		ix.Apply(markBatch(ix, marks...), 1)
		checkpointIndex(t, ix)
		closeIndex()

		fault.on.Store(true)
		var log testutil.Log
		opts.Logger = log.Logger()
		ix, err := Open(testDir, opts)
		require.ErrorIs(t, err, ErrFailed)
		assert.Nil(t, ix)
		assert.ErrorIs(t, err, errorfs.ErrInjected, "the error must carry its cause")
		assert.Len(t, log.Find("index: fail-stop"), 1, "the fatal error must be logged")
	})
	// A checkpoint's Excise and Ingest write the MANIFEST on the caller's
	// goroutine: the fatal is raised there, and Pebble is left with its
	// next ingestion blocked for ever, which no later call may reach.
	for _, tc := range []struct {
		name string
		at   time.Time // the second checkpoint's now
	}{
		{"at a checkpoint's ingestion", testNow},
		{"at a checkpoint's excision of an expired generation", testNow.Add(10 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marks := generationMarks(50, time.Minute, time.Hour)
			fault := &manifestFault{}
			ix, err := Open(testDir, testOptions(errorfs.Wrap(vfs.NewMem(), fault)))
			require.NoError(t, err)
			ix.Apply(markBatch(ix, marks[:75]...), 1)
			checkpointIndex(t, ix)
			ix.Apply(markBatch(ix, marks[75:]...), 2)
			f := ix.Freeze(tc.at)
			fault.on.Store(true)
			err = testutil.ReturnsWithin(t, "the checkpoint", func() error { return ix.Persist(f) })
			fault.on.Store(false)
			require.ErrorIs(t, err, ErrFailed)
			assert.ErrorIs(t, err, errorfs.ErrInjected, "the error must carry its cause")
			assert.Equal(t, uint64(1), ix.CheckpointLSN(), "no CHECKPOINT after the fatal")

			calls := []struct {
				name string
				call func() error
			}{
				{"Verify", func() error { _, err := ix.Verify(testNow); return err }},
				{"Scan", func() error {
					_, err := ix.NewScanner().Scan(testNow, true, nil, 1, func(Mark) bool { return true })
					return err
				}},
				{"Explain", func() error { _, err := ix.Explain(ix.Key([]byte(marks[0].id))); return err }},
				{"the next checkpoint", func() error { return ix.Persist(ix.Freeze(testNow)) }},
				{"CopyTo", func() error { return ix.CopyTo("copy") }},
				{"Compact", func() error { return ix.Compact(context.Background()) }},
				{"Close", ix.Close},
			}
			for _, c := range calls {
				assert.ErrorIs(t, testutil.ReturnsWithin(t, c.name, c.call), ErrFailed, c.name)
			}
			var sizes uint64
			testutil.ReturnsWithin(t, "the sizes", func() error {
				total, tables := ix.DiskBytes()
				sizes = total + tables + ix.KeptBytes()
				return nil
			})
			assert.Zero(t, sizes, "the sizes of a failed Pebble")
		})
	}
}

// copyFault fails, while armed, the at-th write of a copy into dir: its
// files, and the links of Pebble's Checkpoint, whose path is the source
// table's.
type copyFault struct {
	mu  sync.Mutex
	dir string
	at  int
	n   int
	hit string // the write failed, if any
}

func (c *copyFault) String() string { return "copyFault" }

func (c *copyFault) arm(dir string, at int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dir, c.at, c.n, c.hit = dir, at, 0, ""
}

// disarm stops failing writes and returns the one it failed, if any.
func (c *copyFault) disarm() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dir = ""
	return c.hit
}

func (c *copyFault) MaybeError(op errorfs.Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == "" || op.Kind.ReadOrWrite() != errorfs.OpIsWrite ||
		(op.Kind != errorfs.OpLink && op.Path != c.dir && !strings.HasPrefix(op.Path, c.dir+"/")) {
		return nil
	}
	c.n++
	if c.n-1 != c.at {
		return nil
	}
	c.hit = fmt.Sprintf("%v %s", op.Kind, op.Path)
	return errorfs.ErrInjected
}

// TestAFailedWriteOfACopyFailsTheCopyOnly fails each write of CopyTo in
// turn, those of Pebble's Checkpoint among them. Pebble returns them
// rather than calling them fatal: CopyTo returns, within a deadline,
// either the failure, naming its cause, or, where the write is one Pebble
// works around (a link it falls back to copying), a whole copy; the index
// is not failed, and later checkpoints and copies succeed.
func TestAFailedWriteOfACopyFailsTheCopyOnly(t *testing.T) {
	fault := &copyFault{}
	fs := errorfs.Wrap(vfs.NewMem(), fault)
	ix, _ := openIndex(t, testOptions(fs))
	marks := generationMarks(20, time.Minute, time.Hour)
	ix.Apply(markBatch(ix, marks[:20]...), 1)
	checkpointIndex(t, ix)
	ix.Apply(markBatch(ix, marks[20:]...), 2)
	checkpointIndex(t, ix)
	assertWhole := func(t *testing.T, dir string) {
		t.Helper()
		opts := testOptions(fs)
		opts.Existing, opts.ReadOnly = true, true
		cp, err := Open(dir, opts)
		require.NoError(t, err, "the copy in %s opens", dir)
		defer func() { assert.NoError(t, cp.Close()) }()
		for _, m := range marks {
			assertLive(t, cp, m.id, testNow, entryOf(m, 0))
		}
	}

	failed := 0
	for at := 0; ; at++ {
		dir := fmt.Sprintf("copy-%d", at)
		fault.arm(dir, at)
		err := testutil.ReturnsWithin(t, "CopyTo", func() error { return ix.CopyTo(dir) })
		hit := fault.disarm()
		require.NoError(t, ix.failed(), "failing %s", hit)
		if err == nil {
			assertWhole(t, dir)
			if hit == "" {
				break // every write of the copy done
			}
			continue
		}
		failed++
		assert.ErrorIs(t, err, errorfs.ErrInjected, "failing %s", hit)
		assert.NotErrorIs(t, err, ErrFailed, "failing %s", hit)
	}
	assert.Positive(t, failed, "copies that failed")

	ix.Apply(markBatch(ix, mark{id: "late", ttl: time.Hour}), 3)
	checkpointIndex(t, ix)
	require.NoError(t, testutil.ReturnsWithin(t, "CopyTo", func() error { return ix.CopyTo("copy-last") }))
	assertWhole(t, "copy-last")
}

// TestMarksAfterAnEarlyDropAreKept drops a generation early, as
// DropOldest does for capacity, then writes marks into it again before the
// checkpoint, as a wall clock set back makes possible: the checkpoint
// deletes the marks written before the drop and keeps those after it.
func TestMarksAfterAnEarlyDropAreKept(t *testing.T) {
	fs := vfs.NewMem()
	ix, closeIndex := openIndex(t, testOptions(fs))
	checkpointed := generationMarks(10, time.Minute)
	ix.Apply(markBatch(ix, checkpointed...), 1)
	checkpointIndex(t, ix)
	var before, after []mark
	for i := range 10 {
		before = append(before, mark{id: fmt.Sprintf("before-%d", i), ttl: time.Minute})
		after = append(after, mark{id: fmt.Sprintf("after-%d", i), ttl: time.Minute})
	}
	ix.Apply(markBatch(ix, before...), 2)

	g, ok := ix.DropOldest(testNow.Add(40 * time.Second))
	require.True(t, ok, "the minute marks' generation no longer takes marks 40 s on")
	require.Equal(t, entryOf(after[0], 0).Gen, g, "the marks after the drop go to the dropped generation")
	ix.Apply(markBatch(ix, after...), 3)
	checkpointIndex(t, ix)

	check := func(when string) {
		for _, m := range append(checkpointed, before...) {
			assertAbsent(t, ix, m.id, testNow)
		}
		for _, m := range after {
			assertLive(t, ix, m.id, testNow, entryOf(m, 0)) // from Pebble, which keeps no LSN
		}
		c, err := ix.Verify(testNow)
		require.NoError(t, err, when)
		assert.Empty(t, c.Uncovered, "%s: every mark in Pebble is covered by its filter", when)
	}
	check("after the checkpoint")
	closeIndex()
	ix, _ = openIndex(t, testOptions(fs))
	check("after reopen")
}

// TestLookupBatchAnswersAsLookup looks marks up in batches, through
// Pebble's point reads (one or two keys to read) and through one iterator
// (more), and checks every answer against Lookup's: marks in Pebble and
// in the memtable, forgotten, expired and absent IDs. LookupBatch counts
// the filter misses Lookup counts, and LookupLive none.
func TestLookupBatchAnswersAsLookup(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	marks := generationMarks(40, time.Minute, time.Hour)
	ix.Apply(markBatch(ix, marks[:50]...), 1)
	checkpointIndex(t, ix)
	ix.Apply(forgetBatch(marks[0].id, marks[45].id), 2)
	ix.Apply(markBatch(ix, marks[50:]...), 3)
	var ids []string
	for _, m := range marks {
		ids = append(ids, m.id)
	}
	for i := range 40 {
		ids = append(ids, fmt.Sprintf("absent-%d", i))
	}
	for _, tc := range []struct {
		name string
		ids  []string
		at   time.Duration
	}{
		{"one mark in Pebble", ids[1:2], 0},
		{"two marks in Pebble", ids[1:3], 0},
		{"marks in Pebble, one forgotten", ids[:40], 0},
		{"every kind", ids, 0},
		{"every kind, the minute's marks expired", ids, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := testNow.Add(tc.at)
			keys := make([]Key, len(tc.ids))
			want := make([]Result, len(tc.ids))
			misses := ix.FilterMisses()
			for i, id := range tc.ids {
				keys[i] = ix.Key([]byte(id))
				e, live := lookup(t, ix, id, now)
				want[i] = Result{e, live}
			}
			misses = ix.FilterMisses() - misses
			if tc.name == "marks in Pebble, one forgotten" {
				require.NotZero(t, misses, "a forgotten ID passes its filter")
			}
			for _, look := range []struct {
				name   string
				fn     func([]Key, ttl.Clock, []Result) error
				misses uint64
			}{
				{"LookupBatch", ix.LookupBatch, misses},
				{"LookupLive", ix.LookupLive, 0},
			} {
				out := make([]Result, len(keys))
				before := ix.FilterMisses()
				require.NoError(t, look.fn(keys, ttl.NewFake(now), out), look.name)
				assert.Equal(t, want, out, "%s answers as Lookup", look.name)
				assert.Equal(t, look.misses, ix.FilterMisses()-before, "filter misses %s counts", look.name)
			}
		})
	}
}

// TestIndexOfRowTablesOpens opens an index that the build before columnar
// tables wrote (testdata/index-rowblk: Pebble format 16, two generations,
// one mark forgotten). Its marks are read as before. Opened for writing,
// the index moves up to the columnar format, and marks checkpointed
// beside the old tables, and old tables compacted into new ones, are read
// too; opened read-only, it is left as it was.
func TestIndexOfRowTablesOpens(t *testing.T) {
	old := generationMarks(20, time.Minute, time.Hour)
	const forgotten = "1h0m0s-3"
	for _, tc := range []struct {
		name     string
		readOnly bool
		format   pebble.FormatMajorVersion
	}{
		{"read-only", true, pebble.FormatVirtualSSTables},
		{"for writing", false, pebble.FormatTableFormatV6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.CopyFS(dir, os.DirFS("testdata/index-rowblk")))
			opts := testOptions(vfs.Default)
			opts.Existing, opts.ReadOnly = true, tc.readOnly
			ix, err := Open(dir, opts)
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, ix.Close()) })
			assert.Equal(t, tc.format, ix.db.FormatMajorVersion())
			assertOld := func() {
				t.Helper()
				for _, m := range old {
					if m.id == forgotten {
						assertAbsent(t, ix, m.id, testNow)
					} else {
						assertLive(t, ix, m.id, testNow, entryOf(m, 0))
					}
				}
			}
			assertOld()
			if tc.readOnly {
				return
			}
			added := generationMarks(20, 24*time.Hour)
			ix.Apply(markBatch(ix, added...), 3)
			checkpointIndex(t, ix)
			require.NoError(t, ix.Compact(context.Background()))
			assertOld()
			for _, m := range added {
				assertLive(t, ix, m.id, testNow, entryOf(m, 0))
			}
		})
	}
}

// slowTableRemoval delays each removal of a Pebble table, as a busy disk
// does, so that Pebble's background deletion of replaced tables is still
// running when a call that started it returns.
type slowTableRemoval struct{}

func (slowTableRemoval) String() string { return "slowTableRemoval" }

func (slowTableRemoval) MaybeError(op errorfs.Op) error {
	if op.Kind == errorfs.OpRemove && strings.HasSuffix(op.Path, ".sst") {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// TestCompactLeavesNoReplacedTablesOnDisk compacts an index of several
// overlapping tables: when Compact returns, the disk holds the tables of
// the index and no others, so that a store measured right after Compact
// is measured settled.
func TestCompactLeavesNoReplacedTablesOnDisk(t *testing.T) {
	fs := errorfs.Wrap(vfs.NewMem(), slowTableRemoval{})
	ix, _ := openIndex(t, testOptions(fs))
	marks := generationMarks(50, time.Hour, 24*time.Hour)
	for i := range 4 {
		ix.Apply(markBatch(ix, marks[i*len(marks)/4:(i+1)*len(marks)/4]...), uint64(i+1))
		checkpointIndex(t, ix)
	}
	require.Greater(t, ix.db.Metrics().Table.Local.LiveCount, uint64(2), "setup: overlapping tables to compact")

	require.NoError(t, ix.Compact(context.Background()))
	names, err := fs.List(fs.PathJoin(testDir, pebbleDir))
	require.NoError(t, err)
	var onDisk int
	for _, n := range names {
		if strings.HasSuffix(n, ".sst") {
			onDisk++
		}
	}
	m := ix.db.Metrics()
	assert.Equal(t, int(m.Table.Local.LiveCount), onDisk, "tables on disk")
	assert.Zero(t, m.Table.Local.ObsoleteSize, "bytes of replaced tables")
	for _, mk := range marks {
		assertLive(t, ix, mk.id, testNow, entryOf(mk, 0))
	}
}

// TestMarkValueIsShortWhereItsGenerationAllows checkpoints marks of each
// span class into Pebble: a mark without a value of its own is stored in
// the fewest bytes its generation's span allows, one with a value, of a
// span too long or with a deadline outside its bucket in 8 and more, and
// each reads back exact to the nanosecond.
func TestMarkValueIsShortWhereItsGenerationAllows(t *testing.T) {
	const odd = 123456789 * time.Nanosecond
	bucketOf := func(g ttl.Gen) (start, last ttl.Deadline) {
		start = ttl.Deadline(g.End().UnixNano() - int64(g.Span()))
		return start, ttl.Deadline(g.End().UnixNano() - 1)
	}
	cases := []struct {
		name     string
		ttl      time.Duration
		deadline func(g ttl.Gen) ttl.Deadline // nil: testNow + ttl + odd
		value    string
		stored   int // bytes of the Pebble value
	}{
		{name: "1s, class 0", ttl: time.Second, stored: 4},
		{name: "16s, class 2", ttl: 16 * time.Second, stored: 4},
		{name: "32s, class 3", ttl: 32 * time.Second, stored: 5},
		{name: "1h, class 9", ttl: time.Hour, stored: 5},
		{name: "24h, class 14", ttl: 24 * time.Hour, stored: 6},
		{name: "400 days, class 23", ttl: 400 * 24 * time.Hour, stored: 7},
		{name: "20 years, class 27", ttl: 20 * 365 * 24 * time.Hour, stored: 8},
		{name: "with a value", ttl: time.Hour, value: "v", stored: 9},
		{name: "first nanosecond of its bucket", ttl: time.Hour, stored: 5,
			deadline: func(g ttl.Gen) ttl.Deadline { start, _ := bucketOf(g); return start }},
		{name: "last nanosecond of its bucket", ttl: time.Hour, stored: 5,
			deadline: func(g ttl.Gen) ttl.Deadline { _, last := bucketOf(g); return last }},
		{name: "before its bucket, before 1970", ttl: time.Hour, stored: 8,
			deadline: func(ttl.Gen) ttl.Deadline { return ttl.Deadline(-odd) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ix, _ := openIndex(t, testOptions(vfs.NewMem()))
			d := ttl.DeadlineOf(testNow, tc.ttl+odd)
			g := ttl.GenOf(tc.ttl, d)
			if tc.deadline != nil {
				d = tc.deadline(g)
			}
			want := Entry{Gen: g, Deadline: d}
			if tc.value != "" {
				want.Value = []byte(tc.value)
			}
			var b Batch
			b.Mark(ix.Key([]byte("id")), g, d, want.Value)
			ix.Apply(&b, 1)
			checkpointIndex(t, ix)

			v, closer, err := ix.db.Get(append(g.Append(nil), "id"...))
			require.NoError(t, err)
			assert.Len(t, v, tc.stored, "bytes stored")
			require.NoError(t, closer.Close())
			assertLive(t, ix, "id", d.Time().Add(-time.Nanosecond), want)
			assertAbsent(t, ix, "id", d.Time())
		})
	}
}

// TestValueOfAnotherLengthIsCorrupt decodes values shorter than 8 bytes
// whose length is not their generation's short width: ErrCorrupt, naming
// the length and the generation.
func TestValueOfAnotherLengthIsCorrupt(t *testing.T) {
	g := ttl.GenOf(24*time.Hour, ttl.DeadlineOf(testNow, 24*time.Hour)) // class 14: 6 bytes
	for _, n := range []int{0, 1, 5, 7} {
		_, err := decodeValue(g, make([]byte, n))
		assert.ErrorIs(t, err, ErrCorrupt, "%d bytes", n)
		assert.ErrorContains(t, err, fmt.Sprintf("value of %d bytes", n))
	}
	_, err := decodeValue(g, make([]byte, 6))
	assert.NoError(t, err, "6 bytes, the short width of class 14")
}

// TestPebbleFatalInACompactionFailsTheCallsWaitingOnIt fails the MANIFEST
// write of a compaction, which Pebble runs on a goroutine of its own and
// which it ends there (see pebbleLogger). A call of the index waiting on
// Pebble then, for the compaction or for Pebble's locks, must return
// ErrFailed, naming the cause, rather than wait for ever, or go on from
// the state the failed write left.
func TestPebbleFatalInACompactionFailsTheCallsWaitingOnIt(t *testing.T) {
	marks := generationMarks(20, time.Hour)
	// setup checkpoints tables of one generation whose keys interleave,
	// the last one with fault armed: the first goes to the bottom level,
	// the others into L0, which with automatic is then deep enough for
	// Pebble to compact it on its own.
	setup := func(t *testing.T, fault *testutil.CompactionFault, automatic bool) *Index {
		ix, err := Open(testDir, testOptions(errorfs.Wrap(vfs.NewMem(), fault)))
		require.NoError(t, err)
		tables := 3
		if automatic {
			tables = 1 + ix.pebbleOpts.L0CompactionThreshold/2
		}
		for i := range tables {
			if i == tables-1 {
				fault.On.Store(true)
			}
			var b []mark
			for j := i; j < len(marks); j += tables {
				b = append(b, marks[j])
			}
			ix.Apply(markBatch(ix, b...), uint64(i+1))
			checkpointIndex(t, ix)
		}
		return ix
	}
	assertFailed := func(t *testing.T, what string, err error) {
		t.Helper()
		assert.ErrorIs(t, err, ErrFailed, what)
		assert.ErrorIs(t, err, errorfs.ErrInjected, "%s: the error must carry its cause", what)
	}

	t.Run("Compact", func(t *testing.T) {
		ix := setup(t, &testutil.CompactionFault{}, false)
		assertFailed(t, "Compact", testutil.ReturnsWithin(t, "Compact", func() error { return ix.Compact(context.Background()) }))
		assertFailed(t, "Close", testutil.ReturnsWithin(t, "Close", ix.Close))
	})
	// duringACompaction holds an automatic compaction at its MANIFEST
	// write, runs call on another goroutine once prepare has run, lets the
	// write fail once that goroutine is in frame, and returns ix and
	// call's error.
	duringACompaction := func(t *testing.T, frame string, prepare func(*Index), call func(*Index) error) (*Index, error) {
		fault := testutil.NewHeldCompactionFault()
		ix := setup(t, fault, true)
		fault.AwaitHeld(t)
		prepare(ix)
		done := make(chan error, 1)
		go func() { done <- call(ix) }()
		testutil.GoroutineIn(t, frame)
		close(fault.Hold)
		return ix, testutil.ReturnsWithin(t, "the call", func() error { return <-done })
	}
	t.Run("Close during a compaction", func(t *testing.T) {
		_, err := duringACompaction(t, "pebble/v2.(*DB).Close", func(*Index) {}, (*Index).Close)
		assertFailed(t, "Close", err)
	})
	t.Run("checkpoint during a compaction", func(t *testing.T) {
		var f *Frozen
		ix, err := duringACompaction(t, "(*Index).Persist", func(ix *Index) {
			ix.Apply(markBatch(ix, mark{id: "late", ttl: time.Hour}), uint64(len(marks)+1))
			f = ix.Freeze(testNow)
		}, func(ix *Index) error { return ix.Persist(f) })
		assertFailed(t, "the checkpoint", err)
		assertFailed(t, "Close", testutil.ReturnsWithin(t, "Close", ix.Close))
	})
	t.Run("copy during a compaction", func(t *testing.T) {
		// The copy waits for the compaction's MANIFEST write, then
		// reads what it left.
		ix, err := duringACompaction(t, "pebble/v2.(*versionSet).logLock", func(*Index) {},
			func(ix *Index) error { return ix.CopyTo("copy") })
		assertFailed(t, "the copy", err)
		assertFailed(t, "Close", testutil.ReturnsWithin(t, "Close", ix.Close))
	})
}
