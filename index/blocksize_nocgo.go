//go:build !cgo

package index

// dataBlockSize is the index tables' data block size. Without cgo
// Pebble's block cache is made of Go heap objects: one per cached block,
// the block with its trailer and the metadata Pebble decodes into it.
// Around a 4 KiB block that object falls in a size class five to a span,
// and blocks evicted in random order leave most spans part-full, room
// the heap can neither reuse for other sizes nor return: the cache then
// holds far more memory than its size. A block of this size fills the
// 8 KiB class, one to a span, so that its room goes back whole when it
// is evicted. Misses of a cache smaller than the index read and check
// twice the bytes.
const dataBlockSize = 7680
