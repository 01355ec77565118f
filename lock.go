package dedup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A store's LOCK file is held for as long as a Store is open on it:
// exclusively by a writable Store, shared by a read-only one, so that
// read-only opens run side by side but never beside a writer. On the
// operating system's files the hold is an open file description lock,
// which conflicts with every other open of the file, in this process or
// another, by whatever path: unlike a process's fcntl lock, closing one
// descriptor never drops another's. The holder of an exclusive lock
// writes its PID into the file, for the ErrLocked of the next comer.
//
// Another vfs.FS is seen by this process alone; a registry keyed by that
// FS and the path stands in for the kernel there.

// lockStore takes the LOCK file of the store in dir. A lock held elsewhere
// is ErrLocked, naming the file and, when it can, the holder's PID; a
// LOCK file this process may not open for writing is ErrPermission. A
// read-only Store in a directory it may not write, with no LOCK file yet,
// takes no lock: nothing could write it there through this user.
func lockStore(fs vfs.FS, dir string, shared bool, mode os.FileMode) (io.Closer, error) {
	path := fs.PathJoin(dir, lockFile)
	if vfs.Root(fs) == vfs.Default {
		l, err := lockOSFile(path, shared, mode)
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, errLockHeld):
			return nil, fmt.Errorf("%w: %s is held by %s", ErrLocked, path, lockHolder(path))
		case isPermission(err):
			return nil, permissionError(path, err)
		}
		return nil, fmt.Errorf("dedup: locking %s: %w", path, err)
	}
	return lockInProcess(fs, path, shared)
}

// errLockHeld is a lock that another open of the file holds.
var errLockHeld = errors.New("lock held")

// isPermission reports whether err is the file system refusing access:
// permission bits, or a read-only mount.
func isPermission(err error) bool {
	return errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// permissionError is ErrPermission for path, saying what to do.
func permissionError(path string, err error) error {
	return fmt.Errorf("%w: %s: %w (open the store ReadOnly to inspect it, or run as a user that may write it)", ErrPermission, path, err)
}

// lockHolder describes who holds the LOCK file at path, from the PID its
// holder wrote there, if that process still runs.
func lockHolder(path string) string {
	b, _ := os.ReadFile(path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	switch {
	case err != nil || pid <= 0 || !processRuns(pid):
		return "another Store (read-only Stores record no PID)"
	case pid == os.Getpid():
		return fmt.Sprintf("another Store in this process (PID %d), perhaps opened by another path", pid)
	}
	return fmt.Sprintf("process %d", pid)
}

// lockedFile is a held LOCK file of the operating system.
type lockedFile struct {
	f      *os.File
	shared bool
}

// Close clears the PID an exclusive holder wrote and releases the lock.
func (l lockedFile) Close() error {
	if !l.shared {
		_ = l.f.Truncate(0) // a stale PID would only mislead
	}
	return l.f.Close()
}

// lockOSFile opens the LOCK file at path and locks it, exclusively unless
// shared.
func lockOSFile(path string, shared bool, mode os.FileMode) (io.Closer, error) {
	var f *os.File
	var err error
	if shared {
		f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			f, err = openOrCreate(path, os.O_RDONLY, mode)
			if isPermission(err) {
				return noLock{}, nil
			}
		}
	} else {
		f, err = openOrCreate(path, os.O_RDWR, mode)
	}
	if err != nil {
		return nil, err
	}
	if err := lockFD(f, shared); err != nil {
		f.Close()
		return nil, err
	}
	if !shared {
		pid := strconv.Itoa(os.Getpid()) + "\n"
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
		if _, err := f.WriteAt([]byte(pid), 0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return lockedFile{f, shared}, nil
}

// noLock is the hold of a read-only Store where no lock can be taken.
type noLock struct{}

func (noLock) Close() error { return nil }

// openOrCreate opens path with flag, creating it with mode if it does not
// exist: the mode exactly, whatever the umask.
func openOrCreate(path string, flag int, mode os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, mode)
	if errors.Is(err, os.ErrExist) {
		return os.OpenFile(path, flag|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// held is the registry of the locks taken on a vfs.FS other than the
// operating system's.
var held struct {
	sync.Mutex
	m map[heldKey]int // -1 for an exclusive holder, else the shared holders
}

type heldKey struct {
	fs   vfs.FS
	path string
}

// lockInProcess takes the lock of path on fs in the registry. An
// exclusive lock also takes fs's own, which keeps the LOCK file in place.
func lockInProcess(fs vfs.FS, path string, shared bool) (io.Closer, error) {
	root := vfs.Root(fs)
	if !reflect.TypeOf(root).Comparable() {
		return nil, fmt.Errorf("dedup: locking %s: the FS, %T, cannot key a lock", path, root)
	}
	k := heldKey{root, filepath.Clean(path)}
	held.Lock()
	defer held.Unlock()
	if n := held.m[k]; n < 0 || (n > 0 && !shared) {
		return nil, fmt.Errorf("%w: %s is held by another Store in this process", ErrLocked, path)
	}
	var inner io.Closer
	if !shared {
		var err error
		if inner, err = fs.Lock(path); isPermission(err) {
			return nil, permissionError(path, err)
		} else if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrLocked, path, err)
		}
	}
	if held.m == nil {
		held.m = map[heldKey]int{}
	}
	if shared {
		held.m[k]++
	} else {
		held.m[k] = -1
	}
	return &heldLock{key: k, inner: inner}, nil
}

// heldLock is a lock in the registry.
type heldLock struct {
	key   heldKey
	inner io.Closer // fs's own lock, for an exclusive holder
	once  sync.Once
}

func (l *heldLock) Close() error {
	var err error
	l.once.Do(func() {
		held.Lock()
		defer held.Unlock()
		if l.inner != nil {
			err = l.inner.Close()
			delete(held.m, l.key)
			return
		}
		if held.m[l.key]--; held.m[l.key] == 0 {
			delete(held.m, l.key)
		}
	})
	return err
}
