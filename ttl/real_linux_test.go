package ttl

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRealElapsedIsTheTimeSinceBoot checks that on Linux Real's Elapsed
// counts from boot, as /proc/uptime does, so that processes of one boot
// share it, and that Boot is the kernel's boot_id.
func TestRealElapsedIsTheTimeSinceBoot(t *testing.T) {
	var c Real
	p, err := os.ReadFile("/proc/uptime")
	require.NoError(t, err)
	secs, err := strconv.ParseFloat(strings.Fields(string(p))[0], 64)
	require.NoError(t, err)
	uptime := time.Duration(secs * float64(time.Second))
	assert.InDelta(t, float64(uptime), float64(c.Elapsed()), float64(time.Second), "Elapsed %v, uptime %v", c.Elapsed(), uptime)

	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(id)), c.Boot())
	assert.NotEmpty(t, c.Boot())
}
