package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
)

// childRoleEnv names the environment variable that makes a test binary run
// as a child process, in the role it names, instead of running its tests.
const childRoleEnv = "DEDUP_TEST_CHILD_ROLE"

// A Role is what a test binary does as a child process: it runs with the
// arguments ChildCommand was given, and the child exits when it returns.
type Role func(t *Child, args []string)

// RunMain is the TestMain of a package whose tests run child processes.
// In a child, it runs the role that ChildCommand named and exits: 0 if the
// role returned without a failure, 1 if it failed, 2 if roles has no such
// role. Otherwise it runs the tests.
func RunMain(m *testing.M, roles map[string]Role) {
	name, ok := os.LookupEnv(childRoleEnv)
	if !ok {
		os.Exit(m.Run())
	}
	role, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no child role %q in this test binary\n", name)
		os.Exit(2)
	}
	var t Child
	role(&t, os.Args[1:])
	if t.failed.Load() {
		os.Exit(1)
	}
	os.Exit(0)
}

// ChildCommand returns the command that runs this test binary as a child
// process in role, with args. The child inherits this process's
// environment; the caller may change the command before starting it.
func ChildCommand(t testing.TB, role string, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := os.Executable() // os.Args[0] may be relative to another directory
	if err != nil {
		t.Fatalf("finding the test binary to run as %s: %v", role, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), childRoleEnv+"="+role)
	return cmd
}

// Child is the *testing.T of a role, for require and assert: a failure is
// written to stderr, where the parent test reports it from, and FailNow
// ends the process with status 1 at once, without running deferred calls.
type Child struct {
	failed atomic.Bool
}

// Errorf reports a failure on stderr and marks the child failed.
func (c *Child) Errorf(format string, args ...any) {
	c.failed.Store(true)
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// FailNow ends the child with status 1.
func (c *Child) FailNow() {
	os.Exit(1)
}
