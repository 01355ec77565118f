package bench

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
)

// Shape is the form of the benchmark's IDs.
type Shape string

const (
	// Bytes16 is 16 random bytes, a binary UUID or hash.
	Bytes16 Shape = "bytes16"
	// UUID is a 36-byte version-4 UUID string, as most message IDs are.
	UUID Shape = "uuid"
)

// Shapes lists the shapes IDs knows.
var Shapes = []Shape{Bytes16, UUID}

// IDs returns n distinct (with overwhelming probability) random IDs of the
// shape, drawn from seed: the same seed gives the same IDs.
func IDs(shape Shape, seed uint64, n int) [][]byte {
	if shape != UUID {
		return RandomIDs(seed, n)
	}
	buf := make([]byte, 36*n)
	ids := make([][]byte, n)
	for i, raw := range RandomIDs(seed, n) {
		raw[6] = raw[6]&0x0f | 0x40 // version 4
		raw[8] = raw[8]&0x3f | 0x80 // RFC 9562 variant
		id := buf[36*i : 36*i+36]
		hex.Encode(id[0:8], raw[0:4])
		id[8] = '-'
		hex.Encode(id[9:13], raw[4:6])
		id[13] = '-'
		hex.Encode(id[14:18], raw[6:8])
		id[18] = '-'
		hex.Encode(id[19:23], raw[8:10])
		id[23] = '-'
		hex.Encode(id[24:36], raw[10:16])
		ids[i] = id
	}
	return ids
}

// RandomIDs returns n random 16-byte IDs drawn from seed.
func RandomIDs(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 16*n)
	ids := make([][]byte, n)
	for i := range ids {
		id := buf[16*i : 16*i+16]
		binary.LittleEndian.PutUint64(id, r.Uint64())
		binary.LittleEndian.PutUint64(id[8:], r.Uint64())
		ids[i] = id
	}
	return ids
}

// SegmentDuplicates is the share of duplicates in Segment's published
// pipeline: 0.6% of events.
const SegmentDuplicates = 0.006

// ZipfS is the skew of the Zipf mix: the k-th most frequent ID comes
// about k^-1.1 as often as the first.
const ZipfS = 1.1

// inputs builds the sets of IDs of one run once, for all its rows.
type inputs struct {
	shape Shape
	n     int
	sets  map[string][][]byte // by name: built once, read by every row
}

func (in *inputs) set(name string, build func() [][]byte) [][]byte {
	if s, ok := in.sets[name]; ok {
		return s
	}
	if in.sets == nil {
		in.sets = map[string][][]byte{}
	}
	in.sets[name] = build()
	return in.sets[name]
}

// marked is the run's main set: the IDs rows mark.
func (in *inputs) marked() [][]byte {
	return in.set("marked", func() [][]byte { return IDs(in.shape, 1, in.n) })
}

// absent is as many IDs again, none of them marked.
func (in *inputs) absent() [][]byte {
	return in.set("absent", func() [][]byte { return IDs(in.shape, 2, in.n) })
}

// segment is marked with SegmentDuplicates of its IDs replaced by a repeat
// of an earlier one, drawn uniformly.
func (in *inputs) segment() [][]byte {
	return in.set("segment", func() [][]byte {
		r := rand.New(rand.NewPCG(3, 3))
		ids := append([][]byte(nil), in.marked()...)
		for i := 1; i < len(ids); i++ {
			if r.Float64() < SegmentDuplicates {
				ids[i] = ids[r.IntN(i)]
			}
		}
		return ids
	})
}

// zipf is n draws from marked, Zipf-distributed with skew ZipfS: a few IDs
// recur often, most never.
func (in *inputs) zipf() [][]byte {
	return in.set("zipf", func() [][]byte {
		marked := in.marked()
		z := rand.NewZipf(rand.New(rand.NewPCG(4, 4)), ZipfS, 1, uint64(len(marked)-1))
		ids := make([][]byte, len(marked))
		for i := range ids {
			ids[i] = marked[z.Uint64()]
		}
		return ids
	})
}
