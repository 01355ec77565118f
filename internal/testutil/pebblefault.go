package testutil

import (
	"bytes"
	"path"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"
)

// CompactionFault is an errorfs injector that fails, once On, the MANIFEST
// writes of Pebble's compactions, which run on Pebble's own goroutines:
// Pebble calls that fatal there. With Hold set (see NewHeldCompactionFault),
// the first such write waits until Hold is closed.
type CompactionFault struct {
	On   atomic.Bool
	Hold chan struct{}
	held chan struct{}
	once sync.Once
}

// NewHeldCompactionFault returns a CompactionFault whose first failing
// write waits for Hold to close.
func NewHeldCompactionFault() *CompactionFault {
	return &CompactionFault{Hold: make(chan struct{}), held: make(chan struct{})}
}

func (c *CompactionFault) String() string { return "CompactionFault" }

// MaybeError implements errorfs.Injector.
func (c *CompactionFault) MaybeError(op errorfs.Op) error {
	if !c.On.Load() || op.Kind.ReadOrWrite() != errorfs.OpIsWrite || !strings.HasPrefix(path.Base(op.Path), "MANIFEST-") {
		return nil
	}
	buf := make([]byte, 1<<16)
	if !bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("pebble/v2.(*DB).compact")) {
		return nil
	}
	if c.Hold != nil {
		c.once.Do(func() {
			close(c.held)
			<-c.Hold
		})
	}
	return errorfs.ErrInjected
}

// AwaitHeld waits until a compaction's MANIFEST write is held.
func (c *CompactionFault) AwaitHeld(t testing.TB) {
	t.Helper()
	select {
	case <-c.held:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "setup: Pebble started no compaction")
	}
}

// GoroutineIn waits until a goroutine's stack holds fn.
func GoroutineIn(t testing.TB, fn string) {
	t.Helper()
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<22)
		return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte(fn))
	}, 10*time.Second, time.Millisecond, "no goroutine in %s", fn)
}

// ReturnsWithin runs call and returns its error, failing the test if it
// has not returned within a generous deadline: a call that hangs is left
// running rather than blocking the suite.
func ReturnsWithin(t testing.TB, what string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		require.FailNow(t, what+" hangs")
		return nil
	}
}
