package dedup

import (
	"bytes"

	"github.com/seed42300104/dedup/index"
)

// batchSet finds the repeats inside one batch: an open-addressing set of
// the keys already marked new in it, reused from batch to batch.
type batchSet struct {
	slots []int32 // 1 + index into keys; 0 is empty
	keys  []index.Key
}

// reset empties the set and sizes it for n keys.
func (s *batchSet) reset(n int) {
	size := 16
	for size < 2*n {
		size *= 2
	}
	if cap(s.slots) < size {
		s.slots = make([]int32, size)
	} else {
		s.slots = s.slots[:size]
		clear(s.slots)
	}
	s.keys = s.keys[:0]
}

// add adds k and reports whether it was already there.
func (s *batchSet) add(k index.Key) (present bool) {
	mask := uint64(len(s.slots) - 1)
	for i := k.Hash() & mask; ; i = (i + 1) & mask {
		slot := s.slots[i]
		if slot == 0 {
			s.keys = append(s.keys, k)
			s.slots[i] = int32(len(s.keys))
			return false
		}
		if bytes.Equal(s.keys[slot-1].ID, k.ID) {
			return true
		}
	}
}
