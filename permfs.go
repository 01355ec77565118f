package dedup

import (
	"errors"
	"io"
	"os"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// permFS is the vfs.FS a store goes through. It gives the files and
// directories the store creates the modes of Options.FileMode and
// DirMode: Pebble's and the operating system's FS create files 0666 and
// directories as asked, less the umask, which would leave the WAL, and
// the HTTP responses stored in it, readable by every user. Only the
// operating system's files have modes; on another FS it changes nothing
// but locks.
//
// A read-only store takes no lock of Pebble's on index/db: the store's
// shared LOCK covers the whole directory, and Pebble's exclusive one would
// keep read-only Stores from running side by side, and fail in a
// directory that cannot be written.
type permFS struct {
	vfs.FS
	file, dir os.FileMode
	osFiles   bool // the files are the operating system's
	readOnly  bool
}

func newPermFS(fs vfs.FS, o *Options) permFS {
	return permFS{FS: fs, file: o.FileMode, dir: o.DirMode, osFiles: vfs.Root(fs) == vfs.Default, readOnly: o.ReadOnly}
}

// direct reports whether the files are the operating system's with
// nothing but this wrapper in between, so that the WAL may fsync them
// through their descriptors in the background.
func (p permFS) direct() bool { return p.FS == vfs.Default }

// Unwrap returns the FS underneath, for vfs.Root.
func (p permFS) Unwrap() vfs.FS { return p.FS }

// Create creates name with the store's file mode. The file is empty until
// it is changed, and its directory is closed to other users by the
// store's directory mode.
func (p permFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, category)
	if err != nil || !p.osFiles {
		return f, err
	}
	if err := os.Chmod(name, p.file); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenReadWrite opens name for writing, creating it with the store's file
// mode if it is missing.
func (p permFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if p.osFiles {
		if err := p.createMissing(name); err != nil {
			return nil, err
		}
	}
	return p.FS.OpenReadWrite(name, category, opts...)
}

// Lock takes Pebble's lock on its directory, with the store's file mode;
// for a read-only store it takes none.
func (p permFS) Lock(name string) (io.Closer, error) {
	if p.readOnly {
		return noLock{}, nil
	}
	if p.osFiles {
		if err := p.createMissing(name); err != nil {
			return nil, err
		}
	}
	return p.FS.Lock(name)
}

// createMissing creates name, empty, with the store's file mode if it does
// not exist. An existing file is not opened: closing a descriptor would
// drop the fcntl locks this process holds on it.
func (p permFS) createMissing(name string) error {
	f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, p.file)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return errors.Join(f.Chmod(p.file), f.Close())
}

// MkdirAll creates dir and its missing parents with the store's directory
// mode.
func (p permFS) MkdirAll(dir string, _ os.FileMode) error {
	if !p.osFiles {
		return p.FS.MkdirAll(dir, p.dir)
	}
	var missing []string
	for d := dir; ; d = p.PathDir(d) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if p.PathDir(d) == d {
			break
		}
	}
	if err := p.FS.MkdirAll(dir, p.dir); err != nil {
		return err
	}
	for _, d := range missing {
		if err := os.Chmod(d, p.dir); err != nil {
			return err
		}
	}
	return nil
}
