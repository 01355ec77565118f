// Package fsutil holds the few durable-file idioms the store's packages
// share, on top of Pebble's vfs.FS.
package fsutil

import (
	"bytes"
	"errors"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// SyncDir fsyncs a directory, making the entries created or removed in it
// durable.
func SyncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// MkdirAll creates dir and any missing parents, and fsyncs the parent of
// each directory it creates, so the new path survives a power loss.
func MkdirAll(fs vfs.FS, dir string) error {
	if _, err := fs.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := fs.PathDir(dir)
	if parent != dir {
		if err := MkdirAll(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return SyncDir(fs, parent)
}

// ReadFile reads the whole of a file, into one buffer of its size: a WAL
// segment is tens of MiB, and growing a buffer to that costs as much as
// replaying it.
func ReadFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, st.Size()+1) // one more byte, to see the end without growing
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == cap(b) { // the file grew since Stat
			b = append(b, 0)[:len(b)]
		}
	}
}

// WriteFile creates path holding p and fsyncs it. The caller syncs the
// directory when the new entry must be durable.
func WriteFile(fs vfs.FS, path string, p []byte) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(p)); err != nil {
		f.Close()
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

// ReplaceFile makes path hold p atomically: it writes and fsyncs path.tmp,
// renames it over path and fsyncs the directory. After a crash path holds
// either its old content or p, never a part of p.
func ReplaceFile(fs vfs.FS, path string, p []byte) error {
	tmp := path + ".tmp"
	if err := WriteFile(fs, tmp, p); err != nil {
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(fs, fs.PathDir(path))
}

// CopyFile copies src to a new file dst and fsyncs it. The caller syncs
// the directory when the new entry must be durable.
func CopyFile(fs vfs.FS, src, dst string) error {
	p, err := ReadFile(fs, src)
	if err != nil {
		return err
	}
	return WriteFile(fs, dst, p)
}
