//go:build !linux

package ttl

import "time"

// Elapsed returns the monotonic time since the process started.
func (Real) Elapsed() time.Duration { return time.Since(origin) }

// Boot returns the empty string: readings of Elapsed compare only within
// the process.
func (Real) Boot() string { return "" }
