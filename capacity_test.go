package dedup_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/bench"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// TestMaxMarksFailsClosed checks the capacity bound: a write past MaxMarks
// fails whole with ErrFull, duplicates are still answered, and writes
// resume once the marks' generation has expired and been dropped.
func TestMaxMarksFailsClosed(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem(), Clock: clock, MaxMarks: 100})

	ids := storetest.IDs("cap", 150)
	storetest.MarkAll(t, s, ids[:100], time.Minute)

	_, err := s.CheckAndMark(ids[100], time.Minute)
	assert.ErrorIs(t, err, dedup.ErrFull)
	_, err = s.CheckAndMarkBatch(ids[100:110], time.Minute)
	assert.ErrorIs(t, err, dedup.ErrFull)
	assert.Zero(t, storetest.SeenAll(t, s, ids[100:]), "a refused write marks nothing")

	isNew, err := s.CheckAndMark(ids[0], time.Minute)
	require.NoError(t, err, "a duplicate needs no room")
	assert.False(t, isNew)

	clock.Advance(2 * time.Minute)
	require.NoError(t, s.Checkpoint(), "drops the expired generation")
	storetest.MarkAll(t, s, ids[100:], time.Minute)
}

// TestSlidingTTL checks that with SlidingTTL a duplicate extends its mark,
// across a checkpoint and a reopen, and that without it a duplicate does
// not.
func TestSlidingTTL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sliding bool
		liveAt  time.Duration // after the first mark; the duplicate comes at 50s
	}{
		{"off", false, 59 * time.Second},
		{"on", true, 109 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := testutil.Epoch
			clock := ttl.NewFake(start)
			opts := &dedup.Options{FS: vfs.NewMem(), Clock: clock, SlidingTTL: tc.sliding}
			s, err := dedup.Open("store", opts)
			require.NoError(t, err)
			id := []byte("slide")
			storetest.MarkAll(t, s, [][]byte{id}, time.Minute)
			require.NoError(t, s.Checkpoint(), "the first mark goes to Pebble")

			clock.Set(start.Add(50 * time.Second))
			isNew, err := s.CheckAndMark(id, time.Minute)
			require.NoError(t, err)
			assert.False(t, isNew)
			require.NoError(t, s.Checkpoint())
			require.NoError(t, s.Close())

			s = storetest.OpenAt(t, "store", opts)
			clock.Set(start.Add(tc.liveAt))
			assert.Equal(t, 1, storetest.SeenAll(t, s, [][]byte{id}), "live at %v", tc.liveAt)
			clock.Set(start.Add(tc.liveAt + time.Second))
			assert.Zero(t, storetest.SeenAll(t, s, [][]byte{id}), "expired at %v", tc.liveAt+time.Second)
		})
	}
}

// TestMaxMarksDropOldest checks the other policy: at the bound the oldest
// generation that takes no new marks is dropped, its marks are new again
// and stay so across reopen; while every generation still takes marks,
// the write fails with ErrFull.
func TestMaxMarksDropOldest(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{FS: vfs.NewMem(), Clock: clock, MaxMarks: 100, WhenFull: dedup.DropOldest}
	s, err := dedup.Open("store", opts)
	require.NoError(t, err)

	old, fresh := storetest.IDs("old", 100), storetest.IDs("fresh", 50)
	storetest.MarkAll(t, s, old, time.Minute)
	_, err = s.CheckAndMark(fresh[0], time.Minute)
	assert.ErrorIs(t, err, dedup.ErrFull, "the only generation still takes marks: nothing to drop")

	clock.Advance(40 * time.Second) // the old marks' generation no longer takes marks, though they live
	require.Equal(t, len(old), storetest.SeenAll(t, s, old))
	storetest.MarkAll(t, s, fresh, time.Minute)
	assert.Zero(t, storetest.SeenAll(t, s, old), "the oldest generation was dropped early")
	assert.Equal(t, len(fresh), storetest.SeenAll(t, s, fresh))
	require.NoError(t, s.Checkpoint(), "the drop is durable from the checkpoint it requests")
	require.NoError(t, s.Close())

	s = storetest.OpenAt(t, "store", opts)
	assert.Zero(t, storetest.SeenAll(t, s, old), "the early drop is durable")
	assert.Equal(t, len(fresh), storetest.SeenAll(t, s, fresh))
}

// TestSlidingHotIDNeedsNoRoom checks that extending a live mark is not a
// new mark: a hot ID slid many times neither fills MaxMarks nor grows the
// filters.
func TestSlidingHotIDNeedsNoRoom(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem(), Clock: clock, MaxMarks: 10, SlidingTTL: true})
	hot := []byte("hot")
	storetest.MarkAll(t, s, [][]byte{hot}, time.Hour)
	for i := range 100 {
		clock.Advance(time.Second)
		isNew, err := s.CheckAndMark(hot, time.Hour)
		require.NoError(t, err, "extension %d", i)
		require.False(t, isNew)
	}
	var marks uint64
	for _, g := range s.Stats().Generations {
		marks += g.Marks
	}
	assert.Equal(t, uint64(1), marks, "the extensions stay in the hot ID's generation and count once")
}

// TestEffectiveWindow checks the effective window stat against the age of
// the oldest mark still seen, which it may exceed by no more than the time
// between two writes: as marks age in, in the steady state, across a
// reopen that replays the WAL and one that loads the filter snapshots,
// and when DropOldest forgets the oldest marks early.
func TestEffectiveWindow(t *testing.T) {
	const (
		ttlOf   = time.Minute
		step    = 5 * time.Second
		perStep = 5
	)
	fs := vfs.NewMem()
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{FS: fs, Clock: clock, MaxMarks: 60, WhenFull: dedup.DropOldest}
	s, err := dedup.Open("store", opts)
	require.NoError(t, err)
	defer func() { s.Close() }()
	assert.Zero(t, s.Stats().EffectiveWindow, "an empty store remembers nothing")

	var ids [][]byte
	var writes []time.Time
	oldestLiveAge := func() time.Duration {
		for i, id := range ids {
			seen, err := s.Seen(id)
			require.NoError(t, err)
			if seen {
				return clock.Now().Sub(writes[i])
			}
		}
		return 0
	}
	check := func(when string) time.Duration {
		t.Helper()
		age, window := oldestLiveAge(), s.Stats().EffectiveWindow
		require.GreaterOrEqual(t, window, age, "%s: the window is below the oldest live mark's age", when)
		require.LessOrEqual(t, window, age+step, "%s: the window is more than one write older than the oldest live mark", when)
		return window
	}
	reopen := func() {
		require.NoError(t, s.Close())
		s, err = dedup.Open("store", opts)
		require.NoError(t, err)
	}

	dropped := false
	for n := range 40 {
		batch := storetest.IDs(fmt.Sprintf("w%02d", n), perStep)
		storetest.MarkAll(t, s, batch, ttlOf)
		ids, writes = append(ids, batch...), append(writes, slices.Repeat([]time.Time{clock.Now()}, perStep)...)
		clock.Advance(step)
		window := check(fmt.Sprintf("step %d", n))
		if window < ttlOf && clock.Now().Sub(writes[0]) > ttlOf {
			dropped = true // DropOldest made room: the store forgets early
		}
		switch n {
		case 10:
			reopen() // the write times come back from the WAL
			check("after a reopen that replays the WAL")
		case 20:
			require.NoError(t, s.Checkpoint())
			reopen() // ... and from the filter snapshots
			check("after a reopen from a checkpoint")
		}
		require.NoError(t, s.Checkpoint())
	}
	assert.True(t, dropped, "MaxMarks never made DropOldest shrink the window")
}

// baseDiskBytes returns what a store in dir uses on disk with one mark:
// mostly its WAL segment, preallocated up to SegmentSize. Once records
// fill half of it, the WAL's spare segment adds SegmentSize more.
func baseDiskBytes(t *testing.T, dir string, opts *dedup.Options) int64 {
	t.Helper()
	s, err := dedup.Open(dir, opts)
	require.NoError(t, err)
	defer s.Close()
	storetest.MarkAll(t, s, storetest.IDs("base", 1), time.Second)
	require.NoError(t, s.Checkpoint())
	st := s.Stats()
	return int64(st.IndexDiskBytes) + st.WALBytes
}

// fillDisk writes batches of new marks with a checkpoint after each, which
// measures the disk, until one fails; it returns that error and the IDs
// written before it.
func fillDisk(t *testing.T, s *dedup.Store, prefix string, d time.Duration) ([][]byte, error) {
	t.Helper()
	var written [][]byte
	for n := range 1000 {
		batch := storetest.IDs(fmt.Sprintf("%s%03d", prefix, n), 500)
		if _, err := s.CheckAndMarkBatch(batch, d); err != nil {
			return written, err
		}
		written = append(written, batch...)
		require.NoError(t, s.Checkpoint())
	}
	t.Fatal("the store never reached MaxDiskBytes")
	return nil, nil
}

// TestMaxDiskBytesFailsClosed checks the disk bound: once a checkpoint
// measures the store at MaxDiskBytes, writes of new marks fail whole with
// ErrFull while duplicates are still answered, and they resume once the
// marks have expired and their space is given back.
func TestMaxDiskBytesFailsClosed(t *testing.T) {
	dir := t.TempDir()
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock, SegmentSize: 1 << 20}
	opts.MaxDiskBytes = baseDiskBytes(t, dir, opts) + opts.SegmentSize + 256<<10
	s := storetest.OpenAt(t, dir, opts)
	written, err := fillDisk(t, s, "full", time.Minute)
	require.ErrorIs(t, err, dedup.ErrFull)
	st := s.Stats()
	assert.GreaterOrEqual(t, int64(st.IndexDiskBytes)+st.WALBytes, opts.MaxDiskBytes, "ErrFull below the bound")
	assert.Equal(t, len(written), storetest.SeenAll(t, s, written), "nothing is dropped under FailClosed")
	isNew, err := s.CheckAndMark(written[0], time.Minute)
	require.NoError(t, err, "a duplicate needs no room")
	assert.False(t, isNew)

	clock.Advance(2 * time.Minute)
	require.NoError(t, s.Checkpoint(), "drops the expired generations and compacts their range")
	storetest.MarkAll(t, s, storetest.IDs("after", 500), time.Minute)
	assert.Eventually(t, func() bool {
		st := s.Stats()
		return int64(st.IndexDiskBytes)+st.WALBytes < opts.MaxDiskBytes
	}, 10*time.Second, 10*time.Millisecond, "the expired marks' space never came back")
}

// TestMaxDiskBytesDropOldest checks the other policy at the disk bound: the
// oldest closed generation is dropped early, the space comes back, writes
// go on, and the effective window shows how much shorter it is than the
// TTL.
func TestMaxDiskBytesDropOldest(t *testing.T) {
	dir := t.TempDir()
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{Clock: clock, SegmentSize: 1 << 20, WhenFull: dedup.DropOldest}
	opts.MaxDiskBytes = baseDiskBytes(t, dir, opts) + opts.SegmentSize + 256<<10
	s := storetest.OpenAt(t, dir, opts)
	const ttlOf = time.Hour
	var gens [][][]byte // the IDs written in each 20-minute step, oldest first
	// The narrowest window once a TTL's worth of steps has passed, when
	// it is the TTL unless generations were dropped early: whether the
	// last steps still drop depends on the bytes a mark takes.
	narrowest := ttlOf
	for step := range 12 {
		var ids [][]byte
		for n := range 10 {
			batch := storetest.IDs(fmt.Sprintf("s%02d-%02d", step, n), 500)
			storetest.MarkAll(t, s, batch, ttlOf)
			ids = append(ids, batch...)
			require.NoError(t, s.Checkpoint())
			if step >= 3 {
				narrowest = min(narrowest, s.Stats().EffectiveWindow)
			}
		}
		gens = append(gens, ids)
		clock.Advance(ttlOf / 3)
	}
	st := s.Stats()
	assert.Less(t, int64(st.IndexDiskBytes)+st.WALBytes, opts.MaxDiskBytes+256<<10,
		"the store stays within the bound plus what one checkpoint writes")
	assert.Zero(t, storetest.SeenAll(t, s, gens[7]), "older marks were dropped early")
	assert.Equal(t, len(gens[11]), storetest.SeenAll(t, s, gens[11]), "the newest marks are kept")
	assert.Less(t, narrowest, ttlOf, "the effective window shows the early drops")
	t.Logf("effective window %v at the narrowest, %v at the end, against a TTL of %v; %d bytes on disk, bound %d",
		narrowest, st.EffectiveWindow, ttlOf, int64(st.IndexDiskBytes)+st.WALBytes, opts.MaxDiskBytes)
}

// compactionGate holds back the first table a Pebble compaction creates
// until it is opened, so a test can act while Compact runs.
type compactionGate struct {
	vfs.FS
	once    sync.Once
	reached chan struct{} // closed when a compaction creates its first table
	open    chan struct{} // closed by the test to let it go on
}

func (g *compactionGate) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if category == "pebble-compaction" {
		g.once.Do(func() { close(g.reached) })
		<-g.open
	}
	return g.FS.Create(name, category)
}

// TestMemtableStaysBoundedWhileCompacting writes many memtables' worth of
// marks while Compact's Pebble compaction runs: checkpoints go on
// meanwhile, so the memtable never passes twice its bound plus the batch
// that crossed it.
func TestMemtableStaysBoundedWhileCompacting(t *testing.T) {
	const memtable = 1000
	gate := &compactionGate{FS: vfs.NewMem(), reached: make(chan struct{}), open: make(chan struct{})}
	s, _ := storetest.Open(t, &dedup.Options{FS: gate, MemtableMarks: memtable})
	write := func(prefix string, n int) {
		for i := 0; i < n; i += 100 {
			batch := make([][]byte, 100)
			for j := range batch {
				batch[j] = fmt.Appendf(nil, "%s-%d", prefix, i+j)
			}
			_, err := s.CheckAndMarkBatch(batch, time.Hour)
			require.NoError(t, err)
		}
	}
	write("before", 3*memtable)
	require.NoError(t, s.Checkpoint())
	write("between", 3*memtable)
	require.NoError(t, s.Checkpoint())

	compacted := make(chan error, 1)
	go func() { compacted <- s.Compact(context.Background()) }()
	select {
	case <-gate.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("Compact started no Pebble compaction")
	}
	most := 0
	for i := range 10 {
		write(fmt.Sprintf("during-%d", i), memtable)
		most = max(most, s.Stats().MemtableMarks)
	}
	bound := 2*memtable + 100 - 1 // one writer, batches of 100
	assert.LessOrEqual(t, most, bound, "memtable marks while Compact ran: got %d; want at most %d", most, bound)
	close(gate.open)
	require.NoError(t, <-compacted)
}

// checkpointGate holds back the first table a checkpoint writes until it
// is opened, then fails that checkpoint's tables, and every later one's,
// if fail is set.
type checkpointGate struct {
	vfs.FS
	once    sync.Once
	reached chan struct{} // closed when a checkpoint writes its first table
	open    chan struct{} // closed by the test to let it go on
	fail    atomic.Bool
}

func newCheckpointGate() *checkpointGate {
	return &checkpointGate{FS: vfs.NewMem(), reached: make(chan struct{}), open: make(chan struct{})}
}

func (g *checkpointGate) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if strings.HasPrefix(g.PathBase(name), "ingest-") {
		g.once.Do(func() { close(g.reached) })
		<-g.open
		if g.fail.Load() {
			return nil, fmt.Errorf("creating %s: %w", name, errorfs.ErrInjected)
		}
	}
	return g.FS.Create(name, category)
}

// holdBackWriters fills s's memtable, of the given bound, while the
// checkpoint gate holds the checkpoint it requested, to twice its bound:
// from then on writes are held back until a checkpoint ends.
func holdBackWriters(t *testing.T, s *dedup.Store, gate *checkpointGate, memtable int) {
	t.Helper()
	require.NoError(t, markRange(s, "first", 0, memtable))
	select {
	case <-gate.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("no checkpoint started")
	}
	for i := 0; s.Stats().MemtableMarks < 2*memtable; i += 10 {
		require.NoError(t, markRange(s, "second", i, i+10))
	}
}

// markRange marks the IDs prefix-lo to prefix-(hi-1), ten to a batch.
func markRange(s *dedup.Store, prefix string, lo, hi int) error {
	return markRangeContext(context.Background(), s, prefix, lo, hi)
}

func markRangeContext(ctx context.Context, s *dedup.Store, prefix string, lo, hi int) error {
	for i := lo; i < hi; i += 10 {
		batch := make([][]byte, 10)
		for j := range batch {
			batch[j] = fmt.Appendf(nil, "%s-%d", prefix, i+j)
		}
		if _, err := s.CheckAndMarkBatchContext(ctx, batch, time.Hour); err != nil {
			return fmt.Errorf("marking %s-%d to %s-%d: %w", prefix, i, prefix, i+9, err)
		}
	}
	return nil
}

// TestWritersHeldBackByTheMemtableSeeAFailedCheckpoint holds writers back
// at twice the memtable's bound while a checkpoint runs, then fails that
// checkpoint: the writers get its failure, having written nothing, rather
// than wait for a checkpoint that a failed store never runs.
func TestWritersHeldBackByTheMemtableSeeAFailedCheckpoint(t *testing.T) {
	const memtable = 100
	gate := newCheckpointGate()
	s, err := dedup.Open("store", &dedup.Options{FS: gate, MemtableMarks: memtable})
	require.NoError(t, err)
	t.Cleanup(func() { assert.ErrorIs(t, s.Close(), errorfs.ErrInjected, "Close returns the failure") })
	holdBackWriters(t, s, gate, memtable)

	writers := []func(context.Context) error{
		func(ctx context.Context) error { return markRangeContext(ctx, s, "held", 0, 10) },
		func(ctx context.Context) error { return s.ForgetContext(ctx, []byte("second-0")) },
		func(ctx context.Context) error {
			_, err := s.BeginContext(ctx, []byte("held-key"), nil, time.Minute, time.Hour)
			return err
		},
	}
	held := make(chan error, len(writers))
	for _, w := range writers {
		ctx := newWaitWatch(context.Background())
		go func() { held <- w(ctx) }()
		<-ctx.waiting
	}
	gate.fail.Store(true)
	close(gate.open)
	for range writers {
		select {
		case err := <-held:
			assert.ErrorIs(t, err, errorfs.ErrInjected, "a writer held back gets the checkpoint's failure")
		case <-time.After(30 * time.Second):
			t.Fatal("a writer held back by the memtable's bound never returned")
		}
	}
	for id, want := range map[string]bool{"held-0": false, "held-key": false, "second-0": true} {
		seen, err := s.Seen([]byte(id))
		require.NoError(t, err)
		assert.Equal(t, want, seen, "%s: a refused write changes nothing", id)
	}
}

// TestIdleStoreKeepsLittleWAL checks the WAL's disk, preallocated space
// included, with the default segment sizes: a new store's is at most 8
// MiB; after writes fast enough to grow its segments, a checkpoint of
// every mark leaves at most 16 MiB.
func TestIdleStoreKeepsLittleWAL(t *testing.T) {
	s, dir := storetest.Open(t, &dedup.Options{Sync: dedup.SyncNone})
	walDisk := func() int64 { return bench.DiskUsage(filepath.Join(dir, "wal")) }
	assert.LessOrEqual(t, walDisk(), int64(8<<20), "a new store")

	for i := range 300 {
		storetest.MarkAll(t, s, storetest.IDs(fmt.Sprintf("idle-%03d", i), 1024), time.Hour)
	}
	require.Greater(t, s.Stats().WALBytes, int64(8<<20), "the writes grew the segments")
	require.NoError(t, s.Checkpoint())
	assert.LessOrEqual(t, walDisk(), int64(16<<20), "an idle store, checkpointed")
}
