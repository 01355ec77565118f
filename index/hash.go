package index

import "github.com/cespare/xxhash/v2"

// hashID is the 64-bit hash of an ID that the memtable and the filters
// share. Part of the on-disk format: the filter snapshots hold its bits.
func hashID(id []byte) uint64 { return xxhash.Sum64(id) }

// filterHash is an ID's filter hash for double hashing (Kirsch and
// Mitzenmacher): its i-th filter position is h1 + i·h2, with h2 an odd mix
// of h1. bloom/v3 takes the positions modulo each filter's size, so one
// hashing serves every filter of every generation. It replaces bloom/v3's
// own murmur hashing, which costs several times as much for a short ID.
// The zero value, whose h2 is even, means not computed.
type filterHash struct{ h1, h2 uint64 }

func hashOf(id []byte) filterHash {
	h1 := hashID(id)
	return filterHash{h1, mix(h1) | 1}
}

// stackPositions is how many filter positions fit the buffer a test or add
// keeps on its stack; a filter with more hashes (a rate under about 1e-19)
// gets them on the heap.
const stackPositions = 64

// positions writes h's first k filter positions into buf, or a larger
// slice if k does not fit, and returns them.
func (h filterHash) positions(buf *[stackPositions]uint64, k uint) []uint64 {
	locs := buf[:0]
	if k > stackPositions {
		locs = make([]uint64, 0, k)
	}
	for i := range uint64(k) {
		locs = append(locs, h.h1+i*h.h2)
	}
	return locs
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
