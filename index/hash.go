package index

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// hashID is the 64-bit hash of an ID that the memtable and the filters
// share. Part of the on-disk format: the filter snapshots hold its bits.
func hashID(id []byte) uint64 { return xxhash.Sum64(id) }

// filterHash is an ID's filter hash. h1 picks the ID's block in a filter;
// h2, an odd mix of h1, places its bits in the block. One hashing serves
// every filter of every generation, whatever their sizes. The zero value,
// whose h2 is even, means not computed.
type filterHash struct{ h1, h2 uint64 }

func hashOf(id []byte) filterHash { return hashOfH1(hashID(id)) }

// hashOfH1 returns the filterHash whose first hash is h1.
func hashOfH1(h1 uint64) filterHash { return filterHash{h1, mix(h1) | 1} }

// blockBits is the size of a filter block, one 64-byte cache line. All of
// an ID's bits in a filter lie in one block, so a test or an add costs one
// cache miss rather than one per hash (Putze, Sanders and Singler,
// "Cache-, hash- and space-efficient Bloom filters"). The price is a
// higher false-positive rate for the same bits, which sizing pays for.
const (
	blockBits  = 512
	blockWords = blockBits / 64
)

// block returns the index of h's block among n blocks.
func (h filterHash) block(n uint64) uint64 {
	hi, _ := bits.Mul64(h.h1, n)
	return hi
}

// bits returns the positions of h's bits in its block: 9-bit slices of
// h2 (bar its always-set lowest bit), and of remixes of it after every
// seventh.
func (h filterHash) bits() blockPositions { return blockPositions{h.h2 >> 1, positionsPerWord} }

// positionsPerWord is how many 9-bit positions one 64-bit hash yields.
const positionsPerWord = 63 / 9

// blockPositions yields the positions of one ID's bits in a block.
type blockPositions struct {
	x    uint64
	left int
}

func (p *blockPositions) next() uint64 {
	if p.left == 0 {
		p.x, p.left = mix(p.x), positionsPerWord
	}
	pos := p.x % blockBits
	p.x /= blockBits
	p.left--
	return pos
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
