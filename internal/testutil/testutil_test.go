package testutil_test

import (
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunMain(m, map[string]testutil.Role{
		"echo": func(_ *testutil.Child, args []string) { fmt.Println(strings.Join(args, "|")) },
		"fail": func(t *testutil.Child, args []string) {
			require.Equal(t, "want", args[0], "the child's check")
			fmt.Println("not reached")
		},
		"assert": func(t *testutil.Child, _ []string) {
			assert.Fail(t, "a failed assert")
			fmt.Println("carried on")
		},
	})
}

// exitCode returns the status the finished command exited with.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	return exit.ExitCode()
}

func TestChildRunsItsRoleWithItsArguments(t *testing.T) {
	out, err := testutil.ChildCommand(t, "echo", "a b", "-test.run=x", "").Output()
	require.NoError(t, err)
	assert.Equal(t, "a b|-test.run=x|\n", string(out), "arguments reach the role as given, not as test flags")
}

func TestChildFailuresSetItsExitStatus(t *testing.T) {
	for _, tc := range []struct {
		role        string
		code        int
		stdout      string
		stderrHolds string
	}{
		{"fail", 1, "", "the child's check"},
		{"assert", 1, "carried on\n", "a failed assert"},
		{"no-such-role", 2, "", `no child role "no-such-role"`},
	} {
		t.Run(tc.role, func(t *testing.T) {
			cmd := testutil.ChildCommand(t, tc.role, "got")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			assert.Equal(t, tc.code, exitCode(t, err))
			assert.Equal(t, tc.stdout, string(out))
			assert.Contains(t, stderr.String(), tc.stderrHolds)
		})
	}
}

func TestLogKeepsRecordsWithTheirAttributes(t *testing.T) {
	var log testutil.Log
	logger := log.Logger().With("dir", "/s").WithGroup("wal")
	logger.Info("opened", "segments", 2)
	logger.Warn("rebuilding", slog.Group("filters", "n", 3), "took", time.Second)
	recs := log.Records()
	require.Len(t, recs, 2)
	assert.Equal(t, map[string]any{"dir": "/s", "wal.segments": int64(2)}, recs[0].Attrs)
	assert.Equal(t, slog.LevelWarn, recs[1].Level)
	assert.Equal(t, map[string]any{"dir": "/s", "wal.filters.n": int64(3), "wal.took": time.Second}, recs[1].Attrs)
	assert.Equal(t, "WARN rebuilding dir=/s wal.filters.n=3 wal.took=1s", recs[1].String())
	assert.Len(t, log.Find("opened"), 1)
	assert.True(t, log.Contains("filters.n=3"))
	assert.False(t, log.Contains("torn tail"))
}

// endingTB is the part of a test a Log uses, with an end the test drives.
type endingTB struct {
	testing.TB // nil: a Log calls only the methods below
	cleanups   []func()
	logged     []string
}

func (e *endingTB) Helper()                 {}
func (e *endingTB) Cleanup(f func())        { e.cleanups = append(e.cleanups, f) }
func (e *endingTB) Logf(f string, a ...any) { e.logged = append(e.logged, fmt.Sprintf(f, a...)) }

func (e *endingTB) end() {
	for _, f := range e.cleanups {
		f()
	}
}

// TestLogForwardsOnlyWhileItsTestRuns logs through a NewLog before and
// after its test ends, as a store left open by its test may: both lines
// are kept, and only the first reaches the test's Logf, which panics once
// a test has ended.
func TestLogForwardsOnlyWhileItsTestRuns(t *testing.T) {
	tb := &endingTB{}
	log := testutil.NewLog(tb)
	log.Logger().Info("during")
	tb.end()
	log.Logger().Info("after")
	assert.Equal(t, []string{"INFO during"}, tb.logged)
	assert.Len(t, log.Records(), 2)
}
