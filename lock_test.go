package dedup_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// probeInChild opens the store in dir from a child process, writable or
// read-only, as the user cred names (nil for this one), and returns the
// child's one-line outcome: "probe: opened, seen <bool>, <err>" or
// "probe: error: <err>".
func probeInChild(t *testing.T, dir string, readOnly bool, cred *syscall.Credential) string {
	t.Helper()
	mode := "rw"
	if readOnly {
		mode = "ro"
	}
	cmd := testutil.ChildCommand(t, "lock-probe", dir, mode)
	if cred != nil {
		cmd.Path = executableBy(t, cred)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the probe child failed:\n%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "probe: ") {
			return line
		}
	}
	t.Fatalf("the probe child said nothing:\n%s", out)
	return ""
}

// executableBy copies the test binary where the user cred names can run
// it: the build's own directory is closed to other users.
func executableBy(t *testing.T, cred *syscall.Credential) string {
	t.Helper()
	dir := openToAll(t)
	bin := filepath.Join(dir, "dedup.test")
	self, err := os.Executable()
	require.NoError(t, err)
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return bin
}

// openToAll returns a new temporary directory that every user may reach.
func openToAll(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	return dir
}

// TestSecondOpenIsLockedByAnyPath checks that a directory in use refuses
// a second Store in the same process with ErrLocked, by whatever path it
// is named, and that after the refusal the first Store still holds it
// against another process: a writer against even a read-only Open, a
// read-only Store against a writer. A writer's PID is in the error.
func TestSecondOpenIsLockedByAnyPath(t *testing.T) {
	for _, tc := range []struct {
		name              string
		firstRO, secondRO bool
		path              func(t *testing.T, dir string) string
	}{
		{"same path", false, false, func(_ *testing.T, dir string) string { return dir }},
		{"through a symlink", false, false, func(t *testing.T, dir string) string {
			link := filepath.Join(t.TempDir(), "link")
			require.NoError(t, os.Symlink(dir, link))
			return link
		}},
		{"relative after absolute", false, false, func(t *testing.T, dir string) string {
			t.Chdir(filepath.Dir(dir))
			return filepath.Base(dir)
		}},
		{"with a trailing dot", false, false, func(_ *testing.T, dir string) string { return dir + "/." }},
		{"read-only beside a writer", false, true, func(_ *testing.T, dir string) string { return dir }},
		{"writer beside a read-only Store", true, false, func(t *testing.T, dir string) string {
			link := filepath.Join(t.TempDir(), "link")
			require.NoError(t, os.Symlink(dir, link))
			return link
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := storetest.OpenAt(t, dir, nil)
			require.True(t, checkAndMark(t, s, "probe", 0))
			if tc.firstRO {
				require.NoError(t, s.Close())
				s = storetest.OpenAt(t, dir, &dedup.Options{ReadOnly: true})
			}

			second, err := dedup.Open(tc.path(t, dir), &dedup.Options{ReadOnly: tc.secondRO})
			if second != nil {
				assert.NoError(t, second.Close())
			}
			require.ErrorIs(t, err, dedup.ErrLocked)
			if !tc.firstRO {
				assert.Contains(t, err.Error(), fmt.Sprintf("PID %d", os.Getpid()), "the error must name the holder")
			}

			assert.True(t, seen(t, s, "probe"), "the refused Open must not disturb the holder")
			out := probeInChild(t, dir, !tc.firstRO, nil)
			assert.Contains(t, out, "probe: error: "+dedup.ErrLocked.Error(), "another process must still be refused")
		})
	}
}

// TestReadOnlyStoresRunSideBySide checks that read-only opens of a store
// share it, in one process and across processes.
func TestReadOnlyStoresRunSideBySide(t *testing.T) {
	dir := t.TempDir()
	s, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	require.True(t, checkAndMark(t, s, "probe", 0))
	require.NoError(t, s.Close())

	ro := &dedup.Options{ReadOnly: true}
	first := storetest.OpenAt(t, dir, ro)
	second := storetest.OpenAt(t, dir, ro)
	assert.True(t, seen(t, first, "probe"))
	assert.True(t, seen(t, second, "probe"))
	assert.Equal(t, "probe: opened, seen true, <nil>", probeInChild(t, dir, true, nil))
	_, err = dedup.Open(dir, nil)
	assert.ErrorIs(t, err, dedup.ErrLocked, "read-only Stores keep a writer out")
}

// TestLockOnAnotherFS checks the lock on a vfs.FS other than the
// operating system's: a second writer, or a writer beside read-only
// Stores, is ErrLocked, while read-only Stores share the store.
func TestLockOnAnotherFS(t *testing.T) {
	mem := vfs.NewMem()
	opts := &dedup.Options{FS: mem}
	s, err := dedup.Open("store", opts)
	require.NoError(t, err)
	_, err = dedup.Open("./store/", opts)
	require.ErrorIs(t, err, dedup.ErrLocked, "a second writer")
	require.NoError(t, s.Close())

	ro := &dedup.Options{FS: mem, ReadOnly: true}
	a := storetest.OpenAt(t, "store", ro)
	_ = storetest.OpenAt(t, "store", ro)
	_, err = dedup.Open("store", opts)
	require.ErrorIs(t, err, dedup.ErrLocked, "a writer beside read-only Stores")
	other := storetest.OpenAt(t, "store", &dedup.Options{FS: vfs.NewMem()})
	assert.NotNil(t, other, "another FS is another store")
	require.NoError(t, a.Close())
}

// TestReadOnlyDirectoryIsNotLocked checks a store copy that its user may
// read but not write, with its LOCK file or, as a snapshot, without: a
// writable Open fails with ErrPermission naming the LOCK file, not
// ErrLocked, and a read-only Open works. As root, which ignores
// permission bits, it runs the Opens as the user nobody.
func TestReadOnlyDirectoryIsNotLocked(t *testing.T) {
	for _, tc := range []struct {
		name string
		copy func(t *testing.T, s *dedup.Store, dir string) string
	}{
		{"the store itself", func(_ *testing.T, _ *dedup.Store, dir string) string { return dir }},
		{"a snapshot without a LOCK file", func(t *testing.T, s *dedup.Store, dir string) string {
			snap := dir + "-snapshot"
			require.NoError(t, s.Snapshot(snap))
			return snap
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(openToAll(t), "store")
			s, err := dedup.Open(src, nil)
			require.NoError(t, err)
			require.True(t, checkAndMark(t, s, "probe", 0))
			dir := tc.copy(t, s, src)
			require.NoError(t, s.Close())
			readOnlyFor(t, dir)
			cred := (*syscall.Credential)(nil)
			if os.Geteuid() == 0 {
				cred = &syscall.Credential{Uid: 65534, Gid: 65534}
			}

			if cred == nil {
				_, err := dedup.Open(dir, nil)
				require.ErrorIs(t, err, dedup.ErrPermission)
				assert.NotErrorIs(t, err, dedup.ErrLocked)
				assert.Contains(t, err.Error(), filepath.Join(dir, "LOCK"))
				ro := storetest.OpenAt(t, dir, &dedup.Options{ReadOnly: true})
				assert.True(t, seen(t, ro, "probe"))
				return
			}
			out := probeInChild(t, dir, false, cred)
			assert.Contains(t, out, "probe: error: "+dedup.ErrPermission.Error())
			assert.Contains(t, out, filepath.Join(dir, "LOCK"))
			assert.Equal(t, "probe: opened, seen true, <nil>", probeInChild(t, dir, true, cred))
		})
	}
}

// readOnlyFor makes the tree at dir readable but not writable by the user
// the test's Opens run as: this one, or nobody when the test runs as root.
func readOnlyFor(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(p, 65534, 65534); err != nil {
				return err
			}
		}
		mode := os.FileMode(0o400)
		if d.IsDir() {
			mode = 0o500
		}
		return os.Chmod(p, mode)
	}))
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, _ error) error { return os.Chmod(p, 0o700) })
	})
}

// refuseWrites fails every operation that would change the file system
// with EACCES, as a directory its user may not write does.
type refuseWrites struct{}

func (refuseWrites) String() string { return "refuse writes" }

func (refuseWrites) MaybeError(op errorfs.Op) error {
	if op.Kind.ReadOrWrite() == errorfs.OpIsWrite || op.Kind == errorfs.OpLock {
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.EACCES}
	}
	return nil
}

// TestOpenOnAnFSThatRefusesWrites checks, whoever runs it, that a store
// whose files refuse every write opens read-only and answers, while a
// writable Open fails with ErrPermission rather than ErrLocked.
func TestOpenOnAnFSThatRefusesWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   func() vfs.FS
		dir  func(t *testing.T) string
	}{
		{"memory", func() vfs.FS { return vfs.NewMem() }, func(*testing.T) string { return "store" }},
		{"operating system", func() vfs.FS { return vfs.Default }, func(t *testing.T) string { return t.TempDir() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, dir := tc.fs(), tc.dir(t)
			s, err := dedup.Open(dir, &dedup.Options{FS: base})
			require.NoError(t, err)
			require.True(t, checkAndMark(t, s, "probe", 0))
			require.NoError(t, s.Close())

			refusing := errorfs.Wrap(base, refuseWrites{})
			ro := storetest.OpenAt(t, dir, &dedup.Options{FS: refusing, ReadOnly: true})
			assert.True(t, seen(t, ro, "probe"))
			require.NoError(t, ro.Close())

			_, err = dedup.Open(dir, &dedup.Options{FS: refusing})
			require.ErrorIs(t, err, dedup.ErrPermission)
			assert.NotErrorIs(t, err, dedup.ErrLocked)
		})
	}
}

// TestLockHeldByAnotherProcess opens a store in a child process and checks
// that Open here fails with ErrLocked, naming the LOCK file, until the
// child dies.
func TestLockHeldByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := testutil.ChildCommand(t, "lock-holder", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill() // it may have exited already
			_ = cmd.Wait()         // a killed child's error says only that
		}
	}
	t.Cleanup(stop)

	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			stop()
			t.Fatalf("the child exited before it held the store:\n%s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		stop()
		t.Fatalf("the child did not open the store within 30s:\n%s", stderr.String())
	}

	s, err := dedup.Open(dir, nil)
	if s != nil {
		assert.NoError(t, s.Close())
	}
	require.ErrorIs(t, err, dedup.ErrLocked)
	assert.Contains(t, err.Error(), filepath.Join(dir, "LOCK"), "the error must name the lock file")
	assert.Contains(t, err.Error(), fmt.Sprintf("process %d", cmd.Process.Pid), "the error must name the holder")

	stop()
	s, err = dedup.Open(dir, nil)
	require.NoError(t, err, "the lock dies with the process that held it")
	assert.NoError(t, s.Close())
}

// lockHolderChild is the child process of TestLockHeldByAnotherProcess:
// it opens the store in the directory args name, prints "ready" and holds
// the store until it is killed.
func lockHolderChild(t *testutil.Child, args []string) {
	s, err := dedup.Open(args[0], nil)
	require.NoError(t, err)
	defer s.Close()
	fmt.Println("ready")
	time.Sleep(time.Minute)
}

// lockProbeChild is the child process of probeInChild: it opens the store
// in the directory args[0] names, writable or, if args[1] is "ro",
// read-only, prints one line saying whether it could and whether the store
// has seen the ID "probe", and exits.
func lockProbeChild(t *testutil.Child, args []string) {
	s, err := dedup.Open(args[0], &dedup.Options{ReadOnly: args[1] == "ro"})
	if err != nil {
		fmt.Println("probe: error:", err)
		return
	}
	ok, err := s.Seen([]byte("probe"))
	fmt.Printf("probe: opened, seen %v, %v\n", ok, err)
	require.NoError(t, s.Close())
}
