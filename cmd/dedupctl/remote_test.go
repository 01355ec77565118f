package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/idempotency"
)

// liveStore opens a store for writing and keeps it open, locked, for the
// whole test, as a running API holds its store; it has marks in Pebble
// and in the WAL tail, a binary ID, a forgotten one, a job in progress
// and an HTTP idempotency record. It returns the store and the URL of its
// admin handler.
func liveStore(t *testing.T) (*dedup.Store, string) {
	t.Helper()
	s, err := dedup.Open(filepath.Join(t.TempDir(), "live"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = s.CheckAndMarkBatch([][]byte{[]byte("old-1"), []byte("old-2"), []byte("gone")}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Checkpoint())
	_, err = s.CheckAndMarkBatch([][]byte{[]byte("new-1"), {0xff, 0xfe, 'a'}, []byte("a\nb")}, 2*time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Forget([]byte("gone")))
	_, err = s.Begin([]byte("job"), []byte{0xab, 0xcd}, time.Hour, 2*time.Hour)
	require.NoError(t, err)
	key := idempotency.StoreKey("acct_1", "order-9")
	c, err := s.Begin(key, []byte("fp"), time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete(key, c.Token, []byte("stored response")))
	srv := httptest.NewServer(admin.Handler(s, nil))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

// TestAddrPrintsWhatDirPrints runs the read-only commands against a live
// store's admin handler, and against a copy of the store opened with
// --dir, and checks that they print the same and exit alike, in both
// output formats, failures included; --dir on the live store itself is
// refused, since the store is locked.
func TestAddrPrintsWhatDirPrints(t *testing.T) {
	s, addr := liveStore(t)
	copyDir := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, os.CopyFS(copyDir, os.DirFS(s.Dir())), "the store is idle: its files are consistent")

	code, _, stderr := runIn(t, nil, "--dir", s.Dir(), "get", "old-1")
	require.Equal(t, exitLocked, code, "the live store is locked: %s", stderr)

	for _, args := range [][]string{
		{"get", "old-1", "new-1", "\xff\xfea", "a\nb", "gone", "never"},
		{"get", "old-1", ""},
		{"explain", "old-1", "new-1", "gone", "job", "never", "\xff\xfea"},
		{"explain", "old-1", ""},
		{"explain", "--http", "--scope", "acct_1", "order-9", "order-10"},
		{"scan"},
		{"scan", "--prefix", "old"},
		{"scan", "--limit", "2", "--prefix", "old"},
		{"scan", "--expired"},
		{"scan", "--state", "forgotten"},
		{"scan", "--state", "in-progress"},
		{"scan", "--state", "stuck"},
		{"stats"},
		{"verify"},
	} {
		for _, output := range []string{"table", "json"} {
			dirCode, dirOut, dirErr := runIn(t, nil, append([]string{"--dir", copyDir, "-o", output}, args...)...)
			addrCode, addrOut, addrErr := runIn(t, nil, append([]string{"--addr", addr, "-o", output}, args...)...)
			switch args[0] {
			case "scan": // scan promises no order
				dirOut, addrOut = sortLines(dirOut), sortLines(addrOut)
			case "stats": // the age of the oldest mark grows as the test runs
				dirOut, addrOut = effectiveWindow.ReplaceAllString(dirOut, "$1"), effectiveWindow.ReplaceAllString(addrOut, "$1")
				if output == "json" { // and the live store's JSON adds its counters
					assert.Regexp(t, counters, addrOut)
					addrOut = counters.ReplaceAllString(addrOut, "")
				}
			}
			assert.Equal(t, dirCode, addrCode, "%q -o %s: exit code", args, output)
			assert.Equal(t, dirOut, addrOut, "%q -o %s: stdout", args, output)
			assert.Equal(t, dirErr, addrErr, "%q -o %s: stderr", args, output)
		}
	}
}

// effectiveWindow matches the effective window in stats' output.
var effectiveWindow = regexp.MustCompile(`(effective window +|"effective_window_ns":)[0-9.a-zµ]+`)

// counters matches the counters in stats' JSON, which only a live store
// served by the admin handler has.
var counters = regexp.MustCompile(`,"counters":\{[^{}]*"errors":\{[^{}]*\}\}`)

func sortLines(s string) string {
	lines := strings.SplitAfter(s, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "")
}

// TestAddrIsRefusedByCommandsItDoesNotServe checks that a command that
// writes, or that the handler does not serve, refuses --addr as a usage
// error, and ignores $DEDUP_ADDR for --dir.
func TestAddrIsRefusedByCommandsItDoesNotServe(t *testing.T) {
	s, addr := liveStore(t)
	for _, args := range [][]string{
		{"mark", "x"},
		{"forget", "old-1"},
		{"filter"},
		{"import"},
		{"compact"},
		{"snapshot", filepath.Join(t.TempDir(), "snap")},
		{"repair"},
		{"export"},
		{"bench"},
	} {
		code, stdout, stderr := runIn(t, []byte("x\n"), append([]string{"--addr", addr}, args...)...)
		assert.Equal(t, exitUsage, code, "%v", args)
		assert.Empty(t, stdout, "%v", args)
		assert.Contains(t, stderr, args[0]+" does not work with --addr", "%v", args)
	}
	seen, err := s.Seen([]byte("x"))
	require.NoError(t, err)
	assert.False(t, seen, "nothing was marked")

	t.Setenv("DEDUP_ADDR", addr)
	dir := filepath.Join(t.TempDir(), "other")
	code, stdout, stderr := runIn(t, nil, "--dir", dir, "mark", "x")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "true")
	code, stdout, stderr = runIn(t, nil, "get", "old-1")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "old-1  true", "$DEDUP_ADDR serves get when --dir is not given")
	code, stdout, stderr = runIn(t, nil, "--dir", dir, "get", "old-1")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "old-1  false", "--dir beats $DEDUP_ADDR")
}

// TestAddrExitCodes checks the exit codes of what only --addr can get
// wrong, and that damage found by a live store's verify exits 3 with the
// report on stdout, as it does with --dir.
func TestAddrExitCodes(t *testing.T) {
	s, addr := liveStore(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"both --dir and --addr", []string{"--addr", addr, "--dir", s.Dir(), "stats"}, exitUsage, "not both"},
		{"not a URL", []string{"--addr", "localhost:1", "stats"}, exitUsage, "is not an http:// or https:// URL"},
		{"nobody listens", []string{"--addr", "http://127.0.0.1:1", "stats"}, exitError, "admin handler at http://127.0.0.1:1"},
		{"not the admin handler", []string{"--addr", addr + "/nowhere", "stats"}, exitError, "/nowhere/stats is not served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runIn(t, nil, tc.args...)
			assert.Equal(t, tc.code, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.err)
		})
	}

	small := httptest.NewServer(admin.Handler(s, &admin.Options{MaxScanLines: 2}))
	defer small.Close()
	code, stdout, stderr := runIn(t, nil, "--addr", small.URL, "scan", "--prefix", "old")
	assert.Equal(t, exitOK, code, "as many lines as the handler serves are the whole answer: %s", stderr)
	assert.Equal(t, 2, strings.Count(stdout, "\n"))
	code, stdout, stderr = runIn(t, nil, "--addr", small.URL, "scan")
	assert.Equal(t, exitUsage, code, "a scan cut at the handler's limit is not a success")
	assert.Equal(t, 2, strings.Count(stdout, "\n"), "the lines before the cut are printed")
	assert.Contains(t, stderr, "scan stopped after 2 lines")

	seg := filepath.Join(s.Dir(), "wal", "0000000000000001.wal")
	require.NoError(t, os.WriteFile(seg, []byte("not a WAL segment at all"), 0o644))
	for _, output := range []string{"table", "json"} {
		code, stdout, stderr := runIn(t, nil, "--addr", addr, "-o", output, "verify")
		assert.Equal(t, exitCorrupt, code, output)
		assert.Contains(t, stdout, "0000000000000001.wal", "%s: the report on stdout", output)
		assert.Contains(t, stderr, "dedupctl: dedup: store corrupt", output)
	}
}
