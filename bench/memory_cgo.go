//go:build cgo

package bench

// CgoMemory says Pebble keeps its block cache and memtables in C memory:
// under cgo its allocator is malloc, which keeps what a row frees and
// hands it to the next row's allocations, unseen by RSS. Then only the
// first store of a curve run has a baseline free of earlier rows'
// memory.
const CgoMemory = true
