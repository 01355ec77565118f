//go:build unix && !linux

package dedup

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// lockFD takes a flock lock on f, without waiting: held elsewhere, it is
// errLockHeld. Like an open file description lock, a flock lock belongs
// to the open file, not to the process.
func lockFD(f *os.File, shared bool) error {
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return errLockHeld
	}
	return err
}

// processRuns reports whether a process with this PID exists.
func processRuns(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
