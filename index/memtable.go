package index

import (
	"bytes"
	"slices"
	"sync/atomic"
	"time"

	"github.com/seed42300104/dedup/ttl"
)

// memtable holds the newest version of each ID changed since it was
// created, until a checkpoint writes it to Pebble.
//
// It is an open-addressing hash table over entries kept in fixed-size
// blocks, with IDs and values in chunked arena memory: growing it never
// copies what it holds, the garbage collector has no per-entry pointers to
// scan, and the hash is the filter hash the caller has already computed.
// A slot keeps the top half of its entry's hash, so a probe passes over
// the entries of other IDs without reading them: one cache miss fewer per
// lookup of a new ID.
type memtable struct {
	slots   []uint64     // hash>>32 << 32 | 1 + entry index; 0 is empty
	blocks  [][]memEntry // entryBlock entries each
	n       int          // entries in use
	arena   [][]byte     // chunks of IDs and values
	lastLSN uint64       // the newest WAL record applied
}

const (
	entryBlockBits = 14
	entryBlock     = 1 << entryBlockBits
	arenaChunk     = 1 << 20
)

type memEntry struct {
	hash     uint64
	gen      ttl.Gen
	deadline ttl.Deadline
	lsn      uint64
	id       span
	value    span
	// deleted: the ID was forgotten and not marked since.
	deleted bool
	// forgotten: the ID was forgotten since the memtable began, so the
	// flush must delete its versions already in Pebble.
	forgotten bool
}

// keyGen returns the generation of the key Scan orders e by: its own, or
// zero for a forget, which a checkpoint writes under no key.
func (e *memEntry) keyGen() ttl.Gen {
	if e.deleted {
		return 0
	}
	return e.gen
}

// span locates bytes in the arena.
type span struct{ chunk, off, len uint32 }

// firstMemtableMarks caps the size of a store's first memtable: a store
// that writes little should not pay for a large memtable up front.
const firstMemtableMarks = 1 << 16

// newMemtable returns a memtable whose hash table holds hint entries
// without growing.
func newMemtable(hint int) *memtable {
	size := 1024
	for size < 2*hint {
		size *= 2
	}
	m := &memtable{slots: make([]uint64, size)}
	adviseHuge(m.slots)
	return m
}

// nextMemtable returns the memtable that replaces m at a checkpoint, sized
// for as many entries as m reached, up to twice marks: growing a table
// rehashes all it holds.
func nextMemtable(m *memtable, marks int) *memtable {
	next := newMemtable(min(m.len(), 2*marks))
	next.lastLSN = m.lastLSN
	return next
}

func (m *memtable) len() int { return m.n }

// entry returns the i-th entry.
func (m *memtable) entry(i int) *memEntry { return &m.blocks[i>>entryBlockBits][i&(entryBlock-1)] }

// id returns the ID of the i-th entry.
func (m *memtable) id(i uint32) []byte { return m.bytes(m.entry(int(i)).id) }

func (m *memtable) bytes(s span) []byte {
	if s.len == 0 {
		return nil
	}
	return m.arena[s.chunk][s.off : s.off+s.len : s.off+s.len]
}

func (m *memtable) store(b []byte) span {
	if len(b) == 0 {
		return span{}
	}
	n := len(m.arena)
	if n == 0 || len(m.arena[n-1])+len(b) > cap(m.arena[n-1]) {
		m.arena = append(m.arena, make([]byte, 0, max(arenaChunk, len(b))))
		n++
	}
	c := &m.arena[n-1]
	s := span{uint32(n - 1), uint32(len(*c)), uint32(len(b))}
	*c = append(*c, b...)
	return s
}

// find returns the entry of id, or nil.
func (m *memtable) find(id []byte, hash uint64) *memEntry {
	mask := uint64(len(m.slots) - 1)
	for i := hash & mask; ; i = (i + 1) & mask {
		slot := m.slots[i]
		if slot == 0 {
			return nil
		}
		if slot>>32 != hash>>32 {
			continue
		}
		e := m.entry(int(uint32(slot) - 1))
		if e.hash == hash && bytes.Equal(m.bytes(e.id), id) {
			return e
		}
	}
}

// warm loads the first hash slot of each hashed op, before any is looked
// at, so that their cache misses overlap rather than come one at a time.
func (m *memtable) warm(ops []Op) {
	slots := m.slots
	mask := uint64(len(slots) - 1)
	for i := range ops {
		if h := ops[i].hash; h.h2 != 0 {
			atomic.LoadUint64(&slots[h.h1&mask])
		}
	}
}

// upsert returns the entry of id, adding an empty one if there is none.
func (m *memtable) upsert(id []byte, hash uint64) *memEntry {
	if e := m.find(id, hash); e != nil {
		return e
	}
	if 2*(m.n+1) > len(m.slots) {
		m.grow()
	}
	if m.n>>entryBlockBits == len(m.blocks) {
		m.blocks = append(m.blocks, make([]memEntry, entryBlock))
	}
	e := m.entry(m.n)
	*e = memEntry{hash: hash, id: m.store(id)}
	m.n++
	m.insertSlot(hash, m.n-1)
	return e
}

// insertSlot points a free slot for hash at entry i.
func (m *memtable) insertSlot(hash uint64, i int) {
	mask := uint64(len(m.slots) - 1)
	j := hash & mask
	for m.slots[j] != 0 {
		j = (j + 1) & mask
	}
	m.slots[j] = hash>>32<<32 | uint64(i+1)
}

// grow doubles the hash table. It rehashes in groups, loading the first
// slots of a group's entries before it inserts any, so that their cache
// misses overlap.
func (m *memtable) grow() {
	m.slots = make([]uint64, 2*len(m.slots))
	adviseHuge(m.slots)
	mask := uint64(len(m.slots) - 1)
	const group = 64
	for i := 0; i < m.n; i += group {
		end := min(i+group, m.n)
		for j := i; j < end; j++ {
			atomic.LoadUint64(&m.slots[m.entry(j).hash&mask])
		}
		for j := i; j < end; j++ {
			m.insertSlot(m.entry(j).hash, j)
		}
	}
}

func (m *memtable) get(id []byte, hash uint64) (memEntry, bool) {
	if m.n == 0 {
		return memEntry{}, false // a cache miss in its slots saved
	}
	if e := m.find(id, hash); e != nil {
		return *e, true
	}
	return memEntry{}, false
}

func (m *memtable) mark(op Op, hash uint64, lsn uint64) {
	e := m.upsert(op.ID, hash)
	e.gen, e.deadline, e.lsn, e.deleted = op.Gen, op.Deadline, lsn, false
	e.value = m.store(op.Value)
}

func (m *memtable) forget(id []byte, lsn uint64) {
	e := m.upsert(id, hashID(id))
	e.lsn, e.deleted, e.forgotten = lsn, true, true
}

// live returns the entry as a live mark, or not found if it is a
// tombstone or expired. The newest version decides: a mark is only written
// when no live one exists, so older versions are dead too.
func (m *memtable) live(e memEntry, now time.Time) (Entry, bool, error) {
	if e.deleted || !e.deadline.Live(now) {
		return Entry{}, false, nil
	}
	var value []byte
	if e.value.len > 0 {
		value = slices.Clone(m.bytes(e.value))
	}
	return Entry{Gen: e.gen, Deadline: e.deadline, Value: value, LSN: e.lsn}, true, nil
}
