package dedup_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/ttl"
)

// scanAll returns every live mark of s by ID, with the ID copied.
func scanAll(t *testing.T, s *dedup.Store) map[string]dedup.Mark {
	t.Helper()
	all := map[string]dedup.Mark{}
	require.NoError(t, s.Scan(nil, false, func(m dedup.Mark) bool {
		m.ID = append([]byte(nil), m.ID...)
		all[string(m.ID)] = m
		return true
	}))
	return all
}

// TestRestoreMovesMarksWhole restores what Scan yields of one store into
// another: every mark keeps its deadline to the nanosecond and its record
// whole, and the records answer Begin and Complete as they did.
func TestRestoreMovesMarksWhole(t *testing.T) {
	src, clock, opts := openRecords(t)
	_, err := src.CheckAndMark([]byte("plain"), 90*time.Minute+123*time.Nanosecond)
	require.NoError(t, err)
	running := begin(t, src, "running", "fp-1", time.Minute)
	done := begin(t, src, "done", "fp-2", time.Minute)
	require.NoError(t, src.Complete([]byte("done"), done.Token, []byte("result")))
	clock.Advance(7 * time.Millisecond)

	var marks []dedup.Mark
	for _, m := range scanAll(t, src) {
		marks = append(marks, m)
	}
	dst := storetest.OpenAt(t, "other", opts)
	restored, err := dst.Restore(marks)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, true}, restored)
	assert.Equal(t, scanAll(t, src), scanAll(t, dst), "the same marks, deadlines and records")

	c := begin(t, dst, "done", "fp-2", time.Minute)
	assert.Equal(t, dedup.Completed, c.Outcome)
	assert.Equal(t, []byte("result"), c.Result)
	assert.Equal(t, dedup.InProgress, begin(t, dst, "running", "fp-1", time.Minute).Outcome)
	require.NoError(t, dst.Complete([]byte("running"), running.Token, []byte("late")),
		"the owner's token holds the restored lease")
	seen, err := dst.Seen([]byte("plain"))
	require.NoError(t, err)
	assert.True(t, seen)
}

// TestRestoreSkips checks the marks Restore leaves alone: an ID with a
// live mark here (kept as it is), a repeat, and a deadline passed.
func TestRestoreSkips(t *testing.T) {
	s, clock, _ := openRecords(t)
	now := clock.Now()
	_, err := s.CheckAndMark([]byte("here"), time.Hour)
	require.NoError(t, err)
	restored, err := s.Restore([]dedup.Mark{
		{ID: []byte("here"), Deadline: now.Add(2 * time.Hour)},
		{ID: []byte("new"), Deadline: now.Add(time.Hour)},
		{ID: []byte("new"), Deadline: now.Add(3 * time.Hour)},
		{ID: []byte("past"), Deadline: now},
	})
	require.NoError(t, err)
	assert.Equal(t, []bool{false, true, false, false}, restored)
	all := scanAll(t, s)
	assert.True(t, all["here"].Deadline.Equal(now.Add(time.Hour)), "the live mark is kept")
	assert.True(t, all["new"].Deadline.Equal(now.Add(time.Hour)), "the first occurrence wins")
	assert.NotContains(t, all, "past")
}

// TestRestoreRejectsInvalidMarks checks that one invalid mark refuses the
// whole call, naming it, and writes nothing.
func TestRestoreRejectsInvalidMarks(t *testing.T) {
	s, clock, _ := openRecords(t)
	later := clock.Now().Add(time.Hour)
	for _, tc := range []struct {
		name string
		bad  dedup.Mark
		want error
	}{
		{"empty ID", dedup.Mark{Deadline: later}, dedup.ErrEmptyID},
		{"deadline past MaxTTL", dedup.Mark{ID: []byte("x"), Deadline: clock.Now().Add(dedup.DefaultMaxTTL + time.Second)}, dedup.ErrInvalidTTL},
		{"record in no state", dedup.Mark{ID: []byte("x"), Deadline: later, Record: &dedup.Record{State: 7, TTL: time.Hour}}, dedup.ErrInvalidRecord},
		{"record without TTL", dedup.Mark{ID: []byte("x"), Deadline: later, Record: &dedup.Record{State: dedup.StateCompleted}}, dedup.ErrInvalidTTL},
		{"record too large", dedup.Mark{ID: []byte("x"), Deadline: later, Record: &dedup.Record{State: dedup.StateCompleted, TTL: time.Hour, Result: make([]byte, 2<<20)}}, dedup.ErrValueTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Restore([]dedup.Mark{{ID: []byte("good"), Deadline: later}, tc.bad})
			require.ErrorIs(t, err, tc.want)
			assert.ErrorContains(t, err, "mark 1: ")
			seen, err := s.Seen([]byte("good"))
			require.NoError(t, err)
			assert.False(t, seen, "nothing is written")
		})
	}
}

// TestRestoredMarksSurviveReopen checks that restored marks are in the
// WAL: a reopen replays them with their deadlines and records.
func TestRestoredMarksSurviveReopen(t *testing.T) {
	clock := ttl.NewFake(testutil.Epoch)
	opts := &dedup.Options{FS: vfs.NewMem(), Clock: clock}
	s, err := dedup.Open("store", opts)
	require.NoError(t, err)
	marks := []dedup.Mark{
		{ID: []byte("m"), Deadline: testutil.Epoch.Add(time.Hour + time.Nanosecond)},
		{ID: []byte("r"), Deadline: testutil.Epoch.Add(2 * time.Hour), Record: &dedup.Record{
			State: dedup.StateCompleted, Token: 42, TTL: 2 * time.Hour, Fingerprint: []byte("fp"), Result: []byte("res"),
		}},
	}
	_, err = s.Restore(marks)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s = storetest.OpenAt(t, "store", opts)
	all := scanAll(t, s)
	assert.True(t, all["m"].Deadline.Equal(marks[0].Deadline))
	r := all["r"].Record
	require.NotNil(t, r)
	assert.Equal(t, uint64(42), r.Token)
	assert.Equal(t, []byte("res"), r.Result)
	assert.True(t, all["r"].Deadline.Equal(marks[1].Deadline))
}

// TestMustExistRefusesToCreate checks that Open with MustExist fails with
// ErrNotStore, creating nothing, where there is no store, and opens one
// that exists.
func TestMustExistRefusesToCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, err := dedup.Open(dir, &dedup.Options{MustExist: true})
	require.ErrorIs(t, err, dedup.ErrNotStore)
	assert.NoDirExists(t, dir)

	s, dir := storetest.Open(t, nil)
	require.NoError(t, s.Close())
	s, err = dedup.Open(dir, &dedup.Options{MustExist: true})
	require.NoError(t, err)
	assert.NoError(t, s.Close())
}
