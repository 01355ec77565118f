package index

import (
	"bytes"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/seed42300104/dedup/ttl"
)

// Result is the answer of a lookup: the live mark of a key, if any.
type Result struct {
	Entry Entry
	Live  bool
}

// Lookup returns the live mark of k, if there is one. The filters answer
// first: they cover every mark, in the memtables and in Pebble, so an ID
// none of them may hold is new without any further look, not even at the
// clock.
func (ix *Index) Lookup(k Key, clock ttl.Clock) (Entry, bool, error) {
	var out [1]Result
	err := ix.LookupBatch([]Key{k}, clock, out[:])
	return out[0].Entry, out[0].Live, err
}

// LookupBatch is Lookup for many keys: out[i] answers for keys[i]. The keys
// that are left to Pebble are read in key order through one iterator,
// which costs far less per key than a point read each.
func (ix *Index) LookupBatch(keys []Key, clock ttl.Clock, out []Result) error {
	return ix.lookupBatch(keys, clock, out, true)
}

// LookupLive is LookupBatch for a caller that takes only the live marks
// from it and looks the other keys up again with LookupBatch: it leaves
// FilterMisses to that second look, so that a miss is counted once.
func (ix *Index) LookupLive(keys []Key, clock ttl.Clock, out []Result) error {
	return ix.lookupBatch(keys, clock, out, false)
}

// lookupBatch is LookupBatch, counting the filters' misses if count. It
// counts the keys in Lookups by where they were answered: all of them if
// count, else only those it finds live, which LookupLive's caller does
// not look up again.
func (ix *Index) lookupBatch(keys []Key, clock ttl.Clock, out []Result, count bool) (err error) {
	defer ix.catchFatal(&err)
	var now time.Time
	var probes []probe
	var keyBuf []byte
	var probed []int // indexes of the keys with probes
	var buf [8]*genFilter
	var byFilters, inMemtables, onDisk uint64
	defer func() {
		ix.lookups.filters.Add(byFilters)
		ix.lookups.memtables.Add(inMemtables)
		ix.lookups.disk.Add(onDisk)
	}()
	if len(keys) > 1 {
		ix.warmFilters(keys)
	}
	for i, k := range keys {
		out[i] = Result{}
		maybe := buf[:0]
		for _, f := range ix.gens {
			if f.test(k.hash) {
				maybe = append(maybe, f)
			}
		}
		if len(maybe) == 0 {
			if count {
				byFilters++
			}
			continue
		}
		if now.IsZero() {
			now = clock.Now()
		}
		maybe = slices.DeleteFunc(maybe, func(f *genFilter) bool { return f.end <= now.UnixNano() })
		if len(maybe) == 0 {
			if count {
				byFilters++
			}
			continue // only generations that have wholly expired may hold it
		}
		if e, live, found := ix.lookupMemtables(k, now); found {
			out[i] = Result{e, live}
			if live || count {
				inMemtables++
			}
			if !live && count {
				ix.filterMisses.Add(1)
			}
			continue
		}
		probed = append(probed, i)
		for _, f := range maybe {
			start := len(keyBuf)
			keyBuf = append(f.gen.Append(keyBuf), k.ID...)
			probes = append(probes, probe{key: i, gen: f.gen, start: start, end: len(keyBuf)})
		}
	}
	if err := ix.readProbes(probes, keyBuf, now, out); err != nil {
		return err
	}
	for _, i := range probed {
		if out[i].Live || count {
			onDisk++
		}
		if !out[i].Live && count {
			ix.filterMisses.Add(1)
		}
	}
	return nil
}

// warmFilters loads the filter blocks that keys test, before any test, so
// that their cache misses overlap: tested one key at a time, a batch of
// new IDs waits for one miss per filter of each live generation in turn.
func (ix *Index) warmFilters(keys []Key) {
	for _, f := range ix.gens {
		for _, b := range f.filters {
			w := b.BitSet().Words()
			n := uint64(len(w) / blockWords)
			// A loop this small keeps many loads in flight: with a
			// call to blockOf in it, about a third as many.
			for _, k := range keys {
				atomic.LoadUint64(&w[k.hash.block(n)*blockWords])
			}
		}
	}
}

// Lookups counts the keys looked up since Open, by where the answer came
// from.
type Lookups struct {
	// Filters counts the keys no live generation's filter may hold, which
	// need no further look; Memtables those a memtable answered; Disk
	// those read from Pebble.
	Filters, Memtables, Disk uint64
}

// lookupCounts are the counters behind Lookups.
type lookupCounts struct{ filters, memtables, disk atomic.Uint64 }

// Lookups returns the counts of keys looked up, by where they were
// answered. It takes no lock.
func (ix *Index) Lookups() Lookups {
	return Lookups{Filters: ix.lookups.filters.Load(), Memtables: ix.lookups.memtables.Load(), Disk: ix.lookups.disk.Load()}
}

// FilterMisses counts the lookups a filter sent on to the memtable or
// Pebble that found no live mark: false positives, and marks expired in a
// generation not yet dropped.
func (ix *Index) FilterMisses() uint64 { return ix.filterMisses.Load() }

// lookupMemtables looks k up in the memtables, newest first. found says
// whether one holds a version of k: the newest version decides, since a
// mark is only written when no live one exists (or, sliding, to extend
// it). A version in a generation dropped early is gone.
func (ix *Index) lookupMemtables(k Key, now time.Time) (e Entry, live, found bool) {
	for i := len(ix.frozen); i >= 0; i-- {
		m := ix.mem
		if i < len(ix.frozen) {
			m = ix.frozen[i]
		}
		me, ok := m.get(k.ID, k.Hash())
		if !ok {
			continue
		}
		if _, kept := ix.filters[me.gen]; !kept && !me.deleted {
			return Entry{}, false, true
		}
		e, live, _ := m.live(me, now)
		if !live {
			e.LSN = me.lsn // a "no" that rests on a forget waits for it too
		}
		return e, live, true
	}
	return Entry{}, false, false
}

// probe is one Pebble key to read for a lookup: keyBuf[start:end].
type probe struct {
	key        int // index of the looked-up key
	gen        ttl.Gen
	start, end int
}

// get is a point read of the Pebble key of generation g.
func (ix *Index) get(key []byte, g ttl.Gen) (Entry, bool, error) {
	v, closer, err := ix.db.Get(key)
	if err == pebble.ErrNotFound {
		return Entry{}, false, ix.failed()
	}
	if err != nil {
		return Entry{}, false, ix.wrapPebble(err, fmt.Sprintf("key %x", key))
	}
	defer closer.Close()
	e, err := decodeValue(g, v)
	if err != nil {
		return Entry{}, false, fmt.Errorf("%w: key %x", err, key)
	}
	return e, true, nil
}

// readProbes reads the probes' keys from Pebble. An ID can have versions in
// several generations (re-marked after expiry, or slid): the live one with
// the latest deadline answers. A few probes are point reads; more share
// one iterator, sought in key order by prefix (the whole key), so that,
// as for a point read, each table's Bloom filter skips the tables without
// the key: many overlapping tables cost a filter test each, not a seek.
func (ix *Index) readProbes(probes []probe, keyBuf []byte, now time.Time, out []Result) error {
	keep := func(p probe, e Entry) {
		if r := &out[p.key]; e.Deadline.Live(now) && (!r.Live || e.Deadline > r.Entry.Deadline) {
			*r = Result{e, true}
		}
	}
	if len(probes) == 0 {
		return nil
	}
	if err := ix.failed(); err != nil {
		return err
	}
	if len(probes) <= 2 {
		for _, p := range probes {
			e, ok, err := ix.get(keyBuf[p.start:p.end], p.gen)
			if err != nil {
				return err
			}
			if ok {
				keep(p, e)
			}
		}
		return nil
	}
	slices.SortFunc(probes, func(a, b probe) int { return bytes.Compare(keyBuf[a.start:a.end], keyBuf[b.start:b.end]) })
	it, err := ix.db.NewIter(nil)
	if err != nil {
		return ix.wrapPebble(err, "lookup")
	}
	for _, p := range probes {
		key := keyBuf[p.start:p.end]
		if !it.SeekPrefixGE(key) {
			// A seek that failed also reports no key, and the next seek
			// forgets its error: the key may be there.
			if err := it.Error(); err != nil {
				it.Close()
				return ix.wrapPebble(err, fmt.Sprintf("lookup of key %x", key))
			}
			continue
		}
		if !bytes.Equal(it.Key(), key) {
			continue
		}
		v, err := it.ValueAndErr()
		var e Entry
		if err == nil {
			e, err = decodeValue(p.gen, v)
		}
		if err != nil {
			it.Close()
			return ix.wrapPebble(err, fmt.Sprintf("lookup of key %x", key))
		}
		keep(p, e)
	}
	return ix.wrapPebble(it.Close(), "lookup")
}

// Coverage is what Verify found of the index.
type Coverage struct {
	Keys uint64 // keys in Pebble
	// Uncovered lists keys (generation and ID, in hex) that the filters
	// would call absent: the filters then hide marks.
	Uncovered []string
}

// Verify reads every key in Pebble, which checks every block's checksum,
// and tests each against its generation's filter. Generations wholly
// expired at now are not checked: they wait for their drop.
func (ix *Index) Verify(now time.Time) (c Coverage, err error) {
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return c, err
	}
	it, err := ix.db.NewIter(nil)
	if err != nil {
		return c, ix.wrapPebble(err, "verify")
	}
	for it.First(); it.Valid(); it.Next() {
		c.Keys++
		k := it.Key()
		if len(k) <= ttl.GenSize {
			c.Uncovered = append(c.Uncovered, fmt.Sprintf("%x (too short for a key)", k))
			continue
		}
		g := ttl.DecodeGen(k)
		if g.Expired(now) {
			continue
		}
		if f := ix.filters[g]; f == nil || !f.test(hashOf(k[ttl.GenSize:])) {
			c.Uncovered = append(c.Uncovered, fmt.Sprintf("%x", k))
		}
	}
	return c, ix.wrapPebble(it.Close(), "verify")
}

// Explanation is what each structure of the index says about one ID.
type Explanation struct {
	// Filters lists the generations whose filter may hold the ID.
	Filters []ttl.Gen
	// Memtable is the newest version in a memtable, that is in the WAL
	// tail not yet checkpointed, if any.
	Memtable *Version
	// Pebble lists the versions in Pebble, one per generation holding one.
	Pebble []Version
}

// Version is one stored version of an ID.
type Version struct {
	Gen      ttl.Gen
	Deadline ttl.Deadline
	Deleted  bool   // a forget
	LSN      uint64 // the WAL record, for a memtable version
}

// Explain reports what the filters, the memtables and Pebble each hold of
// k, looking in every generation: unlike Lookup it stops at nothing.
func (ix *Index) Explain(k Key) (x Explanation, err error) {
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return x, err
	}
	for _, f := range ix.gens {
		if f.test(k.hash) {
			x.Filters = append(x.Filters, f.gen)
		}
	}
	for _, m := range ix.memtablesNewestFirst() {
		if me, ok := m.get(k.ID, k.Hash()); ok {
			x.Memtable = &Version{Gen: me.gen, Deadline: me.deadline, Deleted: me.deleted, LSN: me.lsn}
			break
		}
	}
	key := make([]byte, ttl.GenSize+len(k.ID))
	copy(key[ttl.GenSize:], k.ID)
	for _, f := range ix.gens {
		f.gen.Append(key[:0]) // the ID follows in key
		e, ok, err := ix.get(key, f.gen)
		if err != nil {
			return x, err
		}
		if ok {
			x.Pebble = append(x.Pebble, Version{Gen: f.gen, Deadline: e.Deadline})
		}
	}
	return x, nil
}
