//go:build unix

package main

import (
	"bytes"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer that a test may read while a command
// writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWatchStopsOnASignalWithExitZero(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			_, addr := liveStore(t)
			var stdout, stderr syncBuffer
			done := make(chan int)
			go func() {
				done <- run([]string{"--addr", addr, "stats", "--watch", "--interval", "10ms"}, nil, &stdout, &stderr)
			}()
			// Once it has refreshed, it is waiting for the signal.
			require.Eventually(t, func() bool { return strings.Count(stdout.String(), "\n") >= 2 }, 10*time.Second, 5*time.Millisecond)
			require.NoError(t, syscall.Kill(syscall.Getpid(), sig))
			select {
			case code := <-done:
				assert.Equal(t, exitOK, code, stderr.String())
			case <-time.After(10 * time.Second):
				t.Fatal("still watching after the signal")
			}
		})
	}
}
