package dedup

import (
	"bytes"
	"time"

	"github.com/seed42300104/dedup/index"
)

// Explanation says why the store answers as it does for one ID: its
// answer, and what each structure holds of the ID.
type Explanation struct {
	Live     bool      `json:"live"`
	Deadline time.Time `json:"deadline,omitzero"` // of the live mark
	// Record is the live mark's idempotency record, if it has one.
	Record *Record `json:"record,omitempty"`
	// FilterGenerations lists, by their end, the generations whose filter
	// may hold the ID. Empty means "definitely new".
	FilterGenerations []time.Time `json:"filter_generations"`
	// Unflushed is the newest version in the WAL tail not yet
	// checkpointed, if any: it decides over Pebble.
	Unflushed *Version `json:"unflushed,omitempty"`
	// Pebble lists the versions checkpointed to Pebble.
	Pebble []Version `json:"pebble"`
}

// Version is one stored version of an ID.
type Version struct {
	GenerationEnds time.Time `json:"generation_ends,omitzero"`
	Deadline       time.Time `json:"deadline,omitzero"`
	Forgotten      bool      `json:"forgotten,omitempty"`
	LSN            uint64    `json:"lsn,omitempty"` // its WAL record, if unflushed
}

// Explain reports what the store answers for id and why. It is for
// operators; it looks in every generation and is slower than Seen.
func (s *Store) Explain(id []byte) (Explanation, error) {
	if err := s.checkID(id); err != nil {
		return Explanation{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return Explanation{}, ErrClosed
	}
	k := s.idx.Key(id)
	e, live, err := s.idx.Lookup(k, s.opts.Clock)
	if err != nil {
		return Explanation{}, storeError(err)
	}
	ix, err := s.idx.Explain(k)
	if err != nil {
		return Explanation{}, storeError(err)
	}
	x := Explanation{Live: live, FilterGenerations: []time.Time{}, Pebble: []Version{}}
	if live {
		x.Deadline = e.Deadline.Time()
		if x.Record, err = recordOf(e); err != nil {
			return Explanation{}, err
		}
	}
	for _, g := range ix.Filters {
		x.FilterGenerations = append(x.FilterGenerations, g.End())
	}
	if v := ix.Memtable; v != nil {
		u := version(*v)
		x.Unflushed = &u
	}
	for _, v := range ix.Pebble {
		x.Pebble = append(x.Pebble, version(v))
	}
	return x, nil
}

func version(v index.Version) Version {
	out := Version{Forgotten: v.Deleted, LSN: v.LSN}
	if !v.Deleted {
		out.GenerationEnds, out.Deadline = v.Gen.End(), v.Deadline.Time()
	}
	return out
}

// Mark is one stored mark, as Scan yields it.
type Mark struct {
	ID       []byte
	Deadline time.Time // zero for a forget
	// Record is the mark's idempotency record, if it has one.
	Record *Record
	// Live is true for the mark the store answers with; with all, Scan
	// also yields expired, forgotten and superseded versions, not live.
	Live bool
}

// Scan calls fn for each ID that has a live mark, once, and stops when fn
// returns false. IDs without prefix are skipped. With all it also yields
// the versions that are not live. It answers for the instant it starts,
// in steps of at most scanChunk marks: each step is read while writes
// wait, and fn is called for its marks holding no lock, so that fn may
// call the store (Forget what it sees, say). Scan holds the marks of one
// step, whatever the store holds, and an index of the marks not yet
// checkpointed that puts them in key order, 16 B each, so that a step
// reads those of its keys rather than all of them. The marks come in the
// order of their generation, then ID. A write made during Scan, by fn or
// another goroutine, may or may not be seen: an ID marked anew may come
// again with its new version. A mark that is there for the whole Scan
// comes once. If the store is closed during Scan, Scan returns ErrClosed.
// It is for operators and exports.
func (s *Store) Scan(prefix []byte, all bool, fn func(Mark) bool) error {
	now := s.opts.Clock.Now()
	sc := s.idx.NewScanner()
	var after []byte
	for {
		marks, last, err := s.scanStep(sc, prefix, all, now, after)
		for _, m := range marks {
			if !fn(m) {
				return nil
			}
		}
		if err != nil || last == nil {
			return err
		}
		after = last
	}
}

// scanChunk is how many keys one step of Scan reads: it bounds the marks
// Scan holds and how long a step makes writes wait.
const scanChunk = 4096

// scanStep returns the marks of one step of Scan, of the keys after the
// key after, and the last key it read, or nil if it read the last; it
// stops at a record that does not decode and returns the error.
func (s *Store) scanStep(sc *index.Scanner, prefix []byte, all bool, now time.Time, after []byte) ([]Mark, []byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	var marks []Mark
	var err error // a record that does not decode
	last, serr := sc.Scan(now, all, after, scanChunk, func(m index.Mark) bool {
		if !bytes.HasPrefix(m.ID, prefix) {
			return true
		}
		out := Mark{ID: m.ID, Live: m.Live}
		if m.Entry.Deadline != 0 {
			out.Deadline = m.Entry.Deadline.Time()
		}
		if out.Record, err = recordOf(m.Entry); err != nil {
			return false
		}
		marks = append(marks, out)
		return true
	})
	if serr != nil {
		return nil, nil, storeError(serr)
	}
	return marks, last, err
}
