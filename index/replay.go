package index

import "fmt"

// Replayer applies the WAL records that Open replays. It applies them in
// groups: the filter blocks and memtable slots of a group's marks are
// loaded together before any of its records is applied, so that their
// cache misses overlap, where records applied one at a time would wait
// for each in turn. Records are applied in order, as Apply would.
type Replayer struct {
	ix   *Index
	ops  []Op       // of the records not yet applied, in order
	recs []replayed // the records not yet applied
}

// replayed is a record decoded but not yet applied.
type replayed struct {
	lsn  uint64
	time int64
	end  int // where its ops end in Replayer.ops
}

// replayGroup is how many ops a Replayer gathers before it applies them.
const replayGroup = 256

// Replayer returns a Replayer for ix. The caller holds the exclusive lock
// until its Flush.
func (ix *Index) Replayer() *Replayer {
	return &Replayer{ix: ix, ops: make([]Op, 0, 2*replayGroup)}
}

// Replay decodes the WAL record lsn with payload p, and applies it with
// the records before it once they fill a group. p must stay unchanged
// until then.
func (r *Replayer) Replay(lsn uint64, p []byte) error {
	start := len(r.ops)
	t, ops, err := appendOps(r.ops, p)
	if err != nil {
		r.ops = ops[:start]
		return fmt.Errorf("WAL record LSN %d: %w", lsn, err)
	}
	for i := start; i < len(ops); i++ {
		if !ops[i].Forget {
			ops[i].hash = hashOf(ops[i].ID)
		}
	}
	r.ops = ops
	r.recs = append(r.recs, replayed{lsn: lsn, time: t, end: len(ops)})
	if len(r.ops) >= replayGroup {
		r.Flush()
	}
	return nil
}

// Flush applies the records decoded and not yet applied.
func (r *Replayer) Flush() {
	ix := r.ix
	for i := range r.ops {
		op := &r.ops[i]
		if f := ix.filters[op.Gen]; f != nil && !op.Forget {
			f.warm(op.hash)
		}
	}
	ix.mem.warm(r.ops)
	start := 0
	for _, rec := range r.recs {
		b := Batch{Time: rec.time, Ops: r.ops[start:rec.end]}
		ix.Apply(&b, rec.lsn)
		start = rec.end
	}
	clear(r.ops) // drops the references to the payloads
	r.ops, r.recs = r.ops[:0], r.recs[:0]
}
