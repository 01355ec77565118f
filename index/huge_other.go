//go:build !linux

package index

// adviseHuge does nothing where madvise(MADV_HUGEPAGE) is not available.
func adviseHuge([]uint64) {}
