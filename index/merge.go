package index

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/cockroachdb/pebble/v2"

	"github.com/seed42300104/dedup/ttl"
)

// A generation that outgrows the marks its filter was sized for grows a
// chain of filters (genFilter), and every lookup then costs a cache miss
// in each of them: four at ten times ExpectedMarks. A checkpoint that finds
// such a chain merges it into one filter, built from the generation's keys
// in Pebble once the checkpoint has put them all there. The merge runs
// without the lock; the marks applied meanwhile are recorded and added to
// the merged filter when it replaces the chain, under the lock. That
// includes each extension the chain already tested positive for and so did
// not add: the positive may be false, and the merged filter is built from
// Pebble, which does not hold the extension yet.

// merge is the merge of one generation's chain.
type merge struct {
	gf       *genFilter
	k        uint // the chain's hashes
	capacity uint // marks the merged filter is sized for
	filter   *bloom.BloomFilter
}

// startMerges picks the chains that Freeze's checkpoint will merge and
// starts recording what is added to them. The caller holds the exclusive
// lock.
func (ix *Index) startMerges(f *Frozen) {
	for _, gf := range ix.gens {
		if len(gf.filters) > 1 && gf.added == nil {
			gf.added = []uint64{}
			f.merges = append(f.merges, &merge{gf: gf, k: gf.filters[0].K(), capacity: 2 * gf.marks})
		}
	}
}

// MergeChains builds the merged filter of each chain that f's Freeze
// picked, from the keys of its generation in Pebble: those of f's
// memtable included, so Persist must have succeeded. It needs no lock.
// Whatever it returns, EndMerges must follow.
func (ix *Index) MergeChains(f *Frozen) (err error) {
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return err
	}
	for _, m := range f.merges {
		b := newFilter(m.capacity, m.k, ix.opts.FalsePositiveRate)
		g := m.gf.gen
		it, err := ix.db.NewIter(&pebble.IterOptions{LowerBound: g.Append(nil), UpperBound: (g + 1).Append(nil)})
		if err != nil {
			return ix.wrapPebble(err, "merging filters")
		}
		// The keys come in key order, so their blocks in random order:
		// hashes gathered a batch at a time have their blocks loaded
		// together, and their cache misses overlap.
		hashes := make([]filterHash, 0, 1024)
		for valid := it.First(); valid; valid = it.Next() {
			hashes = append(hashes, hashOf(it.Key()[ttl.GenSize:]))
			if len(hashes) == cap(hashes) {
				setAllBits(b, hashes)
				hashes = hashes[:0]
			}
		}
		setAllBits(b, hashes)
		if err := ix.wrapPebble(errors.Join(it.Error(), it.Close()), fmt.Sprintf("merging the filters of generation %x", uint64(g))); err != nil {
			return err
		}
		m.filter = b
	}
	return nil
}

// EndMerges puts each merged filter in place of its chain, with the marks
// added since the merge began, and stops recording them. A chain whose
// generation was dropped meanwhile, or that gained more marks than its
// merged filter was sized for, stays as it is. The caller holds the
// exclusive lock.
func (ix *Index) EndMerges(f *Frozen) {
	for _, m := range f.merges {
		gf, added := m.gf, m.gf.added
		gf.added = nil
		if m.filter == nil || ix.filters[gf.gen] != gf || gf.marks > m.capacity {
			continue
		}
		hashes := make([]filterHash, len(added))
		for i, h1 := range added {
			hashes[i] = hashOfH1(h1)
		}
		setAllBits(m.filter, hashes)
		gf.filters = []*bloom.BloomFilter{m.filter}
		gf.caps = []uint{m.capacity}
		gf.n = gf.marks
		gf.dirty = true
	}
	if len(f.merges) > 0 {
		ix.publish()
	}
}

// setAllBits adds the keys hashed to hs to b, which no reader sees yet,
// loading all their blocks before it sets any bit. It sets bits without
// setBits' atomic ORs: BenchmarkMergeChains takes about a fifth longer
// with them.
func setAllBits(b *bloom.BloomFilter, hs []filterHash) {
	w := b.BitSet().Words()
	n := uint64(len(w) / blockWords)
	for _, h := range hs {
		atomic.LoadUint64(&w[h.block(n)*blockWords])
	}
	for _, h := range hs {
		blk, bits := blockOf(b, h), h.bits()
		for range b.K() {
			p := bits.next()
			blk[p/64] |= 1 << (p % 64)
		}
	}
}
