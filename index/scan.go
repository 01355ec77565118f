package index

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/seed42300104/dedup/ttl"
)

// Mark is one stored version of an ID, as Scan yields it.
type Mark struct {
	ID    []byte
	Entry Entry
	Live  bool // the version Lookup answers with, live at now
}

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
// them, yields each version that stays once. The versions of one key,
// newest first, are never split between steps. fn returns false to stop.
// The caller holds the shared lock.
func (ix *Index) Scan(now time.Time, all bool, after []byte, keys int, fn func(Mark) bool) (last []byte, err error) {
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
	mem, bound := ix.scanMemtables(after, upper, keys)
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
		for len(mem) > 0 && bytes.Equal(mem[0].key, key) {
			v := mem[0]
			mem = mem[1:]
			current := live && e.LSN == v.entry.LSN
			if (current || all) && !fn(Mark{ID: slices.Clone(id), Entry: v.entry, Live: current}) {
				return last, nil
			}
		}
		if len(rows) > 0 && bytes.Equal(rows[0].key, key) {
			r := rows[0]
			rows = rows[1:]
			current := live && e.LSN == 0 && e.Gen == r.entry.Gen
			if (current || all) && !fn(Mark{ID: slices.Clone(id), Entry: r.entry, Live: current}) {
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
// versions below bound.
func (ix *Index) scanMemtables(after, upper []byte, keys int) (rows []scanRow, bound []byte) {
	type version struct {
		key  []byte
		m    *memtable
		e    *memEntry
		rank int // the memtable's, newest first
	}
	var vs []version
	byKey := func(a, b version) int {
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		return a.rank - b.rank
	}
	// keep sorts vs and cuts it to its first keys keys, lowering bound to
	// the first key cut.
	keep := func() {
		slices.SortFunc(vs, byKey)
		distinct := 0
		for i := range vs {
			if i == 0 || !bytes.Equal(vs[i].key, vs[i-1].key) {
				if distinct == keys {
					bound = vs[i].key
					vs = vs[:i]
					return
				}
				distinct++
			}
		}
	}
	ms := ix.memtablesNewestFirst()
	for rank, m := range ms {
		for i := range m.n {
			e := m.entry(i)
			g := e.gen
			if e.deleted {
				g = 0
			}
			id := m.bytes(e.id)
			if after != nil && compareKey(g, id, after) <= 0 ||
				upper != nil && compareKey(g, id, upper) > 0 ||
				bound != nil && compareKey(g, id, bound) >= 0 {
				continue
			}
			vs = append(vs, version{key: append(g.Append(make([]byte, 0, ttl.GenSize+len(id))), id...), m: m, e: e, rank: rank})
			if len(vs) >= 2*keys*len(ms) {
				keep() // to keys*len(ms) at most: a key has a version in each memtable at most
			}
		}
	}
	keep()
	rows = make([]scanRow, len(vs))
	for i, v := range vs {
		rows[i] = scanRow{key: v.key, entry: Entry{LSN: v.e.lsn}} // a forget has no deadline
		if !v.e.deleted {
			rows[i].entry = Entry{Gen: v.e.gen, Deadline: v.e.deadline, LSN: v.e.lsn, Value: slices.Clone(v.m.bytes(v.e.value))}
		}
	}
	return rows, bound
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
