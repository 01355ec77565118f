package aio_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/aio"
)

// newSyncer returns a Syncer closed at the end of the test, or skips
// where the platform has none (the callers then sync synchronously).
func newSyncer(t *testing.T) *aio.Syncer {
	t.Helper()
	s, err := aio.New()
	if errors.Is(err, aio.ErrUnsupported) {
		t.Skipf("no native AIO here: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSyncCompletes(t *testing.T) {
	s := newSyncer(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	require.NoError(t, err)
	defer f.Close()
	var got []aio.Completion
	for tag := uint64(1); tag <= 3; tag++ {
		_, err := f.WriteAt([]byte("record"), int64(tag)*4096)
		require.NoError(t, err)
		require.NoError(t, s.Start(f.Fd(), tag))
		got, err = s.Wait(got)
		require.NoError(t, err)
	}
	require.Equal(t, []aio.Completion{{Tag: 1}, {Tag: 2}, {Tag: 3}}, got)
}

func TestSyncOfAPipeFails(t *testing.T) {
	s := newSyncer(t)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	// A pipe has no fsync: the kernel refuses the request at submission.
	require.Error(t, s.Start(w.Fd(), 1))
}

func TestCloseEndsWait(t *testing.T) {
	s, err := aio.New()
	if errors.Is(err, aio.ErrUnsupported) {
		t.Skipf("no native AIO here: %v", err)
	}
	require.NoError(t, err)
	// A sync started first: the eventfd must stay pollable for Close to
	// end a Wait.
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, s.Start(f.Fd(), 1))
	got, err := s.Wait(nil)
	require.NoError(t, err)
	require.Equal(t, []aio.Completion{{Tag: 1}}, got)

	done := make(chan error, 1)
	go func() {
		_, err := s.Wait(nil)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let Wait park
	require.NoError(t, s.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, aio.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	require.ErrorIs(t, s.Start(0, 1), aio.ErrClosed)
	require.NoError(t, s.Close(), "closing twice is fine")
}
