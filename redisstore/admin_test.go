package redisstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/redisstore"
)

// scanYieldsEveryKeyOfTheNamespaceOnce checks Scan on a namespace whose
// prefix holds SCAN's pattern characters, next to one that the pattern
// would match unescaped.
func scanYieldsEveryKeyOfTheNamespaceOnce(t *testing.T, srv server) {
	s := srv.open(t, &redisstore.Options{Prefix: t.Name() + ":glob*?[a]:"})
	sibling := srv.open(t, &redisstore.Options{Prefix: t.Name() + ":globXYa:"})
	marked := ids("scan", 300)
	_, err := s.CheckAndMarkBatchContext(ctx, marked, time.Hour)
	require.NoError(t, err)
	_, err = sibling.CheckAndMarkBatchContext(ctx, ids("scan", 10), time.Hour)
	require.NoError(t, err)
	begin(t, s, "rec", "fp", time.Minute)

	got := map[string]redisstore.Entry{}
	require.NoError(t, s.Scan(ctx, nil, func(e redisstore.Entry) error {
		assert.NotContains(t, got, string(e.ID), "yielded once")
		got[string(e.ID)] = e
		return nil
	}))
	assert.Len(t, got, 301, "every mark and the record, and nothing of the sibling namespace")
	for _, id := range marked {
		assert.Equal(t, redisstore.KindMark, got[string(id)].Kind, "%s", id)
	}
	require.NotNil(t, got["rec"].Record)
	assert.Equal(t, redisstore.KindRecord, got["rec"].Kind)
	assert.Equal(t, dedup.StateInProgress, got["rec"].Record.State)

	var some []string
	require.NoError(t, s.Scan(ctx, []byte("scan-1"), func(e redisstore.Entry) error {
		some = append(some, string(e.ID))
		return nil
	}))
	assert.Len(t, some, 111, "scan-1 and scan-10 to scan-199")
}

// explainTellsAMarkARecordAndAForeignKey checks what Explain says of each
// kind of key, and of none.
func explainTellsAMarkARecordAndAForeignKey(t *testing.T, srv server) {
	prefix := t.Name() + ":"
	s := srv.open(t, &redisstore.Options{Prefix: prefix})
	_, err := s.CheckAndMarkContext(ctx, []byte("m"), time.Hour)
	require.NoError(t, err)
	claim := begin(t, s, "r", "fp", time.Minute)
	require.NoError(t, srv.client.HSet(ctx, prefix+"h", "f", "v").Err())

	before := time.Now()
	m, ok, err := s.Explain(ctx, []byte("m"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, redisstore.KindMark, m.Kind)
	assert.Nil(t, m.Record)
	assert.InDelta(t, time.Hour.Seconds(), m.TTL.Seconds(), 60)
	assert.WithinDuration(t, before.Add(time.Hour), m.Deadline, time.Minute)

	r, ok, err := s.Explain(ctx, []byte("r"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, redisstore.KindRecord, r.Kind)
	require.NotNil(t, r.Record)
	assert.Equal(t, claim.Record.Token, r.Record.Token)
	assert.Equal(t, []byte("fp"), r.Record.Fingerprint)

	h, ok, err := s.Explain(ctx, []byte("h"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "hash", h.Kind)
	assert.Negative(t, h.TTL, "no expiry")
	assert.Zero(t, h.Deadline)

	_, ok, err = s.Explain(ctx, []byte("none"))
	require.NoError(t, err)
	assert.False(t, ok)
	_, _, err = s.Explain(ctx, nil)
	assert.ErrorIs(t, err, dedup.ErrEmptyID)
}

// statsCountsTheNamespaceOnEveryPrimary checks Stats's key counts and the
// configuration it reads of each primary.
func statsCountsTheNamespaceOnEveryPrimary(t *testing.T, srv server) {
	prefix := t.Name() + ":"
	s := srv.open(t, &redisstore.Options{Prefix: prefix})
	_, err := s.CheckAndMarkBatchContext(ctx, ids("stats", 300), time.Hour)
	require.NoError(t, err)
	st, err := s.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, prefix, st.Prefix)
	assert.EqualValues(t, 300, st.Keys)
	var sum int64
	for _, p := range st.Primaries {
		sum += p.Keys
		assert.NotEmpty(t, p.Addr)
		assert.Equal(t, "noeviction", p.MaxMemoryPolicy, p.Addr)
		assert.Positive(t, p.UsedMemory, p.Addr)
		assert.GreaterOrEqual(t, p.DBKeys, p.Keys, p.Addr)
	}
	assert.EqualValues(t, 300, sum)
	assert.Len(t, st.Primaries, max(srv.primaries(t, prefix), 1), "every primary, one per primary holding keys")
}
