package index

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseHuge asks the kernel to back the whole 2 MiB pages inside w with
// huge pages. Filters and memtable hash slots are read and written at
// random, and with 4 KiB pages most of those accesses also miss the TLB.
func adviseHuge(w []uint64) {
	const huge = 2 << 20
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*8)
	if len(b) < huge {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := int((p+huge-1)&^(huge-1) - p)
	end := int((p+uintptr(len(b)))&^(huge-1) - p)
	if end > start {
		_ = unix.Madvise(b[start:end], unix.MADV_HUGEPAGE) // advice: a refusal changes nothing
	}
}
