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
	return newIDStream(shape, seed).next(n)
}

// RandomIDs returns n random 16-byte IDs drawn from seed.
func RandomIDs(seed uint64, n int) [][]byte {
	return newIDStream(Bytes16, seed).next(n)
}

// idStream draws the IDs of one seed a batch at a time, for sets too large
// to hold: the IDs of its batches, in order, are those IDs gives the seed.
type idStream struct {
	shape Shape
	r     *rand.Rand
}

func newIDStream(shape Shape, seed uint64) *idStream {
	return &idStream{shape: shape, r: rand.New(rand.NewPCG(seed, seed))}
}

// next returns the stream's next n IDs, in fresh memory.
func (s *idStream) next(n int) [][]byte {
	buf := make([]byte, s.size()*n)
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = buf[s.size()*i : s.size()*(i+1)]
		s.encode(ids[i], s.draw())
	}
	return ids
}

// every returns each k-th of the stream's next n IDs, the first among
// them, in fresh memory; the IDs between are drawn and dropped.
func (s *idStream) every(n, k int) [][]byte {
	buf := make([]byte, s.size()*((n+k-1)/k))
	ids := make([][]byte, 0, (n+k-1)/k)
	for i := range n {
		raw := s.draw()
		if i%k == 0 {
			id := buf[s.size()*len(ids) : s.size()*(len(ids)+1)]
			s.encode(id, raw)
			ids = append(ids, id)
		}
	}
	return ids
}

func (s *idStream) size() int {
	if s.shape == UUID {
		return 36
	}
	return 16
}

// draw returns the random bytes of the stream's next ID.
func (s *idStream) draw() [16]byte {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:], s.r.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], s.r.Uint64())
	return raw
}

// encode writes raw into id in the stream's shape.
func (s *idStream) encode(id []byte, raw [16]byte) {
	if s.shape == UUID {
		encodeUUID(id, raw)
		return
	}
	copy(id, raw[:])
}

// encodeUUID writes raw into id as a version-4 UUID string.
func encodeUUID(id []byte, raw [16]byte) {
	raw[6] = raw[6]&0x0f | 0x40 // version 4
	raw[8] = raw[8]&0x3f | 0x80 // RFC 9562 variant
	hex.Encode(id[0:8], raw[0:4])
	id[8] = '-'
	hex.Encode(id[9:13], raw[4:6])
	id[13] = '-'
	hex.Encode(id[14:18], raw[6:8])
	id[18] = '-'
	hex.Encode(id[19:23], raw[8:10])
	id[23] = '-'
	hex.Encode(id[24:36], raw[10:16])
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
