package dedup_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/backendtest"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// TestBackendContract runs the contract that every dedup.Backend keeps
// against the embedded Store.
func TestBackendContract(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) dedup.Backend {
		s, _ := storetest.Open(t, nil)
		return s
	})
}

// waitWatch is a context that tells, by closing waiting, when a call
// first asks for its Done channel: the store asks for it only once it
// is about to wait on it.
type waitWatch struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newWaitWatch(ctx context.Context) *waitWatch {
	return &waitWatch{Context: ctx, waiting: make(chan struct{})}
}

func (c *waitWatch) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// TestCancelWhileHeldBackByTheMemtableHasNoEffect cancels writes held back
// at twice the memtable's bound while the checkpoint that would let them
// go is still held: each returns its context's error at once, and once
// the checkpoint ends the store holds none of what they would have
// written.
func TestCancelWhileHeldBackByTheMemtableHasNoEffect(t *testing.T) {
	const memtable = 100
	gate := newCheckpointGate()
	s := storetest.OpenAt(t, "store", &dedup.Options{FS: gate, MemtableMarks: memtable})
	letGo := sync.OnceFunc(func() { close(gate.open) })
	t.Cleanup(letGo) // before Close, which waits for the checkpoint
	begun, err := s.Begin([]byte("begun"), nil, time.Minute, time.Hour)
	require.NoError(t, err)
	holdBackWriters(t, s, gate, memtable)

	writes := []struct {
		name  string
		write func(context.Context) error
	}{
		{"CheckAndMarkBatch", func(ctx context.Context) error { return markRangeContext(ctx, s, "held", 0, 10) }},
		{"CheckAndMark", func(ctx context.Context) error {
			_, err := s.CheckAndMarkContext(ctx, []byte("held-one"), time.Hour)
			return err
		}},
		{"Forget", func(ctx context.Context) error { return s.ForgetContext(ctx, []byte("second-0")) }},
		{"Begin", func(ctx context.Context) error {
			_, err := s.BeginContext(ctx, []byte("held-key"), nil, time.Minute, time.Hour)
			return err
		}},
		{"Complete", func(ctx context.Context) error {
			return s.CompleteContext(ctx, []byte("begun"), begun.Token, []byte("result"))
		}},
		{"Release", func(ctx context.Context) error { return s.ReleaseContext(ctx, []byte("begun"), begun.Token) }},
	}
	for _, w := range writes {
		ctx, cancel := context.WithCancel(context.Background())
		watch := newWaitWatch(ctx)
		done := make(chan error, 1)
		go func() { done <- w.write(watch) }()
		<-watch.waiting
		cancel()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, context.Canceled, "%s: a write held back returns its context's error", w.name)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: a cancelled write held back by the memtable did not return", w.name)
		}
	}

	letGo()
	require.NoError(t, s.Checkpoint())
	for id, want := range map[string]bool{"held-0": false, "held-one": false, "held-key": false, "second-0": true} {
		assert.Equal(t, want, seen(t, s, id), "%s: a cancelled write changes nothing", id)
	}
	r, ok, err := s.Record([]byte("begun"))
	require.NoError(t, err)
	require.True(t, ok, "the begun key keeps its record")
	assert.Equal(t, dedup.StateInProgress, r.State, "neither completed nor released")
	assert.Equal(t, begun.Token, r.Token)
	isNew, err := s.CheckAndMark([]byte("held-one"), time.Hour)
	require.NoError(t, err)
	assert.True(t, isNew, "the store takes writes once the checkpoint has ended")
}
