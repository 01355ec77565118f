package ttl

import (
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// bootTime reads CLOCK_BOOTTIME: the time since boot, suspend included.
func bootTime() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// bootAtOrigin is CLOCK_BOOTTIME when origin was read, and hasBootTime
// whether the kernel has that clock (since Linux 2.6.39).
var bootAtOrigin, hasBootTime = bootTime()

// bootID is the kernel's name for this boot, empty if the kernel has no
// boot clock or names no boot.
var bootID = sync.OnceValue(func() string {
	if !hasBootTime {
		return ""
	}
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(id))
})

// Elapsed returns CLOCK_BOOTTIME; on a kernel without it, Go's monotonic
// time since the process started.
func (Real) Elapsed() time.Duration {
	if d, ok := bootTime(); ok {
		return d
	}
	return bootAtOrigin + time.Since(origin)
}

// Boot returns the kernel's boot_id.
func (Real) Boot() string { return bootID() }
