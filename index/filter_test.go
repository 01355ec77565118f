package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"testing"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/ttl"
)

const (
	testCapacity = 1000
	testFP       = 0.01
)

// testHash hashes the i-th key of a key space, as the index would.
func testHash(space string, i int) filterHash {
	return hashOf(fmt.Appendf(nil, "%s-%d", space, i))
}

// filledFilter returns a generation filter holding keys 0..n-1 of "present".
func filledFilter(n int) *genFilter {
	f := newGenFilter(ttl.Gen(2<<56|12345), testCapacity, testFP)
	for i := range n {
		f.add(testHash("present", i), testFP)
	}
	return f
}

// measuredFPRate is the share of absent keys f may hold.
func measuredFPRate(f *genFilter, absent int) float64 {
	var fp int
	for i := range absent {
		if f.test(testHash("absent", i)) {
			fp++
		}
	}
	return float64(fp) / float64(absent)
}

// assertWithin2x asserts that fpRate() estimated the measured rate within
// a factor of 2.
func assertWithin2x(t *testing.T, measured, estimate float64) {
	t.Helper()
	assert.GreaterOrEqual(t, estimate, measured/2, "fpRate() underestimates the measured rate %.4f", measured)
	assert.LessOrEqual(t, estimate, 2*measured, "fpRate() overestimates the measured rate %.4f", measured)
}

func TestGenFilterChain(t *testing.T) {
	const n = 10_000
	f := filledFilter(n)

	require.Greater(t, len(f.filters), 1, "the chain must grow past its first filter")
	assert.Equal(t, []uint{1000, 2000, 4000, 8000}, f.caps, "each filter is twice the size of the one before")
	assert.Equal(t, uint(n), f.marks)
	assert.Equal(t, uint(n-1000-2000-4000), f.n, "marks in the newest filter")
	assert.True(t, f.dirty)

	for i := range n {
		if !f.test(testHash("present", i)) {
			require.Failf(t, "false negative", "key %d of %d was added but tests absent", i, n)
		}
	}

	measured := measuredFPRate(f, 100_000)
	t.Logf("measured false-positive rate %.4f over %d filters; fpRate() %.4f", measured, len(f.filters), f.fpRate())
	assert.LessOrEqual(t, measured, 1.5*testFP,
		"a generation that outgrows its estimate must keep the target false-positive rate")
	assertWithin2x(t, measured, f.fpRate())
}

func TestGenFilterWithinCapacity(t *testing.T) {
	f := filledFilter(testCapacity)
	assert.Len(t, f.filters, 1, "a filter takes exactly its capacity before the chain grows")
	measured := measuredFPRate(f, 100_000)
	assert.LessOrEqual(t, measured, 1.5*testFP)
	assertWithin2x(t, measured, f.fpRate())

	f.add(testHash("present", testCapacity), testFP)
	assert.Len(t, f.filters, 2, "the next mark starts a new filter")
}

func TestGenFilterEncodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		n    int
	}{
		{"empty", 0},
		{"one filter", 500},
		{"chain", 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filledFilter(tt.n)
			got, err := decodeGenFilter("gen.bloom", f.encode())
			require.NoError(t, err)
			assert.Equal(t, f.gen, got.gen)
			assert.Equal(t, f.end, got.end)
			assert.Equal(t, f.caps, got.caps)
			assert.Equal(t, f.marks, got.marks)
			assert.Equal(t, f.n, got.n)
			assert.False(t, got.dirty, "a loaded snapshot is clean")
			require.Len(t, got.filters, len(f.filters))
			for i := range f.filters {
				assert.True(t, f.filters[i].Equal(got.filters[i]), "filter %d", i)
			}
			for i := range tt.n {
				require.True(t, got.test(testHash("present", i)), "key %d lost in the round trip", i)
			}
			for i := range 1000 {
				h := testHash("absent", i)
				assert.Equal(t, f.test(h), got.test(h), "absent key %d", i)
			}
			assert.Equal(t, f.encode(), got.encode(), "re-encoding")
		})
	}
}

func TestDecodeGenFilterDamaged(t *testing.T) {
	const path = "filters/0200000000003039-0000000000000007.bloom"
	valid := filledFilter(1500).encode()
	// reseal recomputes the CRC, so only the change it follows is wrong.
	reseal := func(p []byte) []byte {
		body := p[:len(p)-4]
		return binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, crcTable))
	}
	tests := []struct {
		name string
		data func() []byte
		want error
	}{
		{"flipped byte in a filter", func() []byte {
			p := bytes.Clone(valid)
			p[len(p)/2] ^= 0x10
			return p
		}, ErrCorrupt},
		{"flipped byte in the header", func() []byte {
			p := bytes.Clone(valid)
			p[len(filterMagic)+20] ^= 0x01
			return p
		}, ErrCorrupt},
		{"flipped CRC", func() []byte {
			p := bytes.Clone(valid)
			p[len(p)-1] ^= 0x80
			return p
		}, ErrCorrupt},
		{"truncated", func() []byte { return valid[:len(valid)-100] }, ErrCorrupt},
		{"truncated to the header", func() []byte { return valid[:len(filterMagic)+32] }, ErrCorrupt},
		{"empty", func() []byte { return nil }, ErrCorrupt},
		{"bad magic", func() []byte {
			p := bytes.Clone(valid)
			copy(p, "notafilt")
			return reseal(p)
		}, ErrCorrupt},
		{"wrong version", func() []byte {
			p := bytes.Clone(valid)
			binary.LittleEndian.PutUint32(p[len(filterMagic):], filterVersion+1)
			return reseal(p)
		}, ErrIncompatibleFormat},
		{"no filters", func() []byte {
			p := bytes.Clone(valid[:len(filterMagic)+32])
			binary.LittleEndian.PutUint32(p[len(filterMagic)+4:], 0)
			return reseal(append(p, 0, 0, 0, 0))
		}, ErrCorrupt},
		{"filter count past the data", func() []byte {
			p := bytes.Clone(valid)
			binary.LittleEndian.PutUint32(p[len(filterMagic)+4:], 3)
			return reseal(p)
		}, ErrCorrupt},
		{"filter not whole blocks", func() []byte {
			f := filledFilter(0)
			f.filters[0] = bloom.New(blockBits+64, 7)
			return f.encode()
		}, ErrCorrupt},
		{"trailing bytes", func() []byte {
			p := bytes.Clone(valid)
			return reseal(append(p[:len(p)-4], 1, 2, 3, 4, 0, 0, 0, 0))
		}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := decodeGenFilter(path, tt.data())
			require.Error(t, err)
			assert.Nil(t, f)
			assert.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), path)
		})
	}
}

func TestGenFilterClone(t *testing.T) {
	f := filledFilter(1500)
	c := f.clone()
	for i := range 3000 {
		f.add(testHash("later", i), testFP)
	}
	assert.Equal(t, uint(1500), c.marks, "the clone keeps the marks it was taken with")
	assert.Equal(t, []uint{1000, 2000}, c.caps)
	require.Len(t, c.filters, 2)
	for i := range c.filters {
		assert.NotSame(t, f.filters[i], c.filters[i], "filter %d is shared", i)
	}
	var leaked int
	for i := range 3000 {
		if c.test(testHash("later", i)) {
			leaked++
		}
	}
	assert.Less(t, leaked, 3000/20, "keys added after the clone must not reach it")
}

// TestWindowBounds checks a generation's window, the age of its oldest
// live mark, for every TTL of some span classes and every moment the
// mark lives: with write times recorded it is exact for one mark; without
// them (a filter rebuilt from Pebble) it is still never below the truth.
func TestWindowBounds(t *testing.T) {
	written := testutil.Epoch
	for _, d := range []time.Duration{time.Second, 7 * time.Second, 8 * time.Second, time.Minute, 24 * time.Hour, 7 * 24 * time.Hour} {
		dl := ttl.DeadlineOf(written, d)
		g := ttl.GenOf(d, dl)
		for _, age := range []time.Duration{0, d / 3, d - 1} {
			now := written.Add(age).UnixNano()
			known := newGenFilter(g, testCapacity, testFP)
			known.wrote(written.UnixNano(), dl)
			assert.Equal(t, age, known.window(now), "TTL %v, age %v, write time known", d, age)

			unknown := newGenFilter(g, testCapacity, testFP)
			assert.GreaterOrEqual(t, unknown.window(now), age, "TTL %v, age %v, write time unknown", d, age)
		}
	}
}

// TestFilterSizeIsBoundedForAnyRate sizes filters for rates no blocked
// filter can reach, or no rate at all: sizing must end, within
// maxBitsPerKey bits per key, and the filter must still hold its keys.
// A rate of 1e-80 used to loop for ever, and 1e-30 to ask for gigabytes.
func TestFilterSizeIsBoundedForAnyRate(t *testing.T) {
	const n = 1000
	for _, rate := range []float64{MinFalsePositiveRate, 1e-30, 1e-80, 5e-324, 0, -1, math.NaN(), 0.99, 1, 2} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			done := make(chan *genFilter, 1)
			go func() {
				f := newGenFilter(ttl.Gen(2<<56|12345), n, rate)
				for i := range 2 * n { // a chain of two, the second asked for a quarter of the rate
					f.add(testHash("present", i), rate)
				}
				done <- f
			}()
			select {
			case f := <-done:
				assert.LessOrEqual(t, f.bytes()*8, uint64(3*n*maxBitsPerKey+2*blockBits), "filter bits for %d keys", 2*n)
				assert.LessOrEqual(t, f.filters[0].K(), uint(maxHashes))
				for i := range 2 * n {
					if !f.test(testHash("present", i)) {
						assert.Failf(t, "false negative", "key %d", i)
						return
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("sizing a filter for rate %v does not end", rate)
			}
		})
	}
}
