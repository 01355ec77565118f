package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
)

// TestMain runs the tests, or, in a child process that
// TestExactlyOnceAcrossKills started, the consumer.
func TestMain(m *testing.M) {
	testutil.RunMain(m, map[string]testutil.Role{"consumer": consumerChild})
}

// consumerChild runs the consumer on the stream in the directory args
// name, with its store and its applied log beside it.
func consumerChild(t *testutil.Child, args []string) {
	dir := args[0]
	err := run(context.Background(), filepath.Join(dir, "store"), filepath.Join(dir, "messages.jsonl"), filepath.Join(dir, "applied.log"), 300*time.Millisecond, time.Millisecond)
	require.NoError(t, err)
}

// TestExactlyOnceAcrossKills writes a stream of 300 messages delivered one
// to three times each, in shuffled order, and runs the consumer on it,
// killing it with SIGKILL at random moments and restarting it on the same
// stream, until a run ends on its own. Every message must then have been
// applied exactly once.
func TestExactlyOnceAcrossKills(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	var stream []string
	for m := range 300 {
		for range 1 + rng.IntN(3) {
			stream = append(stream, fmt.Sprintf(`{"id":"msg-%03d","amount":%d}`, m, m*10))
		}
	}
	rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "messages.jsonl"), []byte(strings.Join(stream, "\n")+"\n"), 0o644))

	kills := 0
	for run := 0; ; run++ {
		require.Less(t, run, 50, "the consumer never finished")
		cmd := testutil.ChildCommand(t, "consumer", dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if run < 8 {
			select {
			case err := <-exited:
				require.NoError(t, err, "run %d: %s", run, stderr.String())
				t.Logf("run %d finished before its kill", run)
			case <-time.After(time.Duration(20+rng.IntN(200)) * time.Millisecond):
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				<-exited
				kills++
				continue
			}
		} else {
			require.NoError(t, <-exited, "run %d: %s", run, stderr.String())
		}
		break
	}
	t.Logf("%d runs killed", kills)

	f, err := os.Open(filepath.Join(dir, "applied.log"))
	require.NoError(t, err)
	defer f.Close()
	applied := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, _, ok := strings.Cut(sc.Text(), " ")
		require.True(t, ok, "line %q", sc.Text())
		applied[id]++
	}
	require.NoError(t, sc.Err())
	assert.Len(t, applied, 300, "every message applied")
	for id, n := range applied {
		assert.Equal(t, 1, n, "%s applied %d times", id, n)
	}
}
