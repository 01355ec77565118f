package dedup

import (
	"github.com/seed42300104/dedup/wal"
)

// VerifyReport is what Verify checked and found.
type VerifyReport struct {
	// WALRecords is the number of WAL records read: those of the
	// segments Open reads, from the one holding the checkpoint on.
	WALRecords uint64 `json:"wal_records"`
	// IndexKeys is the number of keys in Pebble.
	IndexKeys uint64 `json:"index_keys"`
	// Uncovered lists Pebble keys, in hex, that no filter covers: marks
	// the store would wrongly call new. It should be empty.
	Uncovered []string `json:"uncovered,omitempty"`
}

// Verify checks the whole store: the WAL as Open reads it (the CRCs and
// LSN sequence of the segments from the checkpoint on, and that none is
// missing or cut short), every Pebble block's checksum, and that every
// live key in Pebble is covered by its generation's filter. Damage is an
// error wrapping ErrCorrupt; uncovered keys are listed in the report.
// Writes and checkpoints wait while it runs.
func (s *Store) Verify() (VerifyReport, error) {
	// No checkpoint may move the replay start, or remove the segments
	// before it, while the WAL is read as Open would read it.
	s.checkpointMu.Lock()
	defer s.checkpointMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return VerifyReport{}, ErrClosed
	}
	var r VerifyReport
	var err error
	if r.WALRecords, err = wal.Verify(s.opts.FS, s.opts.FS.PathJoin(s.dir, walDir), s.idx.CheckpointLSN()); err != nil {
		return r, storeError(err)
	}
	c, err := s.idx.Verify(s.opts.Clock.Now())
	r.IndexKeys, r.Uncovered = c.Keys, c.Uncovered
	return r, storeError(err)
}
