package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/ttl"
)

// TestCompactTrustClockDropsWhatEndedAcrossAReboot compacts a store last
// open two days ago on a clock of another boot: compact keeps the
// generations that ended meanwhile, since the store cannot confirm the
// clock yet, and says so on stderr; compact --trust-clock drops them.
func TestCompactTrustClockDropsWhatEndedAcrossAReboot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	clock := ttl.NewFake(time.Now().Add(-48 * time.Hour))
	clock.SetBoot("a boot before this one")
	s, err := dedup.Open(dir, &dedup.Options{Clock: clock})
	require.NoError(t, err)
	_, err = s.CheckAndMarkBatch([][]byte{[]byte("a"), []byte("b")}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	code, stdout, stderr := runIn(t, nil, "--dir", dir, "compact")
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `(?m)^generations +1 +1$`, stdout)
	assert.Contains(t, stderr, "compact kept 1 of the generations that ended by the wall clock")
	assert.Contains(t, stderr, "--trust-clock")

	code, stdout, stderr = runIn(t, nil, "--dir", dir, "compact", "--trust-clock")
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `(?m)^generations +1 +0$`, stdout)
	assert.NotContains(t, stderr, "compact kept")

	code, stdout, _ = runIn(t, nil, "--dir", dir, "compact", "--help")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "--trust-clock")
}
