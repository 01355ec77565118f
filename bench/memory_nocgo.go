//go:build !cgo

package bench

// CgoMemory says Pebble keeps its block cache and memtables in C memory;
// without cgo they are Go memory, which the GC before each RSS reading
// returns to the system once freed.
const CgoMemory = false
