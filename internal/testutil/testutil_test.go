package testutil_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

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

func TestLogKeepsLinesForAssertions(t *testing.T) {
	var log testutil.Log
	log.Logf("opened %s", "store")
	log.Logf("rebuilding %d filters", 3)
	assert.Equal(t, []string{"opened store", "rebuilding 3 filters"}, log.Lines())
	assert.True(t, log.Contains("3 filters"))
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
	log.Logf("during")
	tb.end()
	log.Logf("after")
	assert.Equal(t, []string{"during"}, tb.logged)
	assert.Equal(t, []string{"during", "after"}, log.Lines())
}
