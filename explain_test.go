package dedup_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// TestExplain checks what Explain reports of an ID through its life: new,
// marked in the WAL tail, checkpointed to Pebble, forgotten.
func TestExplain(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem(), Clock: clock})
	id := []byte("order-1")

	x, err := s.Explain(id)
	require.NoError(t, err)
	assert.False(t, x.Live)
	assert.Empty(t, x.FilterGenerations, "definitely new")

	storetest.MarkAll(t, s, [][]byte{id}, time.Hour)
	x, err = s.Explain(id)
	require.NoError(t, err)
	assert.True(t, x.Live)
	assert.Equal(t, clock.Now().Add(time.Hour), x.Deadline)
	require.NotNil(t, x.Unflushed)
	assert.Equal(t, x.Deadline, x.Unflushed.Deadline)
	assert.Len(t, x.FilterGenerations, 1)
	assert.Empty(t, x.Pebble)

	require.NoError(t, s.Checkpoint())
	x, err = s.Explain(id)
	require.NoError(t, err)
	assert.Nil(t, x.Unflushed)
	require.Len(t, x.Pebble, 1)
	assert.Equal(t, x.Deadline, x.Pebble[0].Deadline)

	require.NoError(t, s.Forget(id))
	x, err = s.Explain(id)
	require.NoError(t, err)
	assert.False(t, x.Live)
	require.NotNil(t, x.Unflushed)
	assert.True(t, x.Unflushed.Forgotten, "the forget decides over the version in Pebble")
	assert.Len(t, x.Pebble, 1)

	_, err = s.Explain(nil)
	assert.ErrorIs(t, err, dedup.ErrEmptyID)
}

// TestScan checks that Scan yields each live ID once, wherever its mark
// is (WAL tail or Pebble, one or several versions), and with all also the
// versions that are not live.
func TestScan(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem(), Clock: clock, SlidingTTL: true})

	storetest.MarkAll(t, s, storetest.IDs("pebble", 5), time.Hour)
	storetest.MarkAll(t, s, storetest.IDs("brief", 3), time.Minute)
	require.NoError(t, s.Checkpoint())
	storetest.MarkAll(t, s, storetest.IDs("tail", 5), time.Hour)
	clock.Advance(2 * time.Minute)                               // the brief marks expire
	_, err := s.CheckAndMark([]byte("pebble-000"), 24*time.Hour) // slides: a second version
	require.NoError(t, err)
	require.NoError(t, s.Forget([]byte("tail-004")))

	live := map[string]int{}
	require.NoError(t, s.Scan(nil, false, func(m dedup.Mark) bool {
		assert.True(t, m.Live)
		live[string(m.ID)]++
		return true
	}))
	assert.Len(t, live, 9, "5 in Pebble and 4 in the WAL tail are live")
	for id, n := range live {
		assert.Equal(t, 1, n, "%s yielded once", id)
	}
	assert.NotContains(t, live, "brief-000")
	assert.NotContains(t, live, "tail-004")

	var versions, notLive int
	require.NoError(t, s.Scan([]byte("pebble-000"), true, func(m dedup.Mark) bool {
		versions++
		if !m.Live {
			notLive++
		}
		return true
	}))
	assert.Equal(t, 2, versions, "the slid mark and the version it superseded")
	assert.Equal(t, 1, notLive)

	n := 0
	require.NoError(t, s.Scan(nil, false, func(dedup.Mark) bool { n++; return n < 3 }))
	assert.Equal(t, 3, n, "Scan stops when fn says so")
}

// halves marks ids for ttl, every other one checkpointed to Pebble and
// the rest left in the WAL tail, so that a scan in key order alternates
// between the two.
func halves(t *testing.T, s *dedup.Store, ids [][]byte, ttl time.Duration) {
	t.Helper()
	var even, odd [][]byte
	for i, id := range ids {
		if i%2 == 0 {
			even = append(even, id)
		} else {
			odd = append(odd, id)
		}
	}
	storetest.MarkAll(t, s, even, ttl)
	require.NoError(t, s.Checkpoint())
	storetest.MarkAll(t, s, odd, ttl)
}

// TestScanOfManyStepsYieldsEachMarkOnceInOrder checks that a Scan of many
// more marks than one step reads yields each once, in ID order for marks
// of one generation, whether a mark is in Pebble or the WAL tail.
func TestScanOfManyStepsYieldsEachMarkOnceInOrder(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem(), Clock: clock})
	ids := storetest.IDs("id", 3*dedup.ScanChunk+100)
	halves(t, s, ids, time.Hour) // one deadline: one generation

	var got [][]byte
	require.NoError(t, s.Scan(nil, false, func(m dedup.Mark) bool {
		got = append(got, m.ID)
		return true
	}))
	require.Len(t, got, len(ids))
	for i := 1; i < len(got); i++ {
		require.Negative(t, bytes.Compare(got[i-1], got[i]), "%s before %s: in order, each once", got[i-1], got[i])
	}
}

// TestScanHoldsAtMostOneStep checks that Scan reads at most one step of
// marks ahead of fn: the callback forgets every mark at its first call,
// and only the marks Scan already held still come.
func TestScanHoldsAtMostOneStep(t *testing.T) {
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem()})
	ids := storetest.IDs("id", 3*dedup.ScanChunk)
	halves(t, s, ids, 0)

	yielded := 0
	require.NoError(t, s.Scan(nil, false, func(dedup.Mark) bool {
		if yielded++; yielded == 1 {
			for _, id := range ids {
				require.NoError(t, s.Forget(id))
			}
		}
		return true
	}))
	assert.LessOrEqual(t, yielded, dedup.ScanChunk, "the marks held when the first came")
	assert.Positive(t, yielded)
}

// TestScanWithWritesBetweenStepsYieldsEachStayingMarkOnce checks that
// writes and checkpoints between Scan's steps, which move marks from the
// WAL tail to Pebble, neither skip nor repeat a mark that is there for the
// whole Scan, and repeat no other: marks written before and after the
// scan's position, by fn and by another goroutine, and forgotten.
func TestScanWithWritesBetweenStepsYieldsEachStayingMarkOnce(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem(), Clock: clock})
	stay := storetest.IDs("m", 3*dedup.ScanChunk)
	halves(t, s, stay, time.Hour)

	churned := make(chan error, 1)
	go func() { // marks, forgets and checkpoints while Scan runs
		churned <- churn(s, 2000)
	}()

	seen := map[string]int{}
	var last []byte
	n := 0
	err := s.Scan(nil, false, func(m dedup.Mark) bool {
		seen[string(m.ID)]++
		assert.Negative(t, bytes.Compare(last, m.ID), "%s after %s", m.ID, last)
		last = m.ID
		if n++; n%1000 == 0 {
			if err := s.Checkpoint(); err != nil {
				t.Errorf("Checkpoint in Scan: %v", err)
			}
		}
		if bytes.HasPrefix(m.ID, []byte("m-")) { // one before the position and one after
			_, err := s.CheckAndMarkBatch([][]byte{append([]byte("b-"), m.ID...), append([]byte("y-"), m.ID...)}, time.Hour)
			if err != nil {
				t.Errorf("CheckAndMarkBatch in Scan: %v", err)
			}
		}
		return true
	})
	require.NoError(t, err)
	require.NoError(t, <-churned)
	for _, id := range stay {
		assert.Equal(t, 1, seen[string(id)], "%s once", id)
	}
	for id, k := range seen {
		assert.Equal(t, 1, k, "%s at most once", id)
	}
}

// churn makes n rounds of writes to s: two marks, one before and one
// after the IDs of TestScanWithWritesBetweenStepsYieldsEachStayingMarkOnce,
// a forget of one of them, and every hundred rounds a checkpoint.
func churn(s *dedup.Store, n int) error {
	for i := range n {
		ids := [][]byte{fmt.Appendf(nil, "a-%d", i), fmt.Appendf(nil, "z-%d", i)}
		if _, err := s.CheckAndMarkBatch(ids, time.Hour); err != nil {
			return err
		}
		if err := s.Forget(ids[i%2]); err != nil {
			return err
		}
		if i%100 == 0 {
			if err := s.Checkpoint(); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestScanCallbackMayCallTheStore checks that fn may write to the store
// it scans, Forget what it sees and mark more, without a deadlock, and
// that Close is not held up afterwards.
func TestScanCallbackMayCallTheStore(t *testing.T) {
	s, err := dedup.Open("store", &dedup.Options{FS: vfs.NewMem()})
	require.NoError(t, err)
	storetest.MarkAll(t, s, storetest.IDs("old", 50), 0)
	require.NoError(t, s.Checkpoint())
	storetest.MarkAll(t, s, storetest.IDs("tail", 50), 0)

	done := make(chan error, 1)
	yielded := 0
	go func() {
		done <- s.Scan(nil, false, func(m dedup.Mark) bool {
			yielded++
			if err := s.Forget(m.ID); err != nil {
				t.Errorf("Forget(%q) in Scan: %v", m.ID, err)
			}
			if _, err := s.CheckAndMark(append([]byte("new-"), m.ID...), 0); err != nil {
				t.Errorf("CheckAndMark in Scan: %v", err)
			}
			return true
		})
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Scan deadlocked on a callback that writes to the store")
	}
	assert.Equal(t, 100, yielded, "the marks at the start of the scan, once each")
	assert.Zero(t, storetest.SeenAll(t, s, storetest.IDs("old", 50))+storetest.SeenAll(t, s, storetest.IDs("tail", 50)), "every ID forgotten")
	assert.Equal(t, 50, storetest.SeenAll(t, s, storetest.IDs("new-old", 50)))

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Close blocked after Scan")
	}
}

// TestScanAllAfterACheckpointFailedPastItsIngestYieldsEachMarkOnce fails a
// checkpoint after it has copied its frozen memtable into Pebble, which
// keeps the memtable in the read path beside the copy: Scan with all
// yields each mark once, not again as a dead version.
func TestScanAllAfterACheckpointFailedPastItsIngestYieldsEachMarkOnce(t *testing.T) {
	fault := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.Contains(op.Path, "/filters/") {
			return errorfs.ErrInjected
		}
		return nil
	})}
	s, err := dedup.Open("store", &dedup.Options{FS: errorfs.Wrap(vfs.NewMem(), fault)})
	require.NoError(t, err)
	defer s.Close()
	for _, id := range []string{"a", "b", "c"} {
		require.True(t, checkAndMark(t, s, id, time.Hour))
	}
	fault.On()
	require.Error(t, s.Checkpoint(), "setup: the checkpoint fails after its ingest")

	got := map[string]int{}
	require.NoError(t, s.Scan(nil, true, func(m dedup.Mark) bool { got[string(m.ID)]++; return true }))
	assert.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1}, got)
}
