package wal

import (
	"errors"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// spareName is the file the next segment is prepared in: created, filled
// with zeros and synced while the current segment fills, it becomes a
// segment by a rename. Records then land in written zeros from the start
// (see Log.zeroed), and
// no write of records pays for extending the file, nor for filling the
// zeros ahead of itself and syncing them.
const spareName = "next.spare"

// startSpare starts preparing the spare in a goroutine, unless it is
// ready or being prepared. write asks for it once records fill half of
// the current segment, so a log that is opened and closed without filling
// one never pays for it.
func (l *Log) startSpare() {
	l.mu.Lock()
	if l.spareReady || l.spareBusy || l.closed {
		l.mu.Unlock()
		return
	}
	l.spareBusy, l.spareSize = true, l.nextCap
	size := l.spareSize
	l.spareWG.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.spareWG.Done()
		l.prepareSpare(size)
	}()
}

// errStopped ends the preparation of a spare when the log closes.
var errStopped = errors.New("wal: closed while preparing the next segment")

// prepareSpare creates the spare, fills it with zeros and syncs it. A
// failure costs only the speed the spare would give: it is logged, and
// the next rotation creates its segment as if there were no spare.
func (l *Log) prepareSpare(size int64) {
	err := l.makeSpare(size)
	l.mu.Lock()
	l.spareBusy, l.spareReady = false, err == nil
	l.cond.Broadcast()
	l.mu.Unlock()
	if err != nil && !errors.Is(err, errStopped) {
		l.opts.Logger.Warn("wal: spare segment not prepared", "dir", l.dir, "err", err)
	}
}

func (l *Log) makeSpare(size int64) error {
	fs := l.opts.FS
	f, err := fs.Create(fs.PathJoin(l.dir, spareName), vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	return errors.Join(fillSpare(f, size, &l.stopSpare), f.Close())
}

// fillSpare fills f with size zeros and syncs it, unless stop is set
// meanwhile.
func fillSpare(f vfs.File, size int64, stop *atomic.Bool) error {
	const step = 8 << 20 // between checks for Close
	for off := int64(0); off < size; off += step {
		if stop.Load() {
			return errStopped
		}
		if err := writeZeros(f, off, min(off+step, size)); err != nil {
			return err
		}
	}
	if stop.Load() {
		return errStopped
	}
	return f.Sync()
}

// useSpare makes the spare, if it is ready and size bytes long, the
// segment whose first LSN is first: its header written and synced, then
// renamed and installed. It reports whether it did. A spare of another
// size is removed. A failure before the rename changes nothing durable: it
// is logged, and the segment is created instead.
func (l *Log) useSpare(first uint64, size int64) (bool, error) {
	l.mu.Lock()
	ready, fits := l.spareReady, l.spareSize == size
	l.spareReady = false
	l.mu.Unlock()
	if !ready {
		return false, nil
	}
	fs := l.opts.FS
	path := fs.PathJoin(l.dir, spareName)
	if !fits {
		if err := fs.Remove(path); err != nil {
			l.opts.Logger.Warn("wal: spare segment of another size not removed", "dir", l.dir, "err", err)
		}
		return false, nil
	}
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	renamed := false
	if err == nil {
		renamed, err = l.install(f, path, first, size, size)
	}
	if err != nil && !renamed {
		// The spare removed from outside, say: the segment is created
		// instead.
		l.opts.Logger.Warn("wal: spare segment not used", "dir", l.dir, "err", err)
		return false, nil
	}
	return err == nil, err
}
