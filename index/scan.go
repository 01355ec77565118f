package index

import (
	"bytes"
	"cmp"
	"container/heap"
	"fmt"
	"math/bits"
	"slices"
	"time"
	"weak"

	"github.com/cockroachdb/pebble/v2"

	"github.com/seed42300104/dedup/ttl"
)

// Mark is one stored version of an ID, as Scan yields it.
type Mark struct {
	ID    []byte
	Entry Entry
	Live  bool // the version Lookup answers with, live at now
}

// Scanner scans the index in steps, for a caller that releases the lock
// between them. Between its steps it keeps a view of each memtable, the
// entries in key order, so that a step reads the memtable entries of the
// keys it yields and those added since the previous step, not every
// entry of every memtable: the views hold 16 B per memtable entry (per
// ID written since the last checkpoint), for as long as the Scanner is
// kept, and the step that sorts entries in takes 40 B more for each while
// it sorts. A Scanner is for one goroutine.
type Scanner struct {
	ix    *Index
	views []*memView // of the memtables of the last step, newest first
	// examined counts the memtable entries the steps have read, sorted,
	// merged, searched or walked: what a step costs beyond its Pebble keys.
	examined int
}

// NewScanner returns a Scanner of ix.
func (ix *Index) NewScanner() *Scanner { return &Scanner{ix: ix} }

// Scan calls fn with the versions of at most keys Pebble keys (generation,
// then ID) after the key after, in key order, and returns the last key it
// covered, or nil if no key follows it. With after nil it starts at the
// first key. It yields each ID with a live mark at now once, with the
// version Lookup answers with; with all, also the other versions
// (expired, forgotten, superseded) with Live false. A version in a
// memtable is ordered by the key a checkpoint writes it under, and a
// forget, which a checkpoint writes under no key, by generation zero, so
// that a version is at the same place in the order before and after a
// checkpoint: a caller that scans in steps, releasing the lock between
// them, yields each version that stays once. A version written between
// steps may or may not come. The versions of one key, newest first, are
// never split between steps. fn returns false to stop. The caller holds
// the shared lock.
func (sc *Scanner) Scan(now time.Time, all bool, after []byte, keys int, fn func(Mark) bool) (last []byte, err error) {
	ix := sc.ix
	defer ix.catchFatal(&err)
	if err := ix.failed(); err != nil {
		return nil, err
	}
	rows, more, err := ix.scanPebble(after, keys)
	if err != nil {
		return nil, err
	}
	var upper []byte // the last Pebble key read, if more follow
	if more {
		upper = rows[len(rows)-1].key
	}
	mem, bound := sc.scanMemtables(after, upper, keys)
	if bound != nil { // the memtables hold more below upper
		rows = slices.DeleteFunc(rows, func(r scanRow) bool { return bytes.Compare(r.key, bound) >= 0 })
		more = true
	}

	clock := fixedClock(now)
	n := 0 // keys yielded
	for len(rows) > 0 || len(mem) > 0 {
		var key []byte
		switch {
		case len(mem) == 0:
			key = rows[0].key
		case len(rows) == 0 || bytes.Compare(mem[0].key, rows[0].key) <= 0:
			key = mem[0].key
		default:
			key = rows[0].key
		}
		if n == keys {
			return last, nil
		}
		n, last = n+1, key
		id := key[ttl.GenSize:]
		e, live, err := ix.Lookup(ix.Key(id), clock)
		if err != nil {
			return nil, err
		}
		var ingested bool // the Pebble version is a frozen memtable's, copied in
		for len(mem) > 0 && bytes.Equal(mem[0].key, key) {
			v := mem[0]
			mem = mem[1:]
			if v.frozen && len(rows) > 0 && bytes.Equal(rows[0].key, key) && rows[0].entry.sameVersion(v.entry) {
				ingested = true
			}
			current := live && e.LSN == v.entry.LSN
			if (current || all) && !fn(Mark{ID: slices.Clone(id), Entry: v.entry, Live: current}) {
				return last, nil
			}
		}
		if len(rows) > 0 && bytes.Equal(rows[0].key, key) {
			r := rows[0]
			rows = rows[1:]
			current := live && e.LSN == 0 && e.Gen == r.entry.Gen
			if !ingested && (current || all) && !fn(Mark{ID: slices.Clone(id), Entry: r.entry, Live: current}) {
				return last, nil
			}
		}
	}
	if !more {
		return nil, nil
	}
	return last, nil
}

// scanRow is a version Scan read, under its key.
type scanRow struct {
	key   []byte
	entry Entry
	// frozen says the version is a frozen memtable's. A checkpoint copies
	// such a memtable into Pebble before it takes it out of the read path,
	// and keeps it there if it fails after the copy, so that Pebble may
	// hold the same version: Scan yields it once.
	frozen bool
}

// sameVersion says e and o are one version, wherever each is kept: a
// memtable's has the LSN of its record, and Pebble's copy of it has none.
func (e Entry) sameVersion(o Entry) bool {
	return e.Gen == o.Gen && e.Deadline == o.Deadline && bytes.Equal(e.Value, o.Value)
}

// scanPebble returns the first keys versions in Pebble after the key
// after, and whether more follow.
func (ix *Index) scanPebble(after []byte, keys int) (rows []scanRow, more bool, err error) {
	var opts pebble.IterOptions
	if after != nil {
		opts.LowerBound = append(slices.Clip(after), 0) // the first key after it
	}
	it, err := ix.db.NewIter(&opts)
	if err != nil {
		return nil, false, ix.wrapPebble(err, "scan")
	}
	for it.First(); it.Valid(); it.Next() {
		key := it.Key()
		if len(key) <= ttl.GenSize {
			continue
		}
		if len(rows) == keys {
			more = true
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, false, ix.wrapPebble(err, fmt.Sprintf("key %x", key))
		}
		stored, err := decodeValue(ttl.DecodeGen(key), v)
		if err != nil {
			it.Close()
			return nil, false, fmt.Errorf("%w: key %x", err, key)
		}
		rows = append(rows, scanRow{key: slices.Clone(key), entry: stored})
	}
	return rows, more, ix.wrapPebble(it.Close(), "scan")
}

// scanMemtables returns, in key order and newest first within a key, the
// memtables' versions after the key after and up to upper (nil: no
// limit), of at most keys keys. If it leaves versions out to stay within
// keys, it returns bound, the first key it left out: it holds all
// versions below bound. It brings the views up to date, then walks them
// from after.
func (sc *Scanner) scanMemtables(after, upper []byte, keys int) (rows []scanRow, bound []byte) {
	ms := sc.ix.memtablesNewestFirst()
	views := make([]*memView, len(ms))
	var cs cursors
	for rank, m := range ms {
		v := sc.view(m)
		views[rank] = v
		sc.examined += v.extend(m)
		for _, run := range v.runs {
			start := 0
			if after != nil {
				i, found := slices.BinarySearchFunc(run, after, func(ve viewEntry, key []byte) int {
					sc.examined++
					return compareKey(ve.gen, m.id(ve.i), key)
				})
				start = i
				if found {
					start++
				}
			}
			if start < len(run) {
				cs = append(cs, cursor{m: m, rank: rank, run: run[start:]})
			}
		}
	}
	sc.views = views // a memtable gone since the last step takes its view along

	heap.Init(&cs)
	var last []byte // the key of the last version taken
	distinct := 0
	for len(cs) > 0 {
		c := &cs[0]
		sc.examined++
		ve, m := c.run[0], c.m
		e := m.entry(int(ve.i))
		id := m.bytes(e.id)
		if upper != nil && compareKey(ve.gen, id, upper) > 0 {
			break
		}
		// An entry whose key changed since it was sorted in is a version
		// written since: passed over.
		if e.keyGen() == ve.gen {
			if last == nil || compareKey(ve.gen, id, last) != 0 {
				key := append(ve.gen.Append(make([]byte, 0, ttl.GenSize+len(id))), id...)
				if distinct == keys {
					bound = key
					break
				}
				distinct++
				last = key
			}
			row := scanRow{key: last, entry: Entry{LSN: e.lsn}, frozen: c.rank > 0} // a forget has no deadline
			if !e.deleted {
				row.entry = Entry{Gen: e.gen, Deadline: e.deadline, LSN: e.lsn, Value: slices.Clone(m.bytes(e.value))}
			}
			rows = append(rows, row)
		}
		if c.run = c.run[1:]; len(c.run) == 0 {
			heap.Pop(&cs)
		} else {
			heap.Fix(&cs, 0)
		}
	}
	return rows, bound
}

// view returns the Scanner's view of m, new and empty if it has none.
func (sc *Scanner) view(m *memtable) *memView {
	w := weak.Make(m)
	for _, v := range sc.views {
		if v.mem == w {
			return v
		}
	}
	return &memView{mem: w}
}

// memView is a memtable's entries in the order of their keys. Each entry
// is in one run, sorted by the key it had when it was put there; one
// whose key changed since (forgotten, or marked anew in another
// generation) is passed over, as a write made during the scan may be.
// Runs are kept one per size class, and two of a class are merged, so
// that each merge an entry takes part in at least doubles its run: the
// entries of a memtable cost O(n log n) over a whole scan however often
// it is extended, and a step searches O(log n) runs.
type memView struct {
	// mem is weak so that the view does not keep a memtable a checkpoint
	// has dropped.
	mem     weak.Pointer[memtable]
	covered int           // the entries below covered are in runs
	runs    [][]viewEntry // runs[c] has 2^c to 2^(c+1)-1 entries, or none
}

// viewEntry is a memtable entry as a view orders it.
type viewEntry struct {
	gen ttl.Gen // of its key when it was sorted in
	i   uint32  // its index in the memtable
}

// extend sorts into v the entries added to m since v last covered it, and
// returns how many entries it read.
func (v *memView) extend(m *memtable) (examined int) {
	if v.covered == m.len() {
		return 0
	}
	run := sortedRun(m, v.covered)
	v.covered = m.len()
	examined = len(run)
	for len(run) > 0 {
		c := bits.Len(uint(len(run))) - 1
		if c >= len(v.runs) {
			v.runs = append(v.runs, make([][]viewEntry, c+1-len(v.runs))...)
		}
		if v.runs[c] == nil {
			v.runs[c] = run
			break
		}
		examined += len(v.runs[c]) + len(run)
		run = mergeRuns(m, v.runs[c], run)
		v.runs[c] = nil
	}
	return examined
}

// sortedRun returns the entries of m from from on, in key order: grouped
// by the generation of their key, each group sorted by ID with sortRows,
// the radix sort of a checkpoint, in rows of 40 B an entry that it drops
// once sorted.
func sortedRun(m *memtable, from int) []viewEntry {
	groups := m.groupRows(func(add func(g ttl.Gen, i int, delete bool)) {
		for i := from; i < m.len(); i++ {
			add(m.entry(i).keyGen(), i, false)
		}
	})
	slices.SortFunc(groups, func(a, b genRows) int { return cmp.Compare(a.gen, b.gen) })
	run := make([]viewEntry, 0, m.len()-from)
	for i := range groups {
		m.sortRows(groups[i].rows)
		for _, r := range groups[i].rows {
			run = append(run, viewEntry{gen: groups[i].gen, i: r.entry})
		}
		groups[i].rows = nil
	}
	return run
}

// mergeRuns merges two sorted runs of m into one, leaving out the entries
// whose key changed since they were sorted in: their runs no longer place
// them.
func mergeRuns(m *memtable, a, b []viewEntry) []viewEntry {
	out := make([]viewEntry, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		var ve viewEntry
		if len(b) == 0 || len(a) > 0 && compareViewEntries(m, a[0], b[0]) < 0 {
			ve, a = a[0], a[1:]
		} else {
			ve, b = b[0], b[1:]
		}
		if m.entry(int(ve.i)).keyGen() == ve.gen {
			out = append(out, ve)
		}
	}
	return out
}

// compareViewEntries compares the keys of two entries of m as sorted in.
func compareViewEntries(m *memtable, a, b viewEntry) int {
	if c := cmp.Compare(a.gen, b.gen); c != 0 {
		return c
	}
	return bytes.Compare(m.id(a.i), m.id(b.i))
}

// cursor is the rest of a run that a step walks.
type cursor struct {
	m    *memtable
	rank int // the memtable's, newest first
	run  []viewEntry
}

// cursors is a heap of cursors, by the key of their first entry, then
// newest memtable first.
type cursors []cursor

func (cs cursors) Len() int { return len(cs) }

func (cs cursors) Less(i, j int) bool {
	a, b := &cs[i], &cs[j]
	va, vb := a.run[0], b.run[0]
	if va.gen != vb.gen {
		return va.gen < vb.gen
	}
	if c := bytes.Compare(a.m.id(va.i), b.m.id(vb.i)); c != 0 {
		return c < 0
	}
	return a.rank < b.rank
}

func (cs cursors) Swap(i, j int) { cs[i], cs[j] = cs[j], cs[i] }

func (cs *cursors) Push(x any) { *cs = append(*cs, x.(cursor)) }

func (cs *cursors) Pop() any {
	old := *cs
	c := old[len(old)-1]
	*cs = old[:len(old)-1]
	return c
}

// compareKey compares the Pebble key of id in generation g with key.
func compareKey(g ttl.Gen, id, key []byte) int {
	if c := cmp.Compare(g, ttl.DecodeGen(key)); c != 0 {
		return c
	}
	return bytes.Compare(id, key[ttl.GenSize:])
}

// fixedClock is a clock stopped at one time, so that a scan answers for
// one instant.
type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// Elapsed is always zero: no time passes on a stopped clock.
func (c fixedClock) Elapsed() time.Duration { return 0 }

// Boot is empty: a stopped clock belongs to no boot.
func (c fixedClock) Boot() string { return "" }
