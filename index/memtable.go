package index

import (
	"slices"

	"github.com/seed42300104/dedup/ttl"
)

// memtable holds the newest version of each ID changed since it was
// created, until a checkpoint writes it to Pebble.
type memtable struct {
	entries map[string]memEntry
	lastLSN uint64 // the newest WAL record applied
}

type memEntry struct {
	gen      ttl.Gen
	deadline ttl.Deadline
	value    []byte
	lsn      uint64
	// deleted: the ID was forgotten and not marked since.
	deleted bool
	// forgotten: the ID was forgotten since the memtable began, so the
	// flush must delete its versions already in Pebble.
	forgotten bool
}

func newMemtable() *memtable { return &memtable{entries: map[string]memEntry{}} }

func (m *memtable) mark(op Op, lsn uint64) {
	k := string(op.ID)
	forgotten := m.entries[k].forgotten
	m.entries[k] = memEntry{gen: op.Gen, deadline: op.Deadline, value: slices.Clone(op.Value), lsn: lsn, forgotten: forgotten}
}

func (m *memtable) forget(id []byte, lsn uint64) {
	m.entries[string(id)] = memEntry{lsn: lsn, deleted: true, forgotten: true}
}
