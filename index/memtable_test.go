package index

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/ttl"
)

// modelEntry is what the memtable should hold for an ID.
type modelEntry struct {
	gen       ttl.Gen
	deadline  ttl.Deadline
	value     string
	lsn       uint64
	deleted   bool
	forgotten bool
}

// memHash is the hash the index gives an ID: the first filter location.
func memHash(id []byte) uint64 { return hashID(id) }

// checkMemtable asserts that m holds exactly what model says.
func checkMemtable(t *testing.T, m *memtable, model map[string]modelEntry) {
	t.Helper()
	require.Equal(t, len(model), m.len(), "entries")
	for id, want := range model {
		got, ok := m.get([]byte(id), memHash([]byte(id)))
		require.True(t, ok, "ID %q is missing", id)
		assert.Equal(t, want.lsn, got.lsn, "lsn of %q", id)
		assert.Equal(t, want.deleted, got.deleted, "deleted of %q", id)
		assert.Equal(t, want.forgotten, got.forgotten, "forgotten of %q", id)
		assert.Equal(t, id, string(m.bytes(got.id)), "ID bytes")
		if !want.deleted {
			assert.Equal(t, want.gen, got.gen, "gen of %q", id)
			assert.Equal(t, want.deadline, got.deadline, "deadline of %q", id)
			assert.Equal(t, want.value, string(m.bytes(got.value)), "value of %q", id)
		}
	}
}

func TestMemtableModel(t *testing.T) {
	const (
		ids = 3000 // well past the 512 entries 1024 slots hold
		ops = 20000
	)
	rng := rand.New(rand.NewPCG(1, 2))
	m := newMemtable(0)
	require.Len(t, m.slots, 1024)
	model := map[string]modelEntry{}
	for i := range ops {
		lsn := uint64(i + 1)
		id := fmt.Sprintf("id-%d", rng.IntN(ids))
		if rng.IntN(4) == 0 {
			m.forget([]byte(id), lsn)
			e := model[id]
			e.lsn, e.deleted, e.forgotten = lsn, true, true
			model[id] = e
			continue
		}
		op := Op{ID: []byte(id), Gen: ttl.Gen(rng.IntN(5)), Deadline: ttl.Deadline(rng.Int64())}
		if rng.IntN(2) == 0 {
			op.Value = fmt.Appendf(nil, "value-%d", i)
		}
		m.mark(op, memHash(op.ID), lsn)
		e := model[id]
		e.gen, e.deadline, e.value, e.lsn, e.deleted = op.Gen, op.Deadline, string(op.Value), lsn, false
		model[id] = e
		if i%5000 == 0 {
			checkMemtable(t, m, model)
		}
	}
	checkMemtable(t, m, model)
	assert.Greater(t, len(m.slots), 1024, "the table must have grown")
	assert.LessOrEqual(t, 2*m.len(), len(m.slots), "load factor above 1/2")

	var forgottenThenMarked int
	for _, e := range model {
		if e.forgotten && !e.deleted {
			forgottenThenMarked++
		}
	}
	assert.Positive(t, forgottenThenMarked, "the random ops must cover a re-mark after a forget")

	for i := range 100 {
		id := fmt.Appendf(nil, "absent-%d", i)
		_, ok := m.get(id, memHash(id))
		assert.False(t, ok, "ID %q was never written", id)
	}
}

func TestMemtableRemarkAfterForget(t *testing.T) {
	m := newMemtable(0)
	id := []byte("id")
	h := memHash(id)
	m.mark(Op{ID: id, Gen: 1, Deadline: 10, Value: []byte("old")}, h, 1)
	m.forget(id, 2)
	e, ok := m.get(id, h)
	require.True(t, ok)
	assert.True(t, e.deleted, "a forget leaves a tombstone")
	assert.True(t, e.forgotten)

	m.mark(Op{ID: id, Gen: 2, Deadline: 20}, h, 3)
	e, ok = m.get(id, h)
	require.True(t, ok)
	assert.False(t, e.deleted, "the re-mark is live")
	assert.True(t, e.forgotten, "the flush must still delete the versions in Pebble")
	assert.Equal(t, ttl.Gen(2), e.gen)
	assert.Equal(t, ttl.Deadline(20), e.deadline)
	assert.Empty(t, m.bytes(e.value), "the re-mark has no value")
	assert.Equal(t, uint64(3), e.lsn)
	assert.Equal(t, 1, m.len())
}

func TestMemtableLive(t *testing.T) {
	now := testutil.Epoch
	live := ttl.DeadlineOf(now, time.Minute)
	tests := []struct {
		name    string
		apply   func(m *memtable, id []byte)
		want    Entry
		wantHit bool
	}{
		{
			name: "live with value",
			apply: func(m *memtable, id []byte) {
				m.mark(Op{ID: id, Gen: 3, Deadline: live, Value: []byte("v")}, memHash(id), 7)
			},
			want:    Entry{Gen: 3, Deadline: live, Value: []byte("v"), LSN: 7},
			wantHit: true,
		},
		{
			name: "live without value",
			apply: func(m *memtable, id []byte) {
				m.mark(Op{ID: id, Gen: 3, Deadline: live}, memHash(id), 7)
			},
			want:    Entry{Gen: 3, Deadline: live, LSN: 7},
			wantHit: true,
		},
		{
			name: "expires exactly now",
			apply: func(m *memtable, id []byte) {
				m.mark(Op{ID: id, Gen: 3, Deadline: ttl.DeadlineOf(now, 0)}, memHash(id), 7)
			},
		},
		{
			name: "expired",
			apply: func(m *memtable, id []byte) {
				m.mark(Op{ID: id, Gen: 3, Deadline: ttl.DeadlineOf(now, -time.Second)}, memHash(id), 7)
			},
		},
		{
			name: "tombstone of a live mark",
			apply: func(m *memtable, id []byte) {
				m.mark(Op{ID: id, Gen: 3, Deadline: live, Value: []byte("v")}, memHash(id), 7)
				m.forget(id, 8)
			},
		},
		{
			name: "tombstone alone",
			apply: func(m *memtable, id []byte) {
				m.forget(id, 8)
			},
		},
		{
			name: "re-mark after forget",
			apply: func(m *memtable, id []byte) {
				m.forget(id, 8)
				m.mark(Op{ID: id, Gen: 4, Deadline: live}, memHash(id), 9)
			},
			want:    Entry{Gen: 4, Deadline: live, LSN: 9},
			wantHit: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemtable(0)
			id := []byte("id")
			tt.apply(m, id)
			e, ok := m.get(id, memHash(id))
			require.True(t, ok, "the memtable holds a version of the ID")
			got, hit, err := m.live(e, now)
			require.NoError(t, err)
			assert.Equal(t, tt.wantHit, hit)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestMemtableLiveValueIsCopy(t *testing.T) {
	now := testutil.Epoch
	m := newMemtable(0)
	id := []byte("id")
	m.mark(Op{ID: id, Gen: 1, Deadline: ttl.DeadlineOf(now, time.Minute), Value: []byte("value")}, memHash(id), 1)
	e, _ := m.get(id, memHash(id))
	got, ok, err := m.live(e, now)
	require.NoError(t, err)
	require.True(t, ok)
	got.Value[0] = 'X'
	assert.Equal(t, "value", string(m.bytes(e.value)), "live must not return the arena's bytes")
}

func TestMemtableHashCollisions(t *testing.T) {
	const h = 0xdeadbeef
	tests := []struct {
		name string
		ids  int
	}{
		{"two IDs", 2},
		{"through growth", 1500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemtable(0)
			for i := range tt.ids {
				e := m.upsert(fmt.Appendf(nil, "id-%d", i), h)
				e.lsn = uint64(i + 1)
			}
			require.Equal(t, tt.ids, m.len(), "IDs of the same hash are distinct entries")
			for i := range tt.ids {
				id := fmt.Appendf(nil, "id-%d", i)
				e := m.find(id, h)
				require.NotNil(t, e, "ID %q", id)
				assert.Equal(t, string(id), string(m.bytes(e.id)))
				assert.Equal(t, uint64(i+1), e.lsn, "ID %q found the entry of another ID", id)
				assert.Same(t, e, m.upsert(id, h), "upsert of an existing ID must not add an entry")
			}
			assert.Nil(t, m.find([]byte("other"), h), "an absent ID of the same hash")
			assert.Nil(t, m.find([]byte("id-0"), h+1), "the same ID under another hash")
			assert.Equal(t, tt.ids, m.len())
		})
	}
}

func TestMemtableSameSlotDifferentHash(t *testing.T) {
	m := newMemtable(0)
	h1 := uint64(5)
	h2 := h1 + uint64(len(m.slots)) // the same home slot, another hash
	a, b := []byte("a"), []byte("b")
	m.mark(Op{ID: a, Gen: 1, Deadline: 1}, h1, 1)
	m.mark(Op{ID: b, Gen: 2, Deadline: 2}, h2, 2)
	require.Equal(t, 2, m.len())
	ea, ok := m.get(a, h1)
	require.True(t, ok)
	eb, ok := m.get(b, h2)
	require.True(t, ok)
	assert.Equal(t, ttl.Gen(1), ea.gen)
	assert.Equal(t, ttl.Gen(2), eb.gen)
	_, ok = m.get(b, h1)
	assert.False(t, ok, "b under a's hash")
}

func TestNewMemtableSize(t *testing.T) {
	tests := []struct {
		name  string
		hint  int
		slots int
	}{
		{"zero", 0, 1024},
		{"small", 100, 1024},
		{"exactly half", 512, 1024},
		{"just over half", 513, 2048},
		{"large", 100_000, 262144},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemtable(tt.hint)
			assert.Equal(t, tt.slots, len(m.slots))
			for i := range tt.hint {
				m.upsert(fmt.Appendf(nil, "%d", i), uint64(i))
			}
			assert.Equal(t, tt.slots, len(m.slots), "hint entries must fit without growing")
		})
	}
}

func TestNextMemtableSize(t *testing.T) {
	tests := []struct {
		name    string
		entries int // in the memtable replaced
		marks   int // MemtableMarks
		slots   int
	}{
		{"empty", 0, 1000, 1024},
		{"below marks", 600, 1000, 2048},
		{"past marks", 1500, 1000, 4096},
		{"past twice marks", 2500, 1000, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemtable(0)
			for i := range tt.entries {
				m.upsert(fmt.Appendf(nil, "%d", i), hashID(fmt.Appendf(nil, "%d", i)))
			}
			m.lastLSN = 7
			next := nextMemtable(m, tt.marks)
			assert.Equal(t, tt.slots, len(next.slots))
			assert.Equal(t, uint64(7), next.lastLSN)
			assert.Zero(t, next.len())
		})
	}
}
