package index

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/ttl"
)

// normalized returns the ops of b with what the encoding does not carry
// cleared: the filter hash, and the difference between an empty and a nil
// value.
func normalized(b *Batch) []Op {
	ops := make([]Op, len(b.Ops))
	for i, op := range b.Ops {
		op.hash = filterHash{}
		if len(op.Value) == 0 {
			op.Value = nil
		}
		ops[i] = op
	}
	return ops
}

func TestBatchRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 4096)
	bigValue := bytes.Repeat([]byte{0xcd}, 64<<10)
	tests := []struct {
		name  string
		build func(b *Batch)
	}{
		{"empty", func(*Batch) {}},
		{"mark without value", func(b *Batch) {
			b.Mark(Key{ID: []byte("id-1")}, 7, 1_000, nil)
		}},
		{"mark with empty value", func(b *Batch) {
			b.Mark(Key{ID: []byte("id-1")}, 7, 1_000, []byte{})
		}},
		{"mark with value", func(b *Batch) {
			b.Mark(Key{ID: []byte("id-1")}, ttl.Gen(1<<56|42), -5, []byte("payload"))
		}},
		{"mark with extreme gen and deadline", func(b *Batch) {
			b.Mark(Key{ID: []byte{0}}, ^ttl.Gen(0), ttl.Deadline(-1<<63), []byte{0})
		}},
		{"forget", func(b *Batch) {
			b.Forget([]byte("gone"))
		}},
		{"1-byte ID", func(b *Batch) {
			b.Mark(Key{ID: []byte{'x'}}, 1, 2, nil)
			b.Forget([]byte{'y'})
		}},
		{"4096-byte ID", func(b *Batch) {
			b.Mark(Key{ID: big}, 1, 2, []byte("v"))
			b.Forget(big)
		}},
		{"64KiB value", func(b *Batch) {
			b.Mark(Key{ID: []byte("k")}, 3, 4, bigValue)
		}},
		{"write time", func(b *Batch) {
			b.Time = 1_700_000_000_123_456_789
			b.Mark(Key{ID: []byte("id-1")}, 7, 1_000, nil)
		}},
		{"write time alone", func(b *Batch) { b.Time = -1 }},
		{"mixed", func(b *Batch) {
			b.Mark(Key{ID: []byte("a")}, 1, 10, nil)
			b.Forget([]byte("a"))
			b.Mark(Key{ID: []byte("a")}, 2, 20, []byte("again"))
			b.Mark(Key{ID: big}, 3, 30, bigValue)
			b.Forget([]byte("b"))
			b.Forget([]byte("c"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in Batch
			tt.build(&in)
			enc := in.AppendEncoded(nil)

			var out Batch
			require.NoError(t, DecodeBatch(enc, &out))
			assert.Equal(t, normalized(&in), normalized(&out))
			assert.Equal(t, in.Time, out.Time)
			assert.Equal(t, enc, out.AppendEncoded(nil), "re-encoding the decoded batch")

			prefix := []byte("prefix")
			assert.Equal(t, append(bytes.Clone(prefix), enc...), in.AppendEncoded(bytes.Clone(prefix)),
				"AppendEncoded must append after existing bytes")
		})
	}
}

func TestDecodeBatchReusesBatch(t *testing.T) {
	var first, second Batch
	first.Mark(Key{ID: []byte("a")}, 1, 2, nil)
	first.Forget([]byte("b"))
	second.Forget([]byte("c"))

	var b Batch
	require.NoError(t, DecodeBatch(first.AppendEncoded(nil), &b))
	require.Len(t, b.Ops, 2)
	require.NoError(t, DecodeBatch(second.AppendEncoded(nil), &b))
	assert.Equal(t, normalized(&second), normalized(&b), "DecodeBatch must reset the batch first")
}

func TestDecodeBatchCorrupt(t *testing.T) {
	var valid Batch
	valid.Mark(Key{ID: []byte("id")}, 1, 2, []byte("val"))
	mark := valid.AppendEncoded(nil)

	markHeader := func(rest ...byte) []byte {
		p := append([]byte{opMark}, make([]byte, 16)...)
		return append(p, rest...)
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"truncated mark header", mark[:10]},
		{"mark with no header", []byte{opMark}},
		{"forget with no length", []byte{opForget}},
		{"bad uvarint length", []byte{opForget, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"unterminated uvarint", []byte{opForget, 0x80}},
		{"ID length past end", []byte{opForget, 5, 'a', 'b'}},
		{"value length past end", markHeader(1, 'a', 3, 'v')},
		{"value length missing", markHeader(1, 'a')},
		{"huge length", binary.AppendUvarint([]byte{opForget}, 1<<63)},
		{"unknown op", []byte{5, 1, 'a'}},
		{"truncated time", []byte{opTime, 1, 2, 3}},
		{"zero time", append([]byte{opTime}, make([]byte, 8)...)},
		{"time after an op", append(bytes.Clone(mark), opTime, 1, 0, 0, 0, 0, 0, 0, 0)},
		{"truncated extend", []byte{opExtend, 1, 'a'}},
		{"zero op", []byte{0}},
		{"unknown op after a valid one", append(bytes.Clone(mark), 0x7f)},
		{"empty forget ID", []byte{opForget, 0}},
		{"empty mark ID", markHeader(0, 0)},
		{"truncated second op", append(bytes.Clone(mark), mark[:len(mark)-1]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Batch
			err := DecodeBatch(tt.payload, &b)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), "batch offset")
		})
	}
}

// FuzzDecodeBatch checks that DecodeBatch never panics, and that what it
// accepts is exactly what AppendEncoded writes.
func FuzzDecodeBatch(f *testing.F) {
	var b Batch
	b.Mark(Key{ID: []byte("id")}, 1, 2, []byte("value"))
	b.Forget([]byte("id"))
	b.Mark(Key{ID: []byte("id")}, ttl.Gen(3<<56|9), 99, nil)
	f.Add(b.AppendEncoded(nil))
	f.Add([]byte{})
	f.Add([]byte{opForget, 1, 'x'})
	f.Add([]byte{opMark})
	f.Fuzz(func(t *testing.T, p []byte) {
		var b Batch
		if err := DecodeBatch(p, &b); err != nil {
			if !assert.ErrorIs(t, err, ErrCorrupt) {
				t.FailNow()
			}
			return
		}
		for i, op := range b.Ops {
			if len(op.ID) == 0 {
				t.Fatalf("op %d decoded with an empty ID", i)
			}
		}
		if enc := b.AppendEncoded(nil); !bytes.Equal(enc, p) {
			t.Fatalf("re-encoding differs:\n got  %x\n want %x", enc, p)
		}
	})
}
