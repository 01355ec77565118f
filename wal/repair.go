package wal

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// Damage is the first damage Open would meet in a log, and what mending
// it loses.
type Damage struct {
	// Segment is the damaged file (a segment, a missing segment or the
	// STATE file), Offset where its good records end: the log is cut
	// there.
	Segment string
	Offset  int64
	// Covered says that the damage lies in records at or below the
	// checkpoint, which the index holds already. The repair then drops
	// them, and keeps every record after the checkpoint that can be read
	// in sequence: in a new segment that starts after the checkpoint.
	Covered bool
	// FirstLost is the LSN of the first record lost after the checkpoint,
	// 0 if none is. Lost counts the records after the cut that could still
	// be read, up to LastLost. Bytes that cannot be read (a segment cut
	// short or missing) may have held more: Next passes those too.
	FirstLost, LastLost uint64
	Lost                int
	// Later are the segments after the damaged one that go too.
	Later []string
	// Next is the LSN of the next record after the repair: past every LSN
	// that a record or segment name shows was used, kept or cut, so that
	// LSNs, and the fencing tokens taken from them, keep rising.
	Next uint64
	Err  error // the damage, as Open reports it

	plan repairPlan
}

// repairPlan is how Repair mends the damage.
type repairPlan struct {
	segment   bool // the damage is in a segment's contents, data
	data      []byte
	size      int64  // how long the cut segment must stay (see checkSize)
	salvaged  []byte // the new segment holding the records after the checkpoint
	salvageAt uint64 // its first LSN
	state     logState
	prior     uint64 // the newest segment the STATE before the repair named
	guess     int64  // the largest size a segment of this log is known to have
}

// Repair looks for the first damage that Open would meet in the log in
// dir, replaying from after, and says what mending it loses; with apply it
// mends it. The damaged segment is kept aside with a .broken suffix (and
// later segments that go with it), the log is cut at its last good record,
// and STATE records the LSNs cut so that they are never given out again.
// Damage confined to records at or below after is skipped instead: every
// record after the checkpoint that can be read in sequence is kept. It
// returns nil if the log has no damage. A torn tail is not damage: Open
// truncates it. It refuses a log holding a segment of an unknown format
// version, with ErrIncompatibleFormat: a newer build may read it whole.
//
// segmentSize is the segment size the log was written with, as far as the
// caller knows. With the sizes of the segments and the spare it bounds
// how many records bytes that cannot be read (a segment missing or cut
// short) may have held, so that Next is past their LSNs too.
func Repair(fs vfs.FS, dir string, after uint64, segmentSize int64, apply bool) (*Damage, error) {
	r, err := readLog(fs, dir, after, func(uint64, []byte) error { return nil })
	if err == nil {
		return nil, nil
	}
	if r.bad < 0 {
		return nil, err // not damage: an unknown format, or a failed read
	}
	for _, first := range r.firsts[min(r.bad+1, len(r.firsts)):] {
		path := fs.PathJoin(dir, segmentName(first))
		h, herr := readHeader(fs, path)
		if herr != nil {
			return nil, herr
		}
		if herr := checkHeader(path, h, first); errors.Is(herr, ErrIncompatibleFormat) {
			return nil, fmt.Errorf("refusing to cut the log in front of a segment of another format: %w", herr)
		}
	}
	d := &Damage{Err: err}
	d.plan.state, d.plan.prior = r.state, r.state.newest
	d.plan.guess = segmentSize
	if st, err := fs.Stat(fs.PathJoin(dir, spareName)); err == nil {
		d.plan.guess = max(d.plan.guess, st.Size())
	}
	for _, first := range r.firsts {
		h, err := readHeader(fs, fs.PathJoin(dir, segmentName(first)))
		if err != nil {
			return nil, err
		}
		d.plan.guess = max(d.plan.guess, preallocated(h))
	}
	switch {
	case r.badState:
		// The segments are whole: STATE is rebuilt from them, without the
		// cuts it held (a gap that one allowed then shows as damage).
		d.Segment = fs.PathJoin(dir, stateName)
		d.plan.state = logState{}
		whole, err := readLogState(fs, dir, after, true, func(uint64, []byte) error { return nil })
		if err != nil {
			return nil, fmt.Errorf("STATE is damaged, and the segments without it: %w", err)
		}
		d.Next = whole.next
	case r.bad == len(r.firsts):
		// The newest segment is missing: its records cannot be known.
		d.Segment = fs.PathJoin(dir, segmentName(r.state.newest))
		d.FirstLost = r.badNext
		d.plan.state.cuts = append(d.plan.state.cuts, lsnRange{r.badNext, max(r.badNext, lsnBound(r.state.newest, d.plan.guess))})
	default:
		if err := d.planCut(fs, dir, r, after); err != nil {
			return nil, err
		}
	}
	d.plan.state.newest = 0
	d.Next = max(d.Next, after+1, r.state.floor()+1, d.plan.state.floor()+1)
	for _, first := range r.firsts {
		if kept := !d.goes(fs, dir, first); kept {
			d.plan.state.newest = first
			d.Next = max(d.Next, first)
		}
	}
	if d.plan.salvaged != nil && d.plan.state.newest < d.plan.salvageAt {
		d.plan.state.newest = d.plan.salvageAt
	}
	if !apply {
		return d, nil
	}
	return d, d.apply(fs, dir)
}

// goes reports whether the segment whose first LSN is first is moved
// aside by the repair.
func (d *Damage) goes(fs vfs.FS, dir string, first uint64) bool {
	path := fs.PathJoin(dir, segmentName(first))
	if path == d.Segment {
		return d.Offset == 0 || d.plan.salvaged != nil
	}
	for _, l := range d.Later {
		if l == path {
			return true
		}
	}
	return false
}

// planCut plans the mending of damage to segment r.bad.
func (d *Damage) planCut(fs vfs.FS, dir string, r *logRead, after uint64) error {
	i, b := r.bad, r.badData
	first := r.firsts[i]
	d.Segment = fs.PathJoin(dir, segmentName(first))
	d.plan.segment, d.plan.data, d.plan.size = true, b, max(int64(len(b)), preallocated(b))
	whole := preallocated(b)
	if whole == 0 {
		whole = d.plan.guess
	}
	chainNext := min(first, r.badNext) // beyond a gap, from the first LSN missing
	if checkHeader(d.Segment, b, first) == nil && first <= r.badNext {
		d.Offset = headerSize
		for d.Offset < int64(len(b)) {
			rec, ok := decodeRecord(b[d.Offset:])
			if !ok || rec.lsn != chainNext {
				break
			}
			chainNext++
			d.Offset += int64(rec.size)
		}
	}
	lostFrom := d.Offset
	if i == firstNeeded(r.firsts, after) && chainNext <= after {
		// The damage is at or below the checkpoint: what follows it may
		// be kept, from the record after the checkpoint on.
		d.Covered = true
		if off := findRecord(b, after+1); off > 0 {
			next := after + 1
			d.plan.salvaged, lostFrom, next = salvage(b, off, next, d.plan.size)
			d.plan.salvageAt = after + 1
			chainNext = next
		} else {
			chainNext = after + 1
		}
	}
	d.FirstLost = chainNext
	d.count(b, lostFrom)
	if d.Offset == 0 && d.plan.salvaged == nil {
		d.LastLost = max(d.LastLost, first) // a segment is named for a record that was to be written
	}
	cutTo := d.LastLost
	missing := whole - int64(len(b))
	if missing > 0 {
		// Bytes cut off the segment may have held records, after those
		// kept or salvaged.
		cutTo = lsnBound(d.FirstLost, whole-max(lostFrom, headerSize))
	}
	if i+1 < len(r.firsts) && (d.plan.salvaged == nil || r.firsts[i+1] != chainNext || d.Lost > 0) {
		for _, later := range r.firsts[i+1:] {
			path := fs.PathJoin(dir, segmentName(later))
			lb, err := fsutil.ReadFile(fs, path)
			if err != nil {
				return err
			}
			d.count(lb, headerSize)
			d.LastLost = max(d.LastLost, later)
			d.Later = append(d.Later, path)
		}
	}
	if d.plan.salvaged != nil && d.Lost == 0 && d.Later == nil && missing <= 0 {
		d.FirstLost = 0 // nothing after the checkpoint is lost
	}
	cutTo = max(cutTo, d.LastLost)
	if d.FirstLost != 0 && cutTo >= d.FirstLost {
		d.plan.state.cuts = append(d.plan.state.cuts, lsnRange{d.FirstLost, cutTo})
	}
	d.Next = chainNext
	return nil
}

// lsnBound returns an LSN at or above every LSN that size bytes of
// records from LSN first on may hold.
func lsnBound(first uint64, size int64) uint64 {
	return first + uint64(max(size, 0)/int64(recordSize(1)))
}

// findRecord returns the offset of the record with LSN lsn in segment b,
// or 0 if no valid one is there.
func findRecord(b []byte, lsn uint64) int64 {
	for off := int64(headerSize); off+recHeaderSize <= int64(len(b)); off += align {
		if r, ok := decodeRecord(b[off:]); ok && r.lsn == lsn {
			return off
		}
	}
	return 0
}

// salvage builds a segment of size bytes that starts at LSN first and
// holds the records of b from offset off on, as long as they follow in
// sequence. It returns the segment, where those records end in b and the
// LSN after them. The records are framed anew at their new offsets, each
// vouching for everything before it: the segment is synced whole before
// it is used.
func salvage(b []byte, off int64, first uint64, size int64) (seg []byte, end int64, next uint64) {
	seg = segmentHeader(first, size)
	for next = first; off < int64(len(b)); next++ {
		r, ok := decodeRecord(b[off:])
		if !ok || r.lsn != next {
			break
		}
		seg = appendRecord(seg, r.lsn, uint64(len(seg)), r.payload)
		off += int64(r.size)
	}
	if int64(len(seg)) < size {
		seg = append(seg, make([]byte, size-int64(len(seg)))...)
	}
	return seg, off, next
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

// apply mends the log as planned. Each step leaves a log that Open reads
// no worse than before it: the LSNs to cut are in STATE before any record
// goes, and a salvaged segment is in place before the damaged one goes
// (STATE names it only then).
func (d *Damage) apply(fs vfs.FS, dir string) error {
	if !d.plan.segment && d.Segment == fs.PathJoin(dir, stateName) {
		if err := vfs.Copy(fs, d.Segment, d.Segment+".broken"); err != nil {
			return err
		}
	}
	// The cuts are durable before any record goes. A salvaging repair
	// names its new segment newest only once that segment is in place.
	first := d.plan.state
	if d.plan.salvaged != nil {
		first.newest = d.plan.prior
	}
	if err := writeState(fs, dir, first); err != nil {
		return err
	}
	switch {
	case !d.plan.segment:
		// STATE, or a missing segment: only STATE changes.
	case d.plan.salvaged != nil:
		tmp := fs.PathJoin(dir, newName)
		if err := fsutil.WriteFile(fs, tmp, d.plan.salvaged); err != nil {
			return err
		}
		if err := fs.Rename(tmp, fs.PathJoin(dir, segmentName(d.plan.salvageAt))); err != nil {
			return err
		}
		if err := fsutil.SyncDir(fs, dir); err != nil {
			return err
		}
		if err := fs.Rename(d.Segment, d.Segment+".broken"); err != nil {
			return err
		}
	case d.Offset == 0:
		if err := fs.Rename(d.Segment, d.Segment+".broken"); err != nil {
			return err
		}
	default:
		if err := vfs.Copy(fs, d.Segment, d.Segment+".broken"); err != nil {
			return err
		}
		f, err := fs.OpenReadWrite(d.Segment, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		// Zeros from the cut on, and up to the size checkSize expects.
		err = writeZeros(f, d.Offset, d.plan.size)
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
	if err := fsutil.SyncDir(fs, dir); err != nil {
		return err
	}
	if d.plan.salvaged != nil {
		return writeState(fs, dir, d.plan.state)
	}
	return nil
}
