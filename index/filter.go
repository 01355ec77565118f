package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/seed42300104/dedup/ttl"
)

// errUnblocked marks a filter snapshot of format version 2, whose layout
// this build no longer reads: Open rebuilds the filters from Pebble.
var errUnblocked = errors.New("filter snapshot of the unblocked layout (version 2)")

// genFilter is the Bloom filter of one generation. It is a chain: when the
// generation outgrows the marks its newest filter was sized for, a filter
// for twice as many is added, with a quarter of the previous one's rate, so
// the chain's rate stays within 4/3 of the target however far the
// generation outgrows its estimate. Every filter of every chain uses the
// same number of hashes, so one hash of an ID serves them all.
type genFilter struct {
	gen     ttl.Gen
	end     int64 // gen.End() in Unix nanoseconds
	filters []*bloom.BloomFilter
	caps    []uint // marks each filter was sized for
	n       uint   // marks added to the newest filter
	marks   uint   // marks added in all
	dirty   bool   // changed since the last snapshot
	// added records, while a merge of the chain runs, the first hash of
	// each mark applied since it began, extensions included (see
	// merge.go); nil when none runs.
	added []uint64

	// firstWrite is the earliest write time of its marks and maxTTL their
	// longest TTL, in nanoseconds; zero where unknown (a filter rebuilt
	// from Pebble, or marks written by a build that did not record times).
	firstWrite, maxTTL int64
}

func newGenFilter(g ttl.Gen, capacity uint, fp float64) *genFilter {
	f := &genFilter{gen: g, end: g.End().UnixNano()}
	f.grow(capacity, fp)
	return f
}

func (f *genFilter) grow(capacity uint, fp float64) {
	capacity = max(capacity, 1)
	var k uint
	if len(f.filters) == 0 {
		_, k = bloom.EstimateParameters(capacity, fp)
		k = min(max(k, 1), maxHashes)
	} else {
		k = f.filters[0].K()
		fp /= math.Pow(4, float64(len(f.filters)))
	}
	f.filters = append(f.filters, newFilter(capacity, k, fp))
	f.caps = append(f.caps, capacity)
	f.n = 0
}

// newFilter returns an empty blocked filter of n keys, k hashes and the
// given rate, its memory advised to huge pages.
func newFilter(n, k uint, rate float64) *bloom.BloomFilter {
	b := bloom.New(bitsFor(n, k, rate), k)
	adviseHuge(b.BitSet().Words())
	return b
}

// MinFalsePositiveRate is the smallest rate a filter may be asked for.
// Below it a blocked filter's bits per key grow steeply, toward a rate its
// blocks cannot reach at all, for a saving of one Pebble read per million
// new IDs at most.
const MinFalsePositiveRate = 1e-6

// maxHashes bounds the hashes of a filter, whatever rate it is sized for:
// more would fill a block with one key.
const maxHashes = 32

// maxBitsPerKey bounds the size of a filter, whatever rate it is asked
// for: a chain's later filters are asked for ever smaller rates, and a
// rate below what the bound allows gets the best rate within it.
const maxBitsPerKey = 256

// bitsFor is the size, in whole blocks, of the smallest blocked filter of
// n keys and k hashes whose false-positive rate is at most rate, or of
// maxBitsPerKey bits per key if that is smaller.
func bitsFor(n, k uint, rate float64) uint {
	if rate >= 1 {
		return blockBits
	}
	limit := n/(blockBits/maxBitsPerKey) + 1 // in blocks
	// A blocked filter needs at least the bits of a classic one:
	// rate = (1 - e^(-kn/m))^k solved for m.
	classic := math.Ceil(-float64(k) * float64(n) / math.Log(1-math.Pow(rate, 1/float64(k))))
	if !(classic >= 0 && classic < float64(limit)*blockBits) { // past the limit, or no rate at all
		classic = float64(limit) * blockBits
	}
	hi := max(uint(classic)/blockBits, 1)
	for hi < limit && blockedRate(hi*blockBits, n, k) > rate {
		hi = min(2*hi, limit)
	}
	lo := hi/2 + 1
	for lo < hi {
		mid := (lo + hi) / 2
		if blockedRate(mid*blockBits, n, k) <= rate {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return hi * blockBits
}

// blockedRate is the false-positive rate of a blocked filter of m bits
// and k hashes holding n keys. The keys per block are Poisson distributed;
// a block holding j keys answers a false positive as a classic filter of
// blockBits bits would.
func blockedRate(m, n, k uint) float64 {
	lambda := float64(n) * blockBits / float64(m)
	if lambda == 0 {
		return 0
	}
	spread := 12*math.Sqrt(lambda) + 12
	var rate float64
	for j := max(0, math.Floor(lambda-spread)); j <= lambda+spread; j++ {
		lg, _ := math.Lgamma(j + 1)
		p := math.Exp(j*math.Log(lambda) - lambda - lg)
		rate += p * math.Pow(1-math.Pow(1-1.0/blockBits, j*float64(k)), float64(k))
	}
	return min(rate, 1)
}

// test reports whether the generation may hold the key hashed to h.
// Each filter uses as many bits as it has hashes: a store reopened with
// another FalsePositiveRate keeps the filters it has.
func (f *genFilter) test(h filterHash) bool { return chainMayContain(f.filters, h) }

// chainMayContain reports whether any filter of a chain may hold the key
// hashed to h.
func chainMayContain(chain []*bloom.BloomFilter, h filterHash) bool {
	for _, b := range chain {
		if mayContain(b, h) {
			return true
		}
	}
	return false
}

// mayContain reports whether b may hold the key hashed to h. Bits are
// read and set atomically, so that MayHold can test them without a lock
// while Apply adds marks. It reads every bit rather than stopping at the
// first clear one: they share one cache line, and for an absent key a
// branch on each would be mispredicted about half the time.
func mayContain(b *bloom.BloomFilter, h filterHash) bool {
	blk, bits := blockOf(b, h), h.bits()
	var unset uint64
	for range b.K() {
		p := bits.next()
		unset |= ^atomic.LoadUint64(&blk[p/64]) & (1 << (p % 64))
	}
	return unset == 0
}

// blockOf returns the words of h's block in b.
func blockOf(b *bloom.BloomFilter, h filterHash) *[blockWords]uint64 {
	w := b.BitSet().Words()
	return (*[blockWords]uint64)(w[h.block(uint64(len(w)/blockWords))*blockWords:])
}

// add records the key hashed to h, growing the chain if it is full, and
// reports whether it grew.
func (f *genFilter) add(h filterHash, fp float64) (grew bool) {
	if f.n >= f.caps[len(f.caps)-1] {
		f.grow(2*f.caps[len(f.caps)-1], fp)
		grew = true
	}
	setBits(f.filters[len(f.filters)-1], h)
	if f.added != nil {
		f.added = append(f.added, h.h1)
	}
	f.n++
	f.marks++
	f.dirty = true
	return grew
}

// warm loads the block that an add of the key hashed to h sets bits in.
func (f *genFilter) warm(h filterHash) {
	atomic.LoadUint64(&blockOf(f.filters[len(f.filters)-1], h)[0])
}

// setBits adds the key hashed to h to b.
func setBits(b *bloom.BloomFilter, h filterHash) {
	blk, bits := blockOf(b, h), h.bits()
	for range b.K() {
		p := bits.next()
		atomic.OrUint64(&blk[p/64], 1<<(p%64))
	}
}

// wrote records that a mark with the given deadline was written at t, for
// window. A zero t is unknown and changes nothing.
func (f *genFilter) wrote(t int64, deadline ttl.Deadline) {
	if t == 0 {
		return
	}
	if f.firstWrite == 0 || t < f.firstWrite {
		f.firstWrite = t
	}
	f.maxTTL = max(f.maxTTL, int64(deadline)-t)
	f.dirty = true
}

// window returns at most how long ago the oldest mark of the generation
// still live at now was written: no earlier than its first write, and no
// longer ago than its longest TTL. Where those are unknown it assumes the
// longest TTL of the generation's span class.
func (f *genFilter) window(now int64) time.Duration {
	first, longest := f.firstWrite, f.maxTTL
	if first == 0 {
		longest = int64(8 * f.gen.Span()) // a class's TTLs are under 8 spans
		first = f.end - int64(f.gen.Span()) - longest
	}
	return time.Duration(min(now-first, longest))
}

// bytes is the filter memory of the generation.
func (f *genFilter) bytes() uint64 {
	var n uint64
	for _, b := range f.filters {
		n += uint64(b.Cap()+7) / 8
	}
	return n
}

// fpRate estimates the false-positive rate of the chain for an absent key,
// from each filter's size, hash count and fill.
// It sums the logs of the filters' miss rates, so that a small rate is
// not lost to rounding as 1 - (1 - rate).
func (f *genFilter) fpRate() float64 {
	var logMiss float64
	for i, b := range f.filters {
		n := f.caps[i]
		if i == len(f.filters)-1 {
			n = f.n
		}
		logMiss += math.Log1p(-blockedRate(b.Cap(), n, b.K()))
	}
	return -math.Expm1(logMiss)
}

func (f *genFilter) clone() *genFilter {
	c := *f
	c.filters = make([]*bloom.BloomFilter, len(f.filters))
	for i, b := range f.filters {
		c.filters[i] = b.Copy()
	}
	c.caps = append([]uint(nil), f.caps...)
	c.added = nil
	return &c
}

// Filter snapshot file:
//
//	| magic "dedupflt" (8B) | version (4B) | filters (4B) | gen (8B) | marks (8B) | n (8B) |
//	| first write (8B) | longest TTL (8B) |
//	| per filter: capacity (8B), bloom/v3 WriteTo encoding |
//	| CRC32C of all the above (4B) |
//
// Little-endian except the bloom encoding (big-endian, bloom/v3's own).
// Each filter is whole blocks of blockBits bits, laid out as block and
// bit say. Version 2 had the same encoding but spread an ID's bits over
// the whole filter; Open rebuilds such filters from Pebble. Part of the
// on-disk format.
const (
	filterMagic   = "dedupflt"
	filterVersion = 3
	filterHeader  = 48 // after the magic
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func (f *genFilter) encode() []byte {
	var buf bytes.Buffer
	buf.WriteString(filterMagic)
	var h [filterHeader]byte
	binary.LittleEndian.PutUint32(h[0:], filterVersion)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(f.filters)))
	binary.LittleEndian.PutUint64(h[8:], uint64(f.gen))
	binary.LittleEndian.PutUint64(h[16:], uint64(f.marks))
	binary.LittleEndian.PutUint64(h[24:], uint64(f.n))
	binary.LittleEndian.PutUint64(h[32:], uint64(f.firstWrite))
	binary.LittleEndian.PutUint64(h[40:], uint64(f.maxTTL))
	buf.Write(h[:])
	for i, b := range f.filters {
		buf.Write(binary.LittleEndian.AppendUint64(nil, uint64(f.caps[i])))
		if _, err := b.WriteTo(&buf); err != nil {
			panic(err) // bytes.Buffer does not fail
		}
	}
	return binary.LittleEndian.AppendUint32(buf.Bytes(), crc32.Checksum(buf.Bytes(), crcTable))
}

func decodeGenFilter(path string, p []byte) (*genFilter, error) {
	const fixed = len(filterMagic) + filterHeader
	if len(p) < fixed+4 {
		return nil, fmt.Errorf("%w: %s: offset 0: short filter snapshot (%d bytes)", ErrCorrupt, path, len(p))
	}
	body, sum := p[:len(p)-4], binary.LittleEndian.Uint32(p[len(p)-4:])
	if string(body[:len(filterMagic)]) != filterMagic {
		return nil, fmt.Errorf("%w: %s: offset 0: bad magic", ErrCorrupt, path)
	}
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: %s: offset %d: filter snapshot CRC mismatch", ErrCorrupt, path, len(body))
	}
	h := body[len(filterMagic):]
	switch v := binary.LittleEndian.Uint32(h); v {
	case filterVersion:
	case 2:
		return nil, fmt.Errorf("%s: %w", path, errUnblocked)
	default:
		return nil, fmt.Errorf("%w: %s: filter format version %d", ErrIncompatibleFormat, path, v)
	}
	g := ttl.Gen(binary.LittleEndian.Uint64(h[8:]))
	f := &genFilter{
		gen:        g,
		end:        g.End().UnixNano(),
		marks:      uint(binary.LittleEndian.Uint64(h[16:])),
		n:          uint(binary.LittleEndian.Uint64(h[24:])),
		firstWrite: int64(binary.LittleEndian.Uint64(h[32:])),
		maxTTL:     int64(binary.LittleEndian.Uint64(h[40:])),
	}
	r := bytes.NewReader(body[fixed:])
	for range binary.LittleEndian.Uint32(h[4:]) {
		var c uint64
		if err := binary.Read(r, binary.LittleEndian, &c); err != nil {
			return nil, fmt.Errorf("%w: %s: offset %d: %v", ErrCorrupt, path, len(body)-r.Len(), err)
		}
		at := len(body) - r.Len()
		b := &bloom.BloomFilter{}
		if _, err := b.ReadFrom(r); err != nil {
			return nil, fmt.Errorf("%w: %s: offset %d: %v", ErrCorrupt, path, len(body)-r.Len(), err)
		}
		if b.Cap() == 0 || b.Cap()%blockBits != 0 || b.K() == 0 || b.K() > blockBits {
			return nil, fmt.Errorf("%w: %s: offset %d: filter of %d bits and %d hashes", ErrCorrupt, path, at, b.Cap(), b.K())
		}
		adviseHuge(b.BitSet().Words()) // already written: the kernel collapses it later, if at all
		f.filters = append(f.filters, b)
		f.caps = append(f.caps, uint(c))
	}
	if len(f.filters) == 0 || r.Len() != 0 {
		return nil, fmt.Errorf("%w: %s: offset %d: malformed filter snapshot", ErrCorrupt, path, len(body)-r.Len())
	}
	return f, nil
}
