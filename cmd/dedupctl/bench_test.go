package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/bench"
)

// TestBenchWithoutRedis runs the Redis baseline with no redis-server on
// PATH: the row is skipped, says why on stderr and in the table, and the
// other rows run.
func TestBenchWithoutRedis(t *testing.T) {
	t.Setenv("PATH", "")
	code, stdout, stderr := runIn(t, nil, "bench", "--ids", "1000", "--workload", "new",
		"--baseline", "pebble-batch-insert,redis-set-nx", "--dir", t.TempDir())
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "bench: redis-set-nx skipped: redis-server not found on PATH")
	assert.Regexp(t, `(?m)^ +redis-set-nx +skipped`, stdout)
	assert.Regexp(t, `(?m)^ +new .* 1000 +[0-9.]+x$`, stdout, "new has a ratio to the Pebble baseline only")
	assert.NotContains(t, stdout, "vs redis-set-nx")
}

// TestBenchCurveHasAPointPerSizeAndRow runs the cost curve at two tiny
// sizes: the JSON it writes has a point per size with a result per row,
// each row found what its mix says, and the chart labels every size and
// row.
func TestBenchCurveHasAPointPerSizeAndRow(t *testing.T) {
	results := filepath.Join(t.TempDir(), "curve")
	code, stdout, stderr := runIn(t, nil, "bench", "--curve", "2000,4000", "--sample", "500", "--concurrency", "2",
		"--dir", t.TempDir(), "--results", results)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "== 2000 marks; the read rows look up 500 IDs each")
	assert.Contains(t, stdout, "== 4000 marks")

	b, err := os.ReadFile(filepath.Join(results, "curve.json"))
	require.NoError(t, err)
	var c bench.Curve
	require.NoError(t, json.Unmarshal(b, &c))
	require.Len(t, c.Points, 2)
	for i, marks := range []int{2000, 4000} {
		pt := c.Points[i]
		assert.Equal(t, marks, pt.Marks)
		var rows []string
		found := map[string]int{}
		for _, r := range pt.Rows {
			rows = append(rows, r.Workload)
			found[r.Workload] = r.New
			assert.Positive(t, r.IDsPerSecond(), "%d marks: %s", marks, r.Workload)
		}
		require.Equal(t, bench.CurveRows, rows, "%d marks: a result per row, in order", marks)
		want := map[string]int{"new": marks, "cold-duplicates": 0, "open": marks, "pebble-batch-insert": marks, "pebble-get": 500}
		for row, n := range want {
			assert.Equal(t, n, found[row], "%d marks: %s found", marks, row)
		}
		assert.Less(t, found["seen-absent"], 25, "%d marks: only false positives are seen", marks)
		assert.Less(t, found["bloom-test"], 25, "%d marks: only false positives are seen", marks)
		assert.Positive(t, pt.Memory.StoreRSS, "%d marks", marks)
		assert.Positive(t, pt.Memory.FilterBytes, "%d marks", marks)
		assert.Positive(t, pt.Rows[0].DiskPerMark, "%d marks: the store is on disk", marks)
		assert.InDelta(t, 1.2, pt.Rows[6].RSSPerMark, 0.05, "%d marks: bloom/v3 takes 9.6 bits per mark at 1%%", marks)
	}
	assert.Zero(t, c.Points[0].Memory.MarginalPerMark, "the first size has no size before it")

	svg, err := os.ReadFile(filepath.Join(results, "curve.svg"))
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(svg, []byte("<?xml")), "curve.svg starts with %.20q", svg)
	for _, label := range append([]string{">2K<", ">4K<"}, bench.CurveRows...) {
		assert.Contains(t, string(svg), label, "the chart labels every size and row")
	}
}

func TestBenchCurveRefusesBadSizes(t *testing.T) {
	for _, tc := range []struct{ name, curve, sample string }{
		{"zero marks", "0", "10"},
		{"negative marks", "1000,-1", "10"},
		{"no sample", "1000", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runIn(t, nil, "bench", "--curve", tc.curve, "--sample", tc.sample, "--dir", t.TempDir())
			assert.Equal(t, 2, code, "a usage error: %s", stderr)
		})
	}
}
