package crashtest_test

import (
	"testing"

	"github.com/seed42300104/dedup/internal/testutil"
)

// TestMain runs the tests, or, in a child process that a test started
// with testutil.ChildCommand, the child's role.
func TestMain(m *testing.M) {
	testutil.RunMain(m, map[string]testutil.Role{
		"crash-kill": crashKillChild,
		"crash-drop": crashDropChild,
	})
}
