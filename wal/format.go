// Package wal is the store's write-ahead log: an ordered sequence of
// CRC-framed records, each with a log sequence number (LSN), in numbered
// segment files. It knows bytes, not keys.
//
// A segment is named after the LSN of its first record (%016x.wal) and is
// preallocated to a size between Options.MinSegmentSize and SegmentSize,
// which follows the rate of writes, so segments of one log may differ in
// size. It starts with a 32-byte header:
//
//	+----------------+-------------+--------------+----------------+------------+---------+
//	| magic (8B)     | version (4B)| size (4B)    | first LSN (8B) | CRC32C (4B)| pad (4B)|
//	| "dedupwal"     | 1           | KiB          |                | of bytes 0-23        |
//	+----------------+-------------+--------------+----------------+------------+---------+
//
// Size is the size the segment is preallocated to, in KiB rounded down;
// 0 (the field was reserved before) means unknown. A segment is filled
// with written zeros ahead of its records, zeroAhead bytes at a time, and
// those zeros are synced before any record that relies on them, so a
// newest segment shorter than min(S+zeroAhead/2, size), where S is the
// highest synced-to of its records (at least the header), was cut short
// after the fact: that is damage, not a crash. Builds that reserved the
// field ignore it, so the version stays 1.
//
// A segment gets its name only once its header is durable (see
// stateName): a segment with a zeroed, short or missing header is
// damage. Only a log written by an earlier build (no STATE file) may hold
// a newest segment that is all zeros, which its crash in creating one left;
// recovery drops that one.
//
// Records follow, each starting on an 8-byte boundary:
//
//	+-------------+-------------+----------+----------------+-----------------+---------+
//	| CRC32C (4B) | length (4B) | LSN (8B) | synced-to (8B) | payload (length)| pad 0-7 |
//	+-------------+-------------+----------+----------------+-----------------+---------+
//
// The CRC (Castagnoli) covers length, LSN, synced-to and payload. LSNs rise
// by exactly one from record to record and from segment to segment,
// except over the LSNs a repair cut, which STATE lists. A
// length of zero ends the segment's data: the preallocated rest is zeros.
//
// Synced-to is the segment offset below which every byte was already
// durable when the record was appended. It lets recovery tell a torn tail
// from damage: after a crash, a bad record at offset b in the last segment
// is a torn write (never acknowledged under SyncAlways, and truncated) only
// if no valid later record says that b had been synced; otherwise the log
// is corrupt. Damage in any earlier segment, which was synced whole before
// the next one was created, is always corruption. What synced-to cannot
// tell apart: damage confined to the records written since the newest
// segment's last fsync that a surviving record reports (the last group
// commit before the crash, which no later record vouches for) looks like
// a torn write, and is truncated although, under SyncAlways, those
// records may have been acknowledged.
//
// All integers are little-endian. These layouts are part of the on-disk
// format: do not change them without a new version.
package wal

import (
	"encoding/binary"
	"hash/crc32"
	"math"
)

const (
	magic         = "dedupwal"
	formatVersion = 1

	headerSize    = 32
	recHeaderSize = 24
	align         = 8

	// MaxPayload bounds one record's payload.
	MaxPayload = 1<<31 - 1
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segmentHeader encodes the header of a segment whose first LSN is first,
// preallocated to size bytes.
func segmentHeader(first uint64, size int64) []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], formatVersion)
	binary.LittleEndian.PutUint32(h[12:], uint32(min(size>>10, math.MaxUint32)))
	binary.LittleEndian.PutUint64(h[16:], first)
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], crcTable))
	return h
}

// preallocated returns the size a segment with header h was preallocated
// to, or 0 if its header does not say.
func preallocated(h []byte) int64 {
	if len(h) < 16 {
		return 0
	}
	return int64(binary.LittleEndian.Uint32(h[12:])) << 10
}

// recordSize is the aligned size of a record with an n-byte payload.
func recordSize(n int) int {
	return (recHeaderSize + n + align - 1) &^ (align - 1)
}

// appendRecord appends the framed, padded record to b.
func appendRecord(b []byte, lsn, syncedTo uint64, payload []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, recHeaderSize)...)
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(b[start+8:], lsn)
	binary.LittleEndian.PutUint64(b[start+16:], syncedTo)
	b = append(b, payload...)
	crc := crc32.Checksum(b[start+4:], crcTable)
	binary.LittleEndian.PutUint32(b[start:], crc)
	return append(b, make([]byte, recordSize(len(payload))-recHeaderSize-len(payload))...)
}

// record is one decoded record.
type record struct {
	lsn      uint64
	syncedTo uint64
	payload  []byte // aliases the segment buffer
	size     int    // aligned size on disk; the padding may be cut off at the end of a file
}

// decodeRecord decodes the record at the start of b. ok is false if b does
// not hold a whole record with a valid CRC and a non-zero length.
func decodeRecord(b []byte) (r record, ok bool) {
	if len(b) < recHeaderSize {
		return r, false
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if n == 0 || int64(n) > int64(len(b)-recHeaderSize) {
		return r, false
	}
	end := recHeaderSize + int(n)
	if crc32.Checksum(b[4:end], crcTable) != binary.LittleEndian.Uint32(b) {
		return r, false
	}
	return record{
		lsn:      binary.LittleEndian.Uint64(b[8:]),
		syncedTo: binary.LittleEndian.Uint64(b[16:]),
		payload:  b[recHeaderSize:end],
		size:     recordSize(int(n)),
	}, true
}
