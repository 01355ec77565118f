package wal

import (
	"errors"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// Damage is the first damage Open would meet in a log, and what cutting
// the log there loses.
type Damage struct {
	// Segment is the damaged segment file, Offset where its good records
	// end: the log is cut there.
	Segment string
	Offset  int64
	// FirstLost is the LSN of the first record lost. Lost counts the
	// records after the cut that could still be read, up to LastLost.
	FirstLost, LastLost uint64
	Lost                int
	// Later are the segments after the damaged one: they go too.
	Later []string
	Err   error // the damage, as Open reports it
}

// Repair looks for the first damage in the records above after, as Open
// reads them. If apply is set it cuts the log there: the damaged segment
// is copied aside with a .broken suffix and zeroed from the cut on, and
// the later segments are renamed aside. It returns nil if the log has no
// damage. A torn tail is not damage: Open truncates it.
func Repair(fs vfs.FS, dir string, after uint64, apply bool) (*Damage, error) {
	firsts, err := listSegments(fs, dir)
	if err != nil {
		return nil, err
	}
	next := after + 1
	for i := firstNeeded(firsts, after); i < len(firsts); i++ {
		path := fs.PathJoin(dir, segmentName(firsts[i]))
		b, err := fsutil.ReadFile(fs, path)
		if err != nil {
			return nil, err
		}
		s, err := scanInLog(path, b, firsts, i, next, after, func(uint64, []byte) error { return nil })
		if err == nil {
			next = max(next, s.next)
			continue
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrIncompatibleFormat) {
			return nil, err
		}
		d := cutAt(path, b, firsts[i], next, err)
		for _, first := range firsts[i+1:] {
			later := fs.PathJoin(dir, segmentName(first))
			lb, err := fsutil.ReadFile(fs, later)
			if err != nil {
				return nil, err
			}
			d.count(lb, headerSize)
			d.Later = append(d.Later, later)
		}
		if apply {
			if err := d.apply(fs, dir, b); err != nil {
				return nil, err
			}
		}
		return d, nil
	}
	return nil, nil
}

// cutAt finds where the good records of segment b end.
func cutAt(path string, b []byte, first, next uint64, damage error) *Damage {
	d := &Damage{Segment: path, Err: damage, FirstLost: next}
	if checkHeader(path, b, first) != nil || first > next {
		d.count(b, headerSize)
		return d // the whole segment goes
	}
	d.Offset, d.FirstLost = headerSize, first
	for d.Offset < int64(len(b)) {
		r, ok := decodeRecord(b[d.Offset:])
		if !ok || r.lsn != d.FirstLost {
			break
		}
		d.FirstLost++
		d.Offset += int64(r.size)
	}
	d.count(b, d.Offset)
	return d
}

// count adds the records of b, from offset off on, that can still be read
// and come after the cut.
func (d *Damage) count(b []byte, off int64) {
	for ; off+recHeaderSize <= int64(len(b)); off += align {
		if r, ok := decodeRecord(b[off:]); ok && r.lsn >= d.FirstLost {
			d.Lost++
			d.LastLost = max(d.LastLost, r.lsn)
		}
	}
}

// apply cuts the log: the damaged segment is copied aside, then zeroed
// from the cut on (or moved aside whole if nothing of it is good), and the
// later segments are moved aside.
func (d *Damage) apply(fs vfs.FS, dir string, b []byte) error {
	if d.Offset == 0 {
		if err := fs.Rename(d.Segment, d.Segment+".broken"); err != nil {
			return err
		}
	} else {
		if err := vfs.Copy(fs, d.Segment, d.Segment+".broken"); err != nil {
			return err
		}
		f, err := fs.OpenReadWrite(d.Segment, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		err = writeZeros(f, d.Offset, int64(len(b)))
		if err == nil {
			err = f.Sync()
		}
		if err = errors.Join(err, f.Close()); err != nil {
			return err
		}
	}
	for _, later := range d.Later {
		if err := fs.Rename(later, later+".broken"); err != nil {
			return err
		}
	}
	return fsutil.SyncDir(fs, dir)
}
