//go:build cgo

package index

// dataBlockSize is the index tables' data block size. Under cgo Pebble
// keeps its block cache in C memory, where no size class or span holds
// a freed block's room hostage, so Pebble's default stands.
const dataBlockSize = 4096
