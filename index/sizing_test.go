package index

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/ttl"
)

// TestNewGenerationSizedFromFullest checks that a generation which outgrew
// the expected marks sizes the next generation of its span class: steady
// traffic then gets one filter per generation instead of a chain.
func TestNewGenerationSizedFromFullest(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	const marks = 3000 // three times ExpectedMarks
	ttlOf := time.Hour
	first := ttl.GenOf(ttlOf, ttl.DeadlineOf(testNow, ttlOf))
	var b Batch
	for i := range marks {
		b.Mark(ix.Key(fmt.Appendf(nil, "first-%d", i)), first, ttl.DeadlineOf(testNow, ttlOf), nil)
	}
	ix.Apply(&b, 1)
	require.Greater(t, len(ix.filters[first].filters), 1, "the first generation outgrew its estimate")
	assert.Equal(t, uint64(marks), ix.Marks())

	later := testNow.Add(2 * first.Span())
	second := ttl.GenOf(ttlOf, ttl.DeadlineOf(later, ttlOf))
	require.NotEqual(t, first, second)
	b.Reset()
	b.Mark(ix.Key([]byte("second")), second, ttl.DeadlineOf(later, ttlOf), nil)
	ix.Apply(&b, 2)
	f := ix.filters[second]
	require.Len(t, f.filters, 1)
	assert.GreaterOrEqual(t, f.caps[0], uint(marks), "sized for the fullest generation of its class")

	other := 10 * time.Second
	g := ttl.GenOf(other, ttl.DeadlineOf(later, other))
	b.Reset()
	b.Mark(ix.Key([]byte("other-class")), g, ttl.DeadlineOf(later, other), nil)
	ix.Apply(&b, 3)
	assert.Equal(t, uint(1000), ix.filters[g].caps[0], "another span class keeps the expected marks")
}

// TestOpenRemovesIngestLeftovers checks that a table a crash left before
// its ingestion is removed by the next Open.
func TestOpenRemovesIngestLeftovers(t *testing.T) {
	fs := vfs.NewMem()
	_, closeIndex := openIndex(t, testOptions(fs))
	closeIndex()
	leftover := fs.PathJoin(testDir, "ingest-0000000000000007.sst")
	f, err := fs.Create(leftover, vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	openIndex(t, testOptions(fs))
	_, err = fs.Stat(leftover)
	assert.Error(t, err, "the leftover table is removed")
}

// TestVerifyFindsUncoveredKeys checks that Verify lists every Pebble key
// its generation's filter would call absent.
func TestVerifyFindsUncoveredKeys(t *testing.T) {
	ix, _ := openIndex(t, testOptions(vfs.NewMem()))
	ttlOf := time.Hour
	g := ttl.GenOf(ttlOf, ttl.DeadlineOf(testNow, ttlOf))
	var b Batch
	for i := range 50 {
		b.Mark(ix.Key(fmt.Appendf(nil, "id-%d", i)), g, ttl.DeadlineOf(testNow, ttlOf), nil)
	}
	ix.Apply(&b, 1)
	checkpointIndex(t, ix)

	c, err := ix.Verify(testNow)
	require.NoError(t, err)
	assert.Equal(t, uint64(50), c.Keys)
	assert.Empty(t, c.Uncovered)

	blank := newGenFilter(g, 1000, 0.01) // as if the snapshot had lost the marks
	ix.filters[g] = blank
	ix.gens = []*genFilter{blank}
	c, err = ix.Verify(testNow)
	require.NoError(t, err)
	assert.Len(t, c.Uncovered, 50)

	c, err = ix.Verify(g.End())
	require.NoError(t, err)
	assert.Empty(t, c.Uncovered, "an expired generation waits for its drop")
}
