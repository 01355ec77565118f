package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// ErrFailedSync is returned by Open for a log that met a failed write or
// fsync earlier in this boot. Linux marks the pages of a failed writeback
// clean and keeps them in the page cache, so a reopen would replay
// records the disk may not hold, and a new descriptor's fsync would
// report success over them (PostgreSQL's fsyncgate). After a reboot the
// page cache is gone and replay reads what the disk holds.
var ErrFailedSync = errors.New("wal: a write or fsync failed in this boot")

// failedName is the marker a log writes when it becomes fail-stop on its
// OS files. It names the boot in which the failure happened:
//
//	dedup WAL failure
//	boot <boot ID, empty if unknown>
//	<the error>
//
// Part of the on-disk format.
const (
	failedName  = "FAILED"
	failedMagic = "dedup WAL failure\n"
)

// dataFailure is a failed write or fsync of records: the page cache may
// then hold records the disk does not. A failure to create, extend or
// rename a segment (a full disk, say) leaves no such records, and does not
// keep the log from reopening.
type dataFailure struct{ err error }

func (e dataFailure) Error() string { return e.err.Error() }
func (e dataFailure) Unwrap() error { return e.err }

// markFailed records that the log met cause, so that Open in the same
// boot refuses it. Only OS files have a page cache to distrust. A marker
// that cannot be written is logged: the disk is failing already, and the
// log is fail-stop either way. The caller holds mu.
func (l *Log) markFailed(cause error) {
	if !l.opts.direct() {
		return
	}
	p := fmt.Appendf(nil, "%sboot %s\n%v\n", failedMagic, l.opts.Boot, cause)
	path := l.opts.FS.PathJoin(l.dir, failedName)
	if err := fsutil.ReplaceFile(l.opts.FS, path, p); err != nil {
		l.opts.Logger.Error("wal: failure marker not written", "path", path, "cause", cause, "err", err)
	}
}

// checkFailed looks for the marker of an earlier failure. Written in this
// boot, or in a boot it cannot tell from this one, it fails a writable
// Open with ErrFailedSync and makes a read-only one warn. Written in
// another boot, it is stale: clear says so, and the caller removes the
// marker once recovery has read the disk.
func (l *Log) checkFailed() (clear bool, err error) {
	path := l.opts.FS.PathJoin(l.dir, failedName)
	p, err := fsutil.ReadFile(l.opts.FS, path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	boot, cause := "", ""
	if rest, ok := bytes.CutPrefix(p, []byte(failedMagic)); ok {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		boot = string(bytes.TrimPrefix(line, []byte("boot ")))
		cause = string(bytes.TrimSpace(after))
	}
	if boot != "" && l.opts.Boot != "" && boot != l.opts.Boot {
		return true, nil
	}
	if l.opts.ReadOnly {
		// What this read-only open shows may not be on disk.
		l.opts.Logger.Warn("wal: a write or fsync failed in this boot", "path", path, "cause", cause)
		return false, nil
	}
	return false, fmt.Errorf("%w: %s records %q: the page cache may hold records the disk does not; reboot, then open the store again (or delete %s once the machine has rebooted)",
		ErrFailedSync, path, cause, path)
}

// clearFailed removes the marker of a failure in an earlier boot, once
// recovery has read what the disk holds.
func (l *Log) clearFailed() error {
	path := l.opts.FS.PathJoin(l.dir, failedName)
	if err := l.opts.FS.Remove(path); err != nil {
		return err
	}
	l.opts.Logger.Info("wal: cleared the failure marker of an earlier boot", "path", path)
	return fsutil.SyncDir(l.opts.FS, l.dir)
}
