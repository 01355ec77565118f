package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/seed42300104/dedup/internal/fsutil"
)

// segmentName is the file name of the segment whose first LSN is first.
func segmentName(first uint64) string { return fmt.Sprintf("%016x.wal", first) }

// listSegments returns the first LSNs of the segments in dir, in order.
func listSegments(fs vfs.FS, dir string) ([]uint64, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, name := range names {
		hex, ok := strings.CutSuffix(name, ".wal")
		if !ok || len(hex) != 16 {
			continue
		}
		first, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	return firsts, nil
}

// readHeader reads the first headerSize bytes of a file, or all of a
// shorter one.
func readHeader(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, headerSize)
	n, err := io.ReadFull(f, b)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return b[:n], err
}

// checkHeader validates a segment header named for first LSN first.
func checkHeader(path string, b []byte, first uint64) error {
	if len(b) < headerSize {
		return fmt.Errorf("%w: %s: offset 0: short segment header (%d bytes)", ErrCorrupt, path, len(b))
	}
	if !bytes.Equal(b[:len(magic)], []byte(magic)) {
		return fmt.Errorf("%w: %s: offset 0: bad magic %q", ErrCorrupt, path, b[:len(magic)])
	}
	if crc32.Checksum(b[:24], crcTable) != binary.LittleEndian.Uint32(b[24:]) {
		return fmt.Errorf("%w: %s: offset 0: segment header CRC mismatch", ErrCorrupt, path)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatVersion {
		return fmt.Errorf("%w: %s: WAL format version %d, this build reads %d", ErrIncompatibleFormat, path, v, formatVersion)
	}
	if got := binary.LittleEndian.Uint64(b[16:]); got != first {
		return fmt.Errorf("%w: %s: offset 16: header first LSN %d does not match the file name", ErrCorrupt, path, got)
	}
	return nil
}

// scan is the result of reading one segment.
type scan struct {
	next uint64 // LSN after the last valid record
	end  int64  // offset just past the last valid record
	// torn is set when the data after end is a torn tail: non-zero bytes
	// that no durable record vouches for. tornEnd bounds them.
	torn    bool
	tornEnd int64
	// synced is the highest synced-to that a valid record claims: the
	// segment's data was durable up to there.
	synced  int64
	records uint64 // how many records were read in sequence
}

// firstNeeded returns the index of the first segment that may hold a record
// above after: the segments before it are wholly at or below it, and the
// caller removes them.
func firstNeeded(firsts []uint64, after uint64) int {
	i := 0
	for i+1 < len(firsts) && firsts[i+1] <= after+1 {
		i++
	}
	return i
}

// scanInLog scans segment i of the log whose segments start at firsts,
// checking that it holds LSN next, the one after everything before it,
// and that it ends where segment i+1 begins. A gap that a repair cut (st)
// is no damage.
func scanInLog(path string, b []byte, firsts []uint64, i int, next, after uint64, st logState, fn func(uint64, []byte) error) (scan, error) {
	first, last := firsts[i], i == len(firsts)-1
	if first > next && !st.void(next, first-1) {
		return scan{}, fmt.Errorf("%w: %s: LSN gap: expected a segment holding LSN %d", ErrCorrupt, path, next)
	}
	s, err := scanSegment(path, b, first, after, last, fn)
	if err == nil && !last && s.next != firsts[i+1] && (s.next > firsts[i+1] || !st.void(s.next, firsts[i+1]-1)) {
		err = fmt.Errorf("%w: %s: offset %d: segment ends at LSN %d but the next starts at %d",
			ErrCorrupt, path, s.end, s.next-1, firsts[i+1])
	}
	return s, err
}

// scanSegment reads the records of one segment, calling fn for each with
// an LSN above after, and decides what follows the last valid record. last
// says whether this is the newest segment, the only one that may end in a
// torn write.
func scanSegment(path string, b []byte, first, after uint64, last bool, fn func(lsn uint64, payload []byte) error) (scan, error) {
	if err := checkHeader(path, b, first); err != nil {
		return scan{}, err
	}
	s := scan{next: first, end: headerSize}
	for s.end < int64(len(b)) {
		r, ok := decodeRecord(b[s.end:])
		if !ok || r.lsn != s.next {
			break
		}
		if r.lsn > after {
			if err := fn(r.lsn, r.payload); err != nil {
				return scan{}, err
			}
		}
		s.synced = max(s.synced, int64(r.syncedTo))
		s.records++
		s.next++
		s.end += int64(r.size)
	}
	// Past the last valid record: zeros end the data cleanly; anything else
	// is a torn tail or damage, told apart by the records that follow.
	lastNonZero := int64(-1)
	for off := s.end; off < int64(len(b)); off += align {
		word := b[off:min(off+align, int64(len(b)))]
		if !allZero(word) {
			lastNonZero = off
		}
		if off+recHeaderSize > int64(len(b)) {
			continue
		}
		if lsn := binary.LittleEndian.Uint64(b[off+8:]); lsn < s.next || lsn-s.next > 1<<32 {
			continue // cheap reject before the CRC
		}
		r, ok := decodeRecord(b[off:])
		if !ok {
			continue
		}
		if !last || r.syncedTo > uint64(s.end) {
			return scan{}, fmt.Errorf("%w: %s: offset %d: bad record before LSN %d (record at offset %d is intact)",
				ErrCorrupt, path, s.end, s.next, off)
		}
	}
	if lastNonZero >= 0 {
		if !last {
			return scan{}, fmt.Errorf("%w: %s: offset %d: bad record at LSN %d", ErrCorrupt, path, s.end, s.next)
		}
		s.torn, s.tornEnd = true, min(lastNonZero+align, int64(len(b)))
	}
	return s, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// HasRecords reports whether any segment in dir holds a record, judging by
// the bytes where its first record would start. It tells a log that was
// only created from one that was written to.
func HasRecords(fs vfs.FS, dir string) (bool, error) {
	firsts, err := listSegments(fs, dir)
	if err != nil {
		return false, err
	}
	for _, first := range firsts {
		f, err := fs.Open(fs.PathJoin(dir, segmentName(first)))
		if err != nil {
			return false, err
		}
		b := make([]byte, recHeaderSize)
		n, err := f.ReadAt(b, headerSize)
		f.Close()
		if err != nil && err != io.EOF {
			return false, err
		}
		if !allZero(b[:n]) {
			return true, nil
		}
	}
	return false, nil
}

// Verify reads the log in dir as Open would, replaying from after: the
// CRC of every record in the segments it reads and their LSN sequence,
// and that no segment is missing or cut short. It returns how many records
// it read. A torn tail of the newest segment is not damage: the next
// writable Open truncates it. It writes nothing.
func Verify(fs vfs.FS, dir string, after uint64) (records uint64, err error) {
	r, err := readLog(fs, dir, after, func(uint64, []byte) error { return nil })
	return r.records, err
}

// logRead is what reading a log as Open does found.
type logRead struct {
	firsts []uint64 // first LSNs of the segments kept, oldest first
	state  logState
	stated bool   // the log has a STATE file
	drop   string // an all-zero newest segment that an earlier build's crash left
	next   uint64 // the LSN after the last record read, and after any cut
	// records counts the records read, at or below after too.
	records uint64
	tail    scan // of the newest segment
	// tailCap is the size the newest segment was preallocated to, 0 if
	// unknown.
	tailCap int64
	// Where the damage is, when there is: bad indexes firsts (len(firsts)
	// for a missing newest segment; -1 if the failure is no damage),
	// badData holds the damaged segment, badNext the LSN it should hold
	// next.
	bad     int
	badData []byte
	badNext uint64
	// badState says that the damage is to the STATE file.
	badState bool
}

// readLog reads the log in dir as Open does: fn sees every record with an
// LSN above after, in order, and the first damage ends the reading. Open,
// Verify and Repair all read through it, so they agree on what damage is.
func readLog(fs vfs.FS, dir string, after uint64, fn func(uint64, []byte) error) (*logRead, error) {
	return readLogState(fs, dir, after, false, fn)
}

// readLogState is readLog, or with noState, readLog as if the log had no
// STATE file.
func readLogState(fs vfs.FS, dir string, after uint64, noState bool, fn func(uint64, []byte) error) (*logRead, error) {
	r := &logRead{bad: -1}
	firsts, err := listSegments(fs, dir)
	if err != nil {
		return r, err
	}
	r.firsts = firsts
	if !noState {
		if r.state, r.stated, err = readState(fs, dir); err != nil {
			if errors.Is(err, ErrCorrupt) {
				r.bad, r.badState = len(firsts), true
			}
			return r, err
		}
	}
	if n := len(firsts); n > 0 && !r.stated {
		// An earlier build named a segment before writing its header: a
		// crash then left a newest segment of zeros, which no record
		// reached. Nothing else with a bad header is a crash state.
		path := fs.PathJoin(dir, segmentName(firsts[n-1]))
		h, err := readHeader(fs, path)
		if err != nil {
			return r, err
		}
		if allZero(h) {
			b, err := fsutil.ReadFile(fs, path)
			if err != nil {
				return r, err
			}
			if allZero(b) {
				r.drop, firsts = path, firsts[:n-1]
			}
		}
	}
	r.firsts = firsts
	r.next = after + 1
	for i := firstNeeded(firsts, after); i < len(firsts); i++ {
		last := i == len(firsts)-1
		path := fs.PathJoin(dir, segmentName(firsts[i]))
		b, err := fsutil.ReadFile(fs, path)
		if err != nil {
			return r, err
		}
		s, err := scanInLog(path, b, firsts, i, r.next, after, r.state, fn)
		if err == nil && last {
			err = checkSize(path, b, s)
		}
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				r.bad, r.badData, r.badNext = i, b, r.next
			}
			return r, err
		}
		r.next = max(r.next, s.next)
		r.records += s.records
		if last {
			r.tail, r.tailCap = s, preallocated(b)
		}
	}
	if n := len(firsts); r.stated && r.state.newest != 0 && (n == 0 || firsts[n-1] < r.state.newest) {
		r.bad, r.badNext = n, r.next
		return r, fmt.Errorf("%w: %s: segment %s is missing: it was the newest, holding LSN %d on",
			ErrCorrupt, dir, segmentName(r.state.newest), r.state.newest)
	}
	r.next = max(r.next, r.state.floor()+1)
	return r, nil
}

// checkSize checks that the newest segment b is as long as its writer
// made it before any of its records could be acknowledged (see the
// header's size field): a shorter one was cut short after the fact, and
// what was cut off cannot be known.
func checkSize(path string, b []byte, s scan) error {
	size := preallocated(b)
	if size == 0 {
		return nil // written by a build that did not record the size
	}
	need := min(max(s.synced, headerSize)+zeroAhead/2, size)
	if int64(len(b)) < need {
		return fmt.Errorf("%w: %s: offset %d: segment cut short: %d bytes, but its records were synced to offset %d, so it held at least %d (preallocated to %d); the records after LSN %d may be lost",
			ErrCorrupt, path, len(b), len(b), max(s.synced, headerSize), need, size, s.next-1)
	}
	return nil
}
