// The store directory: its FORMAT file, and telling an interrupted
// creation from a store with data.

package dedup

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/internal/fsutil"
	"github.com/seed42300104/dedup/wal"
)

// checkDir makes sure dir is a store, or can become one, before Open
// writes anything in it: with mustExist it needs a FORMAT file; otherwise dir
// is created if missing, and an existing one must be a directory that
// holds a store or nothing but the leftovers of an interrupted creation.
func checkDir(fs vfs.FS, dir string, mustExist bool) error {
	if mustExist {
		if _, err := fs.Stat(fs.PathJoin(dir, formatFile)); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrNotStore, dir, err)
		}
		return nil
	}
	st, err := fs.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fsutil.MkdirAll(fs, dir)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrNotStore, dir)
	}
	if _, err := fs.Stat(fs.PathJoin(dir, formatFile)); err == nil {
		return nil
	}
	return onlyLeftovers(fs, dir)
}

// onlyLeftovers fails with ErrNotStore unless dir holds nothing but what an
// interrupted creation of a store leaves.
func onlyLeftovers(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		switch n {
		case lockFile, formatFile + ".tmp", indexDir, walDir, clockFile, clockFile + ".tmp":
		default:
			return fmt.Errorf("%w: %s holds %q and no %s file", ErrNotStore, dir, n, formatFile)
		}
	}
	return nil
}

// checkFormat reads the FORMAT file, and moves an older version up to
// FormatVersion unless the store is opened read-only. Without one, a directory that holds
// nothing but what an interrupted creation leaves is cleared for a new
// store (fresh): no write was ever acknowledged in it. Anything else there
// means it is not a store.
func (s *Store) checkFormat() (fresh bool, err error) {
	fs := s.opts.FS
	path := fs.PathJoin(s.dir, formatFile)
	b, err := fsutil.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) && !s.opts.ReadOnly {
		s.format = FormatVersion
		return true, s.clearInterruptedCreation()
	}
	if err != nil {
		return false, err
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "dedup store format ")
	n, perr := strconv.Atoi(v)
	switch {
	case !ok || perr != nil:
		return false, fmt.Errorf("%w: %s: offset 0: unreadable %q", ErrCorrupt, path, b)
	case n < oldestFormatVersion || n > FormatVersion:
		return false, fmt.Errorf("%w: %s: version %d, this build reads %d to %d", ErrIncompatibleFormat, path, n, oldestFormatVersion, FormatVersion)
	case n < FormatVersion && !s.opts.ReadOnly:
		if err := writeFormat(fs, s.dir); err != nil {
			return false, fmt.Errorf("dedup: moving %s from version %d to %d: %w", path, n, FormatVersion, err)
		}
		s.opts.Logger.Info("dedup: store format moved up", "dir", s.dir, "from", n, "to", FormatVersion)
		n = FormatVersion
	}
	s.format = n
	return false, nil
}

func (s *Store) clearInterruptedCreation() error {
	fs := s.opts.FS
	if err := onlyLeftovers(fs, s.dir); err != nil {
		return err
	}
	what, err := storeData(fs, s.dir)
	if err != nil {
		return err
	}
	if what != "" {
		return fmt.Errorf("%w: %s has no %s file but holds %s: refusing to start over on it", ErrCorrupt, s.dir, formatFile, what)
	}
	for _, n := range []string{indexDir, walDir, formatFile + ".tmp", clockFile, clockFile + ".tmp"} {
		if err := fs.RemoveAll(fs.PathJoin(s.dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// storeData names data that only a created store writes: a checkpoint, a
// Pebble table or a WAL record. An interrupted creation leaves none, since
// FORMAT is written before Open returns and so before any write.
func storeData(fs vfs.FS, dir string) (string, error) {
	if what, err := index.HasData(fs, fs.PathJoin(dir, indexDir)); what != "" || err != nil {
		return what, err
	}
	written, err := wal.HasRecords(fs, fs.PathJoin(dir, walDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if written {
		return "WAL records", nil
	}
	return "", nil
}

func writeFormat(fs vfs.FS, dir string) error {
	p := fmt.Appendf(nil, "dedup store format %d\n", FormatVersion)
	return fsutil.ReplaceFile(fs, fs.PathJoin(dir, formatFile), p)
}
