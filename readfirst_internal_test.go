package dedup

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDuplicatesAreAnsweredUnderTheSharedLock checks that, once a batch
// has found its IDs live, the next batch of duplicates needs only the
// shared lock: it is answered while another reader holds it, so callers
// reading cold marks from Pebble do not wait for each other.
func TestDuplicatesAreAnsweredUnderTheSharedLock(t *testing.T) {
	s, err := Open(t.TempDir(), &Options{Sync: SyncNone})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	ids := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	_, err = s.CheckAndMarkBatch(ids, 0)
	require.NoError(t, err)
	require.NoError(t, s.Checkpoint())
	_, err = s.CheckAndMarkBatch(ids, 0)
	require.NoError(t, err, "the first batch of duplicates")

	s.mu.RLock()
	answered := make(chan []bool, 1)
	go func() {
		isNew, err := s.CheckAndMarkBatch(ids, 0)
		assert.NoError(t, err)
		answered <- isNew
	}()
	select {
	case isNew := <-answered:
		s.mu.RUnlock()
		assert.Equal(t, []bool{false, false, false}, isNew)
	case <-time.After(10 * time.Second):
		s.mu.RUnlock()
		<-answered
		t.Fatal("a batch of duplicates waited for the exclusive lock")
	}
}
