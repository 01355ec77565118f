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
func Repair(dir string, opts *Options, apply bool) (*wal.Damage, error) {
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
	return d, storeError(err)
}
