package wal

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeRecord checks that decodeRecord never panics, and that what it
// accepts is exactly what appendRecord writes: the header and payload
// re-encode to the input's bytes. Padding is not covered by the CRC, so it
// is not compared. The seed corpus is in testdata/fuzz/FuzzDecodeRecord.
func FuzzDecodeRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := decodeRecord(b)
		if !ok {
			return
		}
		dataEnd := recHeaderSize + len(r.payload)
		if len(r.payload) == 0 || dataEnd > len(b) {
			t.Fatalf("record of %d payload bytes in %d bytes", len(r.payload), len(b))
		}
		if r.size != recordSize(len(r.payload)) {
			t.Fatalf("size %d is not the aligned size %d: the next record would start off its boundary", r.size, recordSize(len(r.payload)))
		}
		enc := appendRecord(nil, r.lsn, r.syncedTo, r.payload)
		if !bytes.Equal(enc[:dataEnd], b[:dataEnd]) {
			t.Fatalf("re-encoding differs:\n got  %x\n want %x", enc[:dataEnd], b[:dataEnd])
		}
		again, ok := decodeRecord(enc)
		if !ok || again.lsn != r.lsn || again.syncedTo != r.syncedTo || !bytes.Equal(again.payload, r.payload) || again.size != len(enc) {
			t.Fatalf("re-encoded record decodes to %+v, %v; want %+v", again, ok, r)
		}
	})
}

// FuzzScanSegment feeds arbitrary bytes after a valid segment header to
// scanSegment. It must never panic, fail only with ErrCorrupt naming the
// file, replay consecutive LSNs, and mark as torn exactly the non-zero
// bytes after the last record, and only in the newest segment. Zeroing the
// torn tail, as Open does, must leave a segment that scans clean to the
// same records.
func FuzzScanSegment(f *testing.F) {
	const first = 100
	var valid []byte
	for i := range 3 {
		valid = appendRecord(valid, first+uint64(i), uint64(headerSize+len(valid)), testPayload(i)[:10+i])
	}
	vouched := bytes.Clone(valid)
	vouched[recHeaderSize+1] ^= 0x01 // damage LSN 100; 101 and 102 vouch for it
	f.Add(valid, true)
	f.Add(valid, false)
	f.Add(append(bytes.Clone(valid), 0xde, 0xad, 0xbe, 0xef), true)
	f.Add(append(bytes.Clone(valid), 0xde, 0xad, 0xbe, 0xef), false)
	f.Add(vouched, true)
	f.Add(valid[:len(valid)-3], true)
	f.Add(appendRecord(nil, first+1, 0, []byte("skips an LSN")), true)
	f.Fuzz(func(t *testing.T, data []byte, last bool) {
		const path = "fuzz.wal"
		b := append(segmentHeader(first, 0), data...)
		var lsns []uint64
		s, err := scanSegment(path, b, first, 0, last, func(lsn uint64, _ []byte) error {
			lsns = append(lsns, lsn)
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(path)) {
				t.Fatalf("error %q is not ErrCorrupt naming %s", err, path)
			}
			return
		}
		for i, lsn := range lsns {
			if lsn != first+uint64(i) {
				t.Fatalf("replayed LSNs %v are not consecutive from %d", lsns, first)
			}
		}
		if s.next != first+uint64(len(lsns)) || s.end < headerSize || s.end%align != 0 || s.end >= int64(len(b))+align {
			t.Fatalf("scan %+v after %d records of a %d-byte segment", s, len(lsns), len(b))
		}
		end := min(s.end, int64(len(b)))
		if s.torn {
			if !last || s.tornEnd <= s.end || s.tornEnd > int64(len(b)) {
				t.Fatalf("torn tail %+v (last=%v) in a %d-byte segment", s, last, len(b))
			}
			end = s.tornEnd
		}
		if !allZero(b[end:]) || (!s.torn && !allZero(b[min(s.end, int64(len(b))):])) {
			t.Fatalf("non-zero bytes after the scanned data: %+v", s)
		}

		clear(b[min(s.end, end):end])
		var again []uint64
		s2, err := scanSegment(path, b, first, 0, last, func(lsn uint64, _ []byte) error {
			again = append(again, lsn)
			return nil
		})
		if err != nil || s2.torn || s2.end != s.end || len(again) != len(lsns) {
			t.Fatalf("after zeroing the torn tail: scan %+v, %d records, %v; before: %+v, %d records", s2, len(again), err, s, len(lsns))
		}
	})
}
