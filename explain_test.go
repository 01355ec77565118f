package dedup_test

import (
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
