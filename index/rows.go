package index

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"slices"

	"github.com/seed42300104/dedup/ttl"
)

// row is one key of a generation's ingested table: a mark, or the
// deletion of an older version. It holds the first 16 bytes of the ID and
// the deadline, so that sorting and writing the rows of IDs of up to 16
// bytes without a value reads no memtable entry: in key order those reads
// would be a cache miss each.
type row struct {
	id       [2]uint64 // the ID's first 16 bytes, zero-padded, big-endian
	deadline ttl.Deadline
	entry    uint32 // index into the memtable's entries
	idLen    uint8  // the ID's length, or longID if above 16
	delete   bool
	hasValue bool
}

const longID = 1<<8 - 1

// genRows is the rows of one generation.
type genRows struct {
	gen  ttl.Gen
	rows []row
}

// groupRows returns the rows that each adds, of entries of m, grouped by
// generation, unsorted. each is called twice: the rows are counted first,
// so that each generation's are allocated once. A memtable holds a few
// generations, in long runs of marks, so the groups are kept in a slice
// searched from the last generation used rather than in a map hashed for
// every mark.
func (m *memtable) groupRows(each func(add func(g ttl.Gen, i int, delete bool))) []genRows {
	var groups []genRows
	var counts []int
	last := -1
	group := func(g ttl.Gen) int {
		if last < 0 || groups[last].gen != g {
			last = slices.IndexFunc(groups, func(t genRows) bool { return t.gen == g })
			if last < 0 {
				groups = append(groups, genRows{gen: g})
				counts = append(counts, 0)
				last = len(groups) - 1
			}
		}
		return last
	}
	each(func(g ttl.Gen, _ int, _ bool) { counts[group(g)]++ })
	for i := range groups {
		groups[i].rows = make([]row, 0, counts[i])
	}
	each(func(g ttl.Gen, i int, delete bool) {
		t := &groups[group(g)]
		t.rows = append(t.rows, m.row(i, delete))
	})
	return groups
}

// row returns the row of entry i.
func (m *memtable) row(i int, delete bool) row {
	e := m.entry(i)
	id := m.bytes(e.id)
	var p [16]byte
	copy(p[:], id)
	r := row{
		id:       [2]uint64{binary.BigEndian.Uint64(p[:8]), binary.BigEndian.Uint64(p[8:])},
		deadline: e.deadline,
		entry:    uint32(i),
		idLen:    longID,
		delete:   delete,
		hasValue: e.value.len > 0,
	}
	if len(id) <= len(p) {
		r.idLen = uint8(len(id))
	}
	return r
}

// idByte returns byte i of the row's ID, zero past its end.
func (r *row) idByte(i int) byte { return byte(r.id[i>>3] >> (56 - 8*(i&7))) }

// compareRows orders rows as their IDs.
func (m *memtable) compareRows(a, b row) int {
	if c := cmp.Compare(a.id[0], b.id[0]); c != 0 {
		return c
	}
	if c := cmp.Compare(a.id[1], b.id[1]); c != 0 {
		return c
	}
	if a.idLen != longID && b.idLen != longID {
		return cmp.Compare(a.idLen, b.idLen) // one is the other with zeros added
	}
	return bytes.Compare(m.bytes(m.entry(int(a.entry)).id), m.bytes(m.entry(int(b.entry)).id))
}

// appendRowID appends the ID of r to key.
func (m *memtable) appendRowID(key []byte, r row) []byte {
	if r.idLen == longID {
		return append(key, m.bytes(m.entry(int(r.entry)).id)...)
	}
	n := len(key)
	key = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(key, r.id[0]), r.id[1])
	return key[:n+int(r.idLen)]
}

// sortRows sorts rows by ID. It is a most-significant-digit radix sort, in
// place, over the IDs' first 16 bytes (McIlroy, Bostic and McIlroy,
// "Engineering radix sort"), and a comparison sort within small buckets:
// for a checkpoint of a million random IDs it takes a tenth of the time
// of a comparison sort of the whole.
func (m *memtable) sortRows(rows []row) { m.radixSort(rows, 0) }

// radixSortCutoff is the bucket size below which a comparison sort is
// faster than another radix pass.
const radixSortCutoff = 64

// radixSort sorts rows whose IDs agree before byte digit.
func (m *memtable) radixSort(rows []row, digit int) {
	for len(rows) > radixSortCutoff && digit < 16 {
		var count [256]int
		for i := range rows {
			count[rows[i].idByte(digit)]++
		}
		if count[rows[0].idByte(digit)] == len(rows) {
			digit++ // all agree on this byte too
			continue
		}
		// next[b] is where the next row of bucket b goes; end[b] where
		// the bucket ends. Each row is swapped straight into its bucket.
		var next, end [256]int
		for b, sum := 0, 0; b < 256; b++ {
			next[b] = sum
			sum += count[b]
			end[b] = sum
		}
		for b := range 256 {
			for next[b] < end[b] {
				d := rows[next[b]].idByte(digit)
				if int(d) == b {
					next[b]++
					continue
				}
				rows[next[b]], rows[next[d]] = rows[next[d]], rows[next[b]]
				next[d]++
			}
		}
		start := 0
		for b := range 256 {
			m.radixSort(rows[start:end[b]], digit+1)
			start = end[b]
		}
		return
	}
	if digit < 16 {
		m.insertionSort(rows) // at most radixSortCutoff rows
		return
	}
	slices.SortFunc(rows, m.compareRows)
}

// insertionSort sorts a bucket of at most radixSortCutoff rows. It
// compares the rows' first 16 bytes inline; only rows that share them
// take compareRows.
func (m *memtable) insertionSort(rows []row) {
	for i := 1; i < len(rows); i++ {
		for j := i; j > 0 && m.rowLess(&rows[j], &rows[j-1]); j-- {
			rows[j], rows[j-1] = rows[j-1], rows[j]
		}
	}
}

func (m *memtable) rowLess(a, b *row) bool {
	if a.id[0] != b.id[0] {
		return a.id[0] < b.id[0]
	}
	if a.id[1] != b.id[1] {
		return a.id[1] < b.id[1]
	}
	return m.compareRows(*a, *b) < 0
}
