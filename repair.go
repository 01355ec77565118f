package dedup

import (
	"fmt"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/wal"
)

// Repair looks for the damage in the WAL of the store in dir that makes
// Open fail with ErrCorrupt, and says what cutting the log there loses:
// the LSN range and the count of records after the cut. With apply it
// cuts: the damaged segment is kept aside as .broken, then truncated at its
// last good record, and later segments are moved aside too. It never runs
// on its own. It returns nil if the WAL has no damage. It takes the store's
// lock, so it refuses a store in use.
func Repair(dir string, opts *Options, apply bool) (*Damage, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.FS = newPermFS(o.FS, &o)
	fs := o.FS
	if _, err := fs.Stat(fs.PathJoin(dir, formatFile)); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotStore, dir, err)
	}
	lock, err := lockStore(fs, dir, false, o.FileMode)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	after, err := index.ReadCheckpointLSN(fs, fs.PathJoin(dir, indexDir))
	if err != nil {
		return nil, storeError(err)
	}
	d, err := wal.Repair(fs, fs.PathJoin(dir, walDir), after, o.SegmentSize, apply)
	if d == nil {
		return nil, storeError(err)
	}
	attrs := []any{"dir", dir, "segment", d.Segment, "offset", d.Offset, "covered", d.Covered,
		"first_lost_lsn", d.FirstLost, "last_lost_lsn", d.LastLost, "lost_records", d.Lost,
		"later_segments", len(d.Later), "next_lsn", d.Next, "damage", d.Err}
	switch {
	case !apply:
		o.Logger.Info("dedup: repair found damage in the WAL", attrs...)
	case err == nil:
		o.Logger.Warn("dedup: repair cut the WAL", attrs...)
	default:
		o.Logger.Error("dedup: repair failed", append(attrs, "err", err)...)
	}
	return &Damage{
		Segment: d.Segment, Offset: d.Offset, Covered: d.Covered,
		FirstLost: d.FirstLost, LastLost: d.LastLost, Lost: d.Lost,
		Later: d.Later, Next: d.Next, Err: storeError(d.Err),
	}, storeError(err)
}

// Damage is what Repair found in a store's WAL, and what mending it loses.
type Damage struct {
	// Segment is the damaged file (a segment, a missing segment or the
	// WAL's STATE file), Offset where its good records end: the log is cut
	// there.
	Segment string
	Offset  int64
	// Covered says that the damage lies in records the checkpoint covers,
	// which the index holds already: they are dropped, and every record
	// after the checkpoint that can be read in sequence is kept.
	Covered bool
	// FirstLost is the LSN of the first record lost after the checkpoint,
	// 0 if none is. Lost counts the records after the cut that could still
	// be read, up to LastLost; bytes that cannot be read (a segment cut
	// short or missing) may have held more.
	FirstLost, LastLost uint64
	Lost                int
	// Later are the segments after the damaged one that are moved aside
	// too.
	Later []string
	// Next is the LSN of the next record after the repair: past every LSN
	// the damaged log used or may have used, so that fencing tokens keep
	// rising.
	Next uint64
	// Err is the damage, as Open reports it (wrapping ErrCorrupt).
	Err error
}
