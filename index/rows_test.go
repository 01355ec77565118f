package index

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// awkwardIDs returns n distinct IDs that make a sort by the first 16
// bytes hard: few byte values, so buckets are deep and ties frequent;
// lengths around 16, so padding and long IDs decide; shared prefixes, so
// whole buckets agree on every radix digit.
func awkwardIDs(rng *rand.Rand, n int) [][]byte {
	seen := map[string]bool{}
	var ids [][]byte
	add := func(id []byte) {
		if !seen[string(id)] {
			seen[string(id)] = true
			ids = append(ids, id)
		}
	}
	for _, id := range []string{"a", "a\x00", "a\x00\x00", strings.Repeat("\x00", 16), strings.Repeat("\x00", 17), strings.Repeat("\xff", 16), strings.Repeat("\xff", 17)} {
		add([]byte(id))
	}
	alphabet := []byte{0x00, 0x01, 0x7f, 0xff}
	for len(ids) < n {
		id := make([]byte, 1+rng.IntN(24))
		for i := range id {
			id[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if rng.IntN(3) == 0 { // a long shared prefix
			id = append(bytes.Repeat([]byte{0x01}, 14), id...)
		}
		add(id)
	}
	return ids
}

func TestSortRows(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  func(rng *rand.Rand) [][]byte
	}{
		{"empty", func(*rand.Rand) [][]byte { return nil }},
		{"one", func(*rand.Rand) [][]byte { return [][]byte{[]byte("x")} }},
		{"below the radix cutoff", func(rng *rand.Rand) [][]byte { return awkwardIDs(rng, radixSortCutoff/2) }},
		{"awkward", func(rng *rand.Rand) [][]byte { return awkwardIDs(rng, 20000) }},
		{"random 16 bytes", func(rng *rand.Rand) [][]byte {
			ids := make([][]byte, 20000)
			for i := range ids {
				ids[i] = fmt.Appendf(nil, "%016x", rng.Uint64())[:16]
			}
			return ids
		}},
		{"one shared 8-byte prefix", func(rng *rand.Rand) [][]byte {
			ids := make([][]byte, 20000)
			for i := range ids {
				ids[i] = fmt.Appendf(nil, "order-%010d", i)
			}
			rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			return ids
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids := tc.ids(rand.New(rand.NewPCG(3, 4)))
			m := newMemtable(len(ids))
			for i, id := range ids {
				m.mark(Op{ID: id}, hashID(id), uint64(i+1))
			}
			rows := make([]row, m.len())
			for i := range rows {
				rows[i] = m.row(i, false)
			}
			m.sortRows(rows)
			got := make([][]byte, len(rows))
			for i, r := range rows {
				got[i] = m.appendRowID(nil, r)
			}
			want := slices.Clone(ids)
			slices.SortFunc(want, bytes.Compare)
			require.Equal(t, len(want), len(got))
			for i := range want {
				require.Equal(t, want[i], got[i], "ID %d in key order", i)
			}
		})
	}
}
