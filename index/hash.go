package index

import "github.com/cespare/xxhash/v2"

// hashID is the 64-bit hash of an ID that the memtable and the filters
// share. Part of the on-disk format: the filter snapshots hold its bits.
func hashID(id []byte) uint64 { return xxhash.Sum64(id) }

// locations returns the k filter positions of an ID by double hashing
// (Kirsch and Mitzenmacher): h1 + i·h2, with h2 an odd mix of h1. bloom/v3
// takes the positions modulo each filter's size, so one hashing serves
// every filter of every generation. It replaces bloom/v3's own murmur
// hashing, which costs several times as much for a short ID.
func locations(id []byte, k uint) []uint64 {
	h1 := hashID(id)
	h2 := mix(h1) | 1
	locs := make([]uint64, k)
	for i := range locs {
		locs[i] = h1 + uint64(i)*h2
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
