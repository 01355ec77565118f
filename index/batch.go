package index

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/seed42300104/dedup/ttl"
)

// ErrCorrupt marks index data that fails a check: a WAL payload that does
// not decode, a filter snapshot or checkpoint with a bad CRC, a Pebble
// block. The wrapping error names the file and offset.
var ErrCorrupt = errors.New("index: corrupt")

// ErrFailed marks an index whose Pebble reported a fatal error, such as a
// MANIFEST it could not write: its state in memory may no longer match the
// disk, so the index refuses every call that reaches Pebble until it is
// reopened.
var ErrFailed = errors.New("index: failed")

// ErrIncompatibleFormat marks a checkpoint or snapshot of an unknown format
// version.
var ErrIncompatibleFormat = errors.New("index: incompatible format version")

// Op kinds, as encoded in a batch. Part of the on-disk format.
const (
	opMark   = 1
	opForget = 2
	opExtend = 3 // a mark that extends a live one: same layout as opMark
	opTime   = 4 // when the ops after it were written
)

// Op is one change to the index.
type Op struct {
	Forget   bool
	Extend   bool // a new deadline for a live mark (sliding TTL), not a new mark
	ID       []byte
	Gen      ttl.Gen      // generation of a mark
	Deadline ttl.Deadline // deadline of a mark
	Value    []byte       // optional value of a mark
	hash     filterHash   // the ID's filter hash, if known
}

// Batch is the ops of one WAL record, applied atomically.
//
// Its encoding, the WAL payload, is an optional write time and a sequence
// of ops:
//
//	time:   | 4 (1B) | Unix nanoseconds (8B) |, first if present
//	mark:   | 1 (1B) | gen (8B) | deadline (8B) | len(id) uvarint | id | len(value) uvarint | value |
//	forget: | 2 (1B) | len(id) uvarint | id |
//	extend: | 3 (1B) | as mark |
//
// Integers are little-endian. Part of the on-disk format.
type Batch struct {
	// Time is when the batch was written, in Unix nanoseconds; zero if
	// unknown. With the deadlines it tells each generation's oldest write
	// and longest TTL, from which Index.Window is estimated.
	Time int64
	Ops  []Op
}

// Mark adds a mark of k.
func (b *Batch) Mark(k Key, g ttl.Gen, d ttl.Deadline, value []byte) {
	b.Ops = append(b.Ops, Op{ID: k.ID, Gen: g, Deadline: d, Value: value, hash: k.hash})
}

// Extend adds a later deadline for the live mark of k, in generation g.
func (b *Batch) Extend(k Key, g ttl.Gen, d ttl.Deadline, value []byte) {
	b.Ops = append(b.Ops, Op{Extend: true, ID: k.ID, Gen: g, Deadline: d, Value: value, hash: k.hash})
}

// Forget adds the removal of every mark of id.
func (b *Batch) Forget(id []byte) { b.Ops = append(b.Ops, Op{Forget: true, ID: id}) }

// Reset empties b, keeping its memory.
func (b *Batch) Reset() { b.Time, b.Ops = 0, b.Ops[:0] }

// AppendEncoded appends the encoding of b to buf.
func (b *Batch) AppendEncoded(buf []byte) []byte {
	if b.Time != 0 {
		buf = append(buf, opTime)
		buf = binary.LittleEndian.AppendUint64(buf, uint64(b.Time))
	}
	for _, op := range b.Ops {
		if op.Forget {
			buf = append(buf, opForget)
			buf = binary.AppendUvarint(buf, uint64(len(op.ID)))
			buf = append(buf, op.ID...)
			continue
		}
		kind := byte(opMark)
		if op.Extend {
			kind = opExtend
		}
		buf = append(buf, kind)
		buf = binary.LittleEndian.AppendUint64(buf, uint64(op.Gen))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(op.Deadline))
		buf = binary.AppendUvarint(buf, uint64(len(op.ID)))
		buf = append(buf, op.ID...)
		buf = binary.AppendUvarint(buf, uint64(len(op.Value)))
		buf = append(buf, op.Value...)
	}
	return buf
}

// DecodeBatch decodes a WAL payload into b, which aliases p.
func DecodeBatch(p []byte, b *Batch) error {
	var err error
	b.Time, b.Ops, err = appendOps(b.Ops[:0], p)
	return err
}

// appendOps decodes a WAL payload, appending its ops to ops, which alias
// p, and returns its write time.
func appendOps(ops []Op, p []byte) (t int64, _ []Op, _ error) {
	off := 0
	if len(p) > 0 && p[0] == opTime {
		if len(p) < 9 {
			return 0, ops, fmt.Errorf("%w: batch offset 1: truncated time", ErrCorrupt)
		}
		if t = int64(binary.LittleEndian.Uint64(p[1:])); t == 0 {
			return 0, ops, fmt.Errorf("%w: batch offset 1: zero time", ErrCorrupt)
		}
		off = 9
	}
	for off < len(p) {
		kind := p[off]
		off++
		var op Op
		switch kind {
		case opForget:
			op.Forget = true
		case opMark, opExtend:
			op.Extend = kind == opExtend
			if len(p)-off < 16 {
				return 0, ops, fmt.Errorf("%w: batch offset %d: truncated mark", ErrCorrupt, off)
			}
			op.Gen = ttl.Gen(binary.LittleEndian.Uint64(p[off:]))
			op.Deadline = ttl.Deadline(binary.LittleEndian.Uint64(p[off+8:]))
			off += 16
		default:
			return 0, ops, fmt.Errorf("%w: batch offset %d: unknown op %d", ErrCorrupt, off-1, kind)
		}
		var err error
		if op.ID, off, err = readBytes(p, off); err != nil {
			return 0, ops, err
		}
		if len(op.ID) == 0 {
			return 0, ops, fmt.Errorf("%w: batch offset %d: empty ID", ErrCorrupt, off)
		}
		if !op.Forget {
			if op.Value, off, err = readBytes(p, off); err != nil {
				return 0, ops, err
			}
		}
		ops = append(ops, op)
	}
	return t, ops, nil
}

// readBytes reads a uvarint-prefixed byte string at off. An over-long
// uvarint is refused, so a batch has one encoding.
func readBytes(p []byte, off int) ([]byte, int, error) {
	n, w := binary.Uvarint(p[off:])
	if w <= 0 || (w > 1 && p[off+w-1] == 0) || n > uint64(len(p)-off-w) {
		return nil, 0, fmt.Errorf("%w: batch offset %d: bad length", ErrCorrupt, off)
	}
	off += w
	if n == 0 {
		return nil, off, nil
	}
	return p[off : off+int(n)], off + int(n), nil
}
