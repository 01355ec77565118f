package dedup

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// lockFD takes an open file description lock on all of f, without
// waiting: held elsewhere, it is errLockHeld.
func lockFD(f *os.File, shared bool) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if shared {
		lk.Type = unix.F_RDLCK
	}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return errLockHeld
	}
	return err
}

// processRuns reports whether a process with this PID exists.
func processRuns(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
