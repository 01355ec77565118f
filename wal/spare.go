package wal

import (
	"errors"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// spareName is the file the next segment is prepared in: created, filled
// with zeros and synced while the current segment fills, it becomes a
// segment by a rename. Records then land in written zeros from the start
// (see Log.zeroed), and
// no write of records pays for extending the file, nor for filling the
// zeros ahead of itself and syncing them.
const spareName = "next.spare"

// startSpare prepares the spare unless it is ready or being prepared. The
// writer asks for it once records fill half of the current segment, so a
// log that is opened and closed without filling one never pays for it. On
// the OS filesystem a goroutine prepares it meanwhile. On any other (an
// in-memory or error-injecting FS in tests) it is prepared before
// startSpare returns, so a test sees the same operations in every run.
func (l *Log) startSpare() {
	background := l.opts.direct()
	l.mu.Lock()
	if l.spareReady || l.spareBusy || l.closed {
		l.mu.Unlock()
		return
	}
	l.spareBusy = true
	l.mu.Unlock()
	if !background {
		l.prepareSpare()
		return
	}
	l.spareWG.Add(1)
	go func() {
		defer l.spareWG.Done()
		l.prepareSpare()
	}()
}

// errStopped ends the preparation of a spare when the log closes.
var errStopped = errors.New("wal: closed while preparing the next segment")

// prepareSpare creates the spare, fills it with zeros and syncs it. A
// failure costs only the speed the spare would give: it is logged, and
// the next rotation creates its segment as if there were no spare.
func (l *Log) prepareSpare() {
	err := l.makeSpare()
	l.mu.Lock()
	l.spareBusy, l.spareReady = false, err == nil
	l.mu.Unlock()
	if err != nil && err != errStopped && l.opts.Logf != nil {
		l.opts.Logf("dedup/wal: %s: preparing the next segment: %v (the next rotation creates one)", l.dir, err)
	}
}

func (l *Log) makeSpare() error {
	fs := l.opts.FS
	f, err := fs.Create(fs.PathJoin(l.dir, spareName), vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer f.Close()
	const step = 8 << 20 // between checks for Close
	for off := int64(0); off < l.opts.SegmentSize; off += step {
		if l.stopSpare.Load() {
			return errStopped
		}
		if err := writeZeros(f, off, min(off+step, l.opts.SegmentSize)); err != nil {
			return err
		}
	}
	if l.stopSpare.Load() {
		return errStopped
	}
	return f.Sync()
}

// useSpare makes the spare, if it is ready, the segment whose first LSN is
// first: its header written and synced, then renamed and installed. It
// reports whether it did. A failure before the rename changes nothing
// durable: it is logged, and the segment is created instead.
func (l *Log) useSpare(first uint64) (bool, error) {
	l.mu.Lock()
	ready := l.spareReady
	l.spareReady = false
	l.mu.Unlock()
	if !ready {
		return false, nil
	}
	fs := l.opts.FS
	path := fs.PathJoin(l.dir, spareName)
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	renamed := false
	if err == nil {
		renamed, err = l.install(f, path, first, l.opts.SegmentSize)
	}
	if err != nil && !renamed {
		// The spare removed from outside, say: the segment is created
		// instead.
		if l.opts.Logf != nil {
			l.opts.Logf("dedup/wal: %s: using the spare segment: %v (creating one instead)", l.dir, err)
		}
		return false, nil
	}
	return err == nil, err
}
