package redisstore

import (
	"slices"
	"sync/atomic"

	"github.com/seed42300104/dedup"
)

// counters are what Counters reads: atomics, so that they cost the calls
// no lock.
type counters struct {
	checks [2][2]atomic.Uint64 // [batch][new]: IDs answered
	seen   [2]atomic.Uint64    // [seen]
	errs   [len(dedup.ErrorKinds)]atomic.Uint64
}

// count counts the error a call returns, if any, under its dedup kind.
func (c *counters) count(err *error) {
	if *err != nil {
		c.errs[slices.Index(dedup.ErrorKinds[:], dedup.ErrorKind(*err))].Add(1)
	}
}

// checked counts the answers of a check-and-mark.
func (c *counters) checked(batch bool, isNew []bool) {
	b := 0
	if batch {
		b = 1
	}
	fresh := uint64(0)
	for _, n := range isNew {
		if n {
			fresh++
		}
	}
	c.checks[b][1].Add(fresh)
	c.checks[b][0].Add(uint64(len(isNew)) - fresh)
}

// Counters returns what the store has counted since New, in the embedded
// store's terms, for package metrics: the checks by call and answer,
// Seen's answers and the errors by kind (an ErrNotReplicated is of kind
// "io"). The fields that describe an embedded store's files are zero.
func (s *Store) Counters() dedup.Counters {
	c := &s.counters
	out := dedup.Counters{
		SingleNew: c.checks[0][1].Load(), SingleDuplicates: c.checks[0][0].Load(),
		BatchNew: c.checks[1][1].Load(), BatchDuplicates: c.checks[1][0].Load(),
		SeenTrue: c.seen[1].Load(), SeenFalse: c.seen[0].Load(),
		Errors: make(map[string]uint64, len(dedup.ErrorKinds)),
	}
	for i, k := range dedup.ErrorKinds {
		out.Errors[k] = c.errs[i].Load()
	}
	return out
}
