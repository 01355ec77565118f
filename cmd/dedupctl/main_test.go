package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// TestMain lets the scripts run dedupctl as a command: the test binary
// re-executes itself as main.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"dedupctl": main})
}

// TestScripts runs testdata/script/*.txtar. Besides the standard commands
// they have:
//
//	exits CODE PROG ARGS...   runs PROG and fails unless it exits with CODE
//	sleep DURATION            sleeps, as time.ParseDuration reads DURATION
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits": cmdExits,
			"sleep": cmdSleep,
		},
	})
}

// cmdExits runs a program, like exec, and checks its exit code, which exec
// cannot tell apart beyond zero and non-zero.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROG ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

func cmdSleep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: sleep DURATION")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	time.Sleep(d)
}

// runIn runs dedupctl in this process with stdin and returns its exit
// code, stdout and stderr.
func runIn(t *testing.T, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, bytes.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestLockedStore checks that a command on a store that is open elsewhere
// fails with exit code 5 and names the lock file. The store detects a
// second Open in the same process too, so the test holds it itself.
func TestLockedStore(t *testing.T) {
	dir := t.TempDir()
	s, err := dedup.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, args := range [][]string{
		{"get", "x"},
		{"mark", "x"},
		{"stats"},
		{"filter"},
	} {
		code, stdout, stderr := runIn(t, []byte("x\n"), append([]string{"--dir", dir}, args...)...)
		if code != exitLocked {
			t.Errorf("%v: exit code %d, want %d", args, code, exitLocked)
		}
		if stdout != "" {
			t.Errorf("%v: stdout %q, want nothing", args, stdout)
		}
		lock := filepath.Join(dir, "LOCK")
		if !strings.Contains(stderr, "locked") || !strings.Contains(stderr, lock) {
			t.Errorf("%v: stderr %q does not say %s is locked", args, stderr, lock)
		}
	}
	if seen, err := s.Seen([]byte("x")); err != nil || seen {
		t.Errorf("Seen(x) = %v, %v after the locked commands; want false, nil", seen, err)
	}
}

// TestFilterLargeInput filters a million lines, half of them repeats of
// earlier ones, and checks that exactly the first occurrences come out, in
// order, and that the summary counts them.
func TestFilterLargeInput(t *testing.T) {
	n := 1_000_000
	var in, want bytes.Buffer
	for i := range n {
		id := i / 2 // even lines: a new ID
		if i%2 == 1 {
			id = (i * 7919) % (i/2 + 1) // odd lines: one of the IDs so far
		}
		fmt.Fprintf(&in, "event-%08d\n", id)
		if i%2 == 0 {
			fmt.Fprintf(&want, "event-%08d\n", id)
		}
	}
	dir := filepath.Join(t.TempDir(), "store")

	start := time.Now()
	code, stdout, stderr := runIn(t, in.Bytes(), "--dir", dir, "filter")
	t.Logf("%d lines in %v", n, time.Since(start))
	if code != exitOK {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	if stdout != want.String() {
		t.Errorf("output has %d lines, want the %d first occurrences in order",
			strings.Count(stdout, "\n"), n/2)
	}
	summary := fmt.Sprintf("dedupctl: %d lines read, %d new passed, %d duplicates dropped, 0 bad passed\n", n, n/2, n/2)
	if stderr != summary {
		t.Errorf("stderr %q, want %q", stderr, summary)
	}
}

// TestFilterIDSize checks the ID size limits: an ID of the store's maximum
// size passes, a longer one is a bad line rather than a failed batch, and a
// last line without a newline is read and gets one.
func TestFilterIDSize(t *testing.T) {
	longest := strings.Repeat("x", maxIDSize)
	tooLong := strings.Repeat("y", maxIDSize+1)
	in := "a\n" + longest + "\n" + tooLong + "\n" + longest + "\nb"
	dir := filepath.Join(t.TempDir(), "store")

	code, stdout, stderr := runIn(t, []byte(in), "--dir", dir, "filter", "--on-bad", "drop")
	if code != exitOK {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	if want := "a\n" + longest + "\nb\n"; stdout != want {
		t.Errorf("stdout has %d lines, want a, the %d-byte ID and b", strings.Count(stdout, "\n"), maxIDSize)
	}
	wantErr := fmt.Sprintf("dedupctl: line 3: ID of %d bytes is over the limit of %d\n"+
		"dedupctl: 5 lines read, 3 new passed, 1 duplicates dropped, 1 bad dropped\n", maxIDSize+1, maxIDSize)
	if stderr != wantErr {
		t.Errorf("stderr %q, want %q", stderr, wantErr)
	}
}

// TestFilterLineTooLong checks that a line over the limit ends the run
// with exit code 1 and names the line, after passing the lines before it.
func TestFilterLineTooLong(t *testing.T) {
	in := "a\nb\n" + strings.Repeat("z", maxLine+1) + "\nc\n"
	dir := filepath.Join(t.TempDir(), "store")

	code, stdout, stderr := runIn(t, []byte(in), "--dir", dir, "filter")
	if code != exitError {
		t.Errorf("exit code %d, want %d", code, exitError)
	}
	if stdout != "a\nb\n" {
		t.Errorf("stdout %q, want the two lines before the long one", stdout)
	}
	want := "dedupctl: 2 lines read, 2 new passed, 0 duplicates dropped, 0 bad passed\n" +
		"dedupctl: line 3: longer than the limit of 16 MiB\n"
	if stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

// TestExportBase64 checks that export base64-encodes an ID that is not
// valid UTF-8, and says so.
func TestExportBase64(t *testing.T) {
	dir := t.TempDir()
	s, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	_, err = s.CheckAndMarkBatch([][]byte{{0xff, 0xfe}, []byte("plain")}, 0)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	code, stdout, stderr := runIn(t, nil, "--dir", dir, "export")
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `(?m)^\{"kind":"mark","id":"//4=","id_base64":true,"deadline":"[^"]+"\}$`, stdout)
	assert.Regexp(t, `(?m)^\{"kind":"mark","id":"plain","deadline":"[^"]+"\}$`, stdout)
}

// TestImportSkipsExpired checks that import marks each ID until its own
// deadline, skips the expired ones, and decodes base64 IDs.
func TestImportSkipsExpired(t *testing.T) {
	dir := t.TempDir()
	soon, later := time.Now().Add(time.Hour).UTC(), time.Now().Add(48*time.Hour).UTC()
	in := fmt.Sprintf(`{"id":"soon","deadline":%q}
{"id":"gone","deadline":"2001-01-01T00:00:00Z"}
{"id":"//4=","id_base64":true,"deadline":%q}
`, soon.Format(time.RFC3339Nano), later.Format(time.RFC3339Nano))
	code, stdout, stderr := runIn(t, []byte(in), "--dir", dir, "import")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "2 marks added, 0 already present, 1 expired and skipped\n", stdout)

	s := storetest.OpenAt(t, dir, &dedup.Options{ReadOnly: true})
	for id, want := range map[string]time.Time{"soon": soon, "\xff\xfe": later} {
		x, err := s.Explain([]byte(id))
		require.NoError(t, err)
		assert.True(t, x.Live, "%q", id)
		assert.WithinDuration(t, want, x.Deadline, time.Second, "%q keeps its deadline", id)
	}
	x, err := s.Explain([]byte("gone"))
	require.NoError(t, err)
	assert.False(t, x.Live)
}

// TestRecordsInExplainAndScan checks what operators see of idempotency
// records: explain shows a record's state, lease, fingerprint and result
// size, also by the HTTP middleware's key; scan --state in-progress lists
// the leases of work never completed, ended ones included.
func TestRecordsInExplainAndScan(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	s, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	stuck, err := s.Begin([]byte("job-stuck"), []byte{0xab, 0xcd}, time.Millisecond, time.Hour)
	require.NoError(t, err)
	_, err = s.Begin([]byte("job-running"), nil, time.Hour, 2*time.Hour)
	require.NoError(t, err)
	done, err := s.Begin([]byte("job-done"), nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete([]byte("job-done"), done.Token, []byte("twelve bytes")))
	httpKey, err := s.Begin(idempotency.StoreKey("acct_1", "order-9"), nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete(idempotency.StoreKey("acct_1", "order-9"), httpKey.Token, []byte("resp")))
	_, err = s.CheckAndMark([]byte("plain"), 0)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	time.Sleep(2 * time.Millisecond) // job-stuck's lease ends

	code, out, errOut := runIn(t, nil, "--dir", dir, "explain", "job-stuck", "job-done", "plain")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, fmt.Sprintf(`record +in progress: lease of token %d until \S+, ended`, stuck.Token), out)
	assert.Contains(t, out, "fingerprint  abcd")
	assert.Regexp(t, fmt.Sprintf(`record +completed \(token %d\)`, done.Token), out)
	assert.Regexp(t, `result +12 bytes`, out)
	assert.Equal(t, 2, strings.Count(out, "record "), "plain has no record")

	code, out, errOut = runIn(t, nil, "--dir", dir, "explain", "--http", "--scope", "acct_1", "order-9")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `record +completed`, out)
	assert.Regexp(t, `result +4 bytes`, out)

	code, out, errOut = runIn(t, nil, "--dir", dir, "scan", "--state", "in-progress")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	slices.Sort(lines) // scan promises no order
	assert.Regexp(t, `^job-running\t\S+\tin-progress\tin progress: lease of token \d+ until \S+, live$`, lines[0])
	assert.Regexp(t, `^job-stuck\t\S+\tin-progress\tin progress: lease of token \d+ until \S+, ended`, lines[1])

	code, out, errOut = runIn(t, nil, "--dir", dir, "scan", "--state", "completed")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `(?m)^"idempotency\\x00acct_1\\x00order-9"\t\S+\tcompleted$`, out, "a key with NUL bytes is quoted")
	assert.Regexp(t, `(?m)^job-done\t\S+\tcompleted$`, out)
	assert.NotContains(t, out, "plain")

	code, out, errOut = runIn(t, nil, "--dir", dir, "-o", "json", "scan", "--state", "in-progress")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `"state":"in-progress","record":{"state":1,"token":`)

	code, _, _ = runIn(t, nil, "--dir", dir, "scan", "--state", "stuck")
	assert.Equal(t, 2, code, "an unknown state is a usage error")
}
