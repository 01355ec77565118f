package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
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
