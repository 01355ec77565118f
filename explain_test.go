package dedup_test

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/ttl"
)

// TestExplain checks what Explain reports of an ID through its life: new,
// marked in the WAL tail, checkpointed to Pebble, forgotten.
func TestExplain(t *testing.T) {
	clock := ttl.NewFake(time.Unix(1_700_000_000, 0))
	s, err := dedup.Open("store", &dedup.Options{FS: vfs.NewMem(), Clock: clock})
	require.NoError(t, err)
	defer s.Close()
	id := []byte("order-1")

	x, err := s.Explain(id)
	require.NoError(t, err)
	assert.False(t, x.Live)
	assert.Empty(t, x.FilterGenerations, "definitely new")

	markAll(t, s, [][]byte{id}, time.Hour)
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
