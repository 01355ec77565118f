package redisstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/redistest"
	"github.com/seed42300104/dedup/redisstore"
)

var ctx = context.Background()

// server is one Redis deployment the specifications run against.
type server struct {
	name   string
	client redis.UniversalClient
	opts   redisstore.Options // the options every Store on it starts from
	// primaries counts the primaries that hold keys starting with prefix.
	primaries func(t *testing.T, prefix string) int
}

// servers starts a standalone server, a primary with a replica behind a
// Sentinel, and a Cluster, for the test.
func servers(t *testing.T) []server {
	t.Helper()
	single := redistest.Start(t, redistest.Config{})
	sentinel := redistest.StartSentinel(t, redistest.Config{})
	cluster := redistest.StartCluster(t, redistest.Config{})
	primaries := func(t *testing.T, prefix string) int {
		var n atomic.Int32
		require.NoError(t, cluster.Client(t).ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			keys, err := c.Keys(ctx, prefix+"*").Result()
			if len(keys) > 0 {
				n.Add(1)
			}
			return err
		}))
		return int(n.Load())
	}
	return []server{
		{name: "standalone", client: single.Client(), primaries: func(*testing.T, string) int { return 1 }},
		{name: "sentinel", client: sentinel.Client(t), primaries: func(*testing.T, string) int { return 1 }},
		{name: "sentinel with MinReplicas 1", client: sentinel.Client(t), primaries: func(*testing.T, string) int { return 1 },
			opts: redisstore.Options{MinReplicas: 1}},
		{name: "cluster", client: cluster.Client(t), primaries: primaries},
		{name: "cluster with MinReplicas 1", client: cluster.Client(t), primaries: primaries,
			opts: redisstore.Options{MinReplicas: 1}},
	}
}

// open returns a Store on client in a namespace of the test's own.
func open(t *testing.T, client redis.UniversalClient, opts *redisstore.Options) *redisstore.Store {
	t.Helper()
	var o redisstore.Options
	if opts != nil {
		o = *opts
	}
	return openIn(t, client, o)
}

// open returns a Store on srv in a namespace of the test's own, with
// opts, or with srv's options where opts has none.
func (srv server) open(t *testing.T, opts *redisstore.Options) *redisstore.Store {
	t.Helper()
	o := srv.opts
	if opts != nil {
		min := o.MinReplicas
		o = *opts
		o.MinReplicas = max(o.MinReplicas, min)
	}
	return openIn(t, srv.client, o)
}

func openIn(t *testing.T, client redis.UniversalClient, o redisstore.Options) *redisstore.Store {
	t.Helper()
	if o.Prefix == "" {
		o.Prefix = t.Name() + ":"
	}
	s, err := redisstore.New(ctx, client, &o)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func ids(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", prefix, i)
	}
	return out
}

func begin(t *testing.T, s *redisstore.Store, key, fp string, lease time.Duration) dedup.Claim {
	t.Helper()
	c, err := s.BeginContext(ctx, []byte(key), []byte(fp), lease, time.Hour)
	require.NoError(t, err)
	return c
}

// TestSpecifications runs the semantics of the embedded store against a
// standalone server and a Cluster.
func TestSpecifications(t *testing.T) {
	specs := []struct {
		name string
		run  func(t *testing.T, srv server)
	}{
		{"CheckAndMarkIsNewOnce", checkAndMarkIsNewOnce},
		{"BatchRepeatIsNewOnlyAtFirstOccurrence", batchRepeatIsNewOnlyAtFirstOccurrence},
		{"BatchIsSplitAcrossPrimaries", batchIsSplitAcrossPrimaries},
		{"ExpiryIsTheServersToTheMillisecond", expiryIsTheServersToTheMillisecond},
		{"MarkExpiresAndIsNewAgain", markExpiresAndIsNewAgain},
		{"BadInputIsRefusedAndMarksNothing", badInputIsRefusedAndMarksNothing},
		{"ConcurrentStoresAgreeOnOneWinner", concurrentStoresAgreeOnOneWinner},
		{"PrefixesAreSeparateNamespaces", prefixesAreSeparateNamespaces},
		{"ClosedStoreRefusesEveryCall", closedStoreRefusesEveryCall},
		{"EndedContextSendsNothing", endedContextSendsNothing},
		{"BeginOutcomes", beginOutcomes},
		{"FingerprintsMatchOnlyIfEqual", fingerprintsMatchOnlyIfEqual},
		{"ReleaseLeavesNoMarkAndTokensGrow", releaseLeavesNoMarkAndTokensGrow},
		{"EndedLeaseIsTakenOverAndFenced", endedLeaseIsTakenOverAndFenced},
		{"TakeoverTokenPassesAStoredTokenAheadOfTheClock", takeoverTokenPassesAStoredTokenAheadOfTheClock},
		{"CompleteBoundsFingerprintAndResultTogether", completeBoundsFingerprintAndResultTogether},
		{"RecordBadInput", recordBadInput},
		{"ConcurrentBeginOneWinner", concurrentBeginOneWinner},
		{"EvictionPolicyOfAnyPrimaryIsRefused", evictionPolicyOfAnyPrimaryIsRefused},
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			for _, spec := range specs {
				t.Run(spec.name, func(t *testing.T) { spec.run(t, srv) })
			}
		})
	}
}

func checkAndMarkIsNewOnce(t *testing.T, srv server) {
	s := srv.open(t, nil)
	id := []byte("order-1")
	isNew, err := s.CheckAndMarkContext(ctx, id, time.Hour)
	require.NoError(t, err)
	assert.True(t, isNew)
	isNew, err = s.CheckAndMarkContext(ctx, id, time.Hour)
	require.NoError(t, err)
	assert.False(t, isNew, "a duplicate")
	seen, err := s.SeenContext(ctx, id)
	require.NoError(t, err)
	assert.True(t, seen)

	require.NoError(t, s.ForgetContext(ctx, id))
	seen, err = s.SeenContext(ctx, id)
	require.NoError(t, err)
	assert.False(t, seen, "forgotten")
	isNew, err = s.CheckAndMarkContext(ctx, id, time.Hour)
	require.NoError(t, err)
	assert.True(t, isNew, "new again once forgotten")
}

func batchRepeatIsNewOnlyAtFirstOccurrence(t *testing.T, srv server) {
	s := srv.open(t, nil)
	batch := [][]byte{[]byte("a"), []byte("b"), []byte("a"), []byte("c"), []byte("b")}
	isNew, err := s.CheckAndMarkBatchContext(ctx, batch, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, false, true, false}, isNew)
	isNew, err = s.CheckAndMarkBatchContext(ctx, batch, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []bool{false, false, false, false, false}, isNew)
	isNew, err = s.CheckAndMarkBatchContext(ctx, nil, time.Hour)
	require.NoError(t, err)
	assert.Empty(t, isNew, "an empty batch")
}

func batchIsSplitAcrossPrimaries(t *testing.T, srv server) {
	s := srv.open(t, nil)
	batch := ids("spread", 300)
	isNew, err := s.CheckAndMarkBatchContext(ctx, batch, time.Hour)
	require.NoError(t, err)
	for i, n := range isNew {
		assert.True(t, n, "ID %d", i)
	}
	isNew, err = s.CheckAndMarkBatchContext(ctx, batch, time.Hour)
	require.NoError(t, err)
	for i, n := range isNew {
		assert.False(t, n, "ID %d", i)
	}
	want := 1
	if _, ok := srv.client.(*redis.ClusterClient); ok {
		want = 3
	}
	assert.Equal(t, want, srv.primaries(t, t.Name()+":"), "primaries holding the batch's marks")
}

func expiryIsTheServersToTheMillisecond(t *testing.T, srv server) {
	s := srv.open(t, &redisstore.Options{DefaultTTL: 90 * time.Minute})
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Duration // the PTTL the server reports at most, just after
	}{
		{"whole milliseconds", 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"rounded up, never down", time.Millisecond + time.Nanosecond, 2 * time.Millisecond},
		{"zero is DefaultTTL", 0, 90 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "ttl-" + tt.name
			isNew, err := s.CheckAndMarkContext(ctx, []byte(id), tt.ttl)
			require.NoError(t, err)
			require.True(t, isNew)
			pttl, err := srv.client.PTTL(ctx, t.Name()[:strings.LastIndex(t.Name(), "/")]+":"+id).Result()
			require.NoError(t, err)
			assert.LessOrEqual(t, pttl, tt.want)
			assert.Greater(t, pttl, tt.want-100*time.Millisecond)
		})
	}
}

func markExpiresAndIsNewAgain(t *testing.T, srv server) {
	s := srv.open(t, nil)
	id := []byte("short")
	isNew, err := s.CheckAndMarkContext(ctx, id, 50*time.Millisecond)
	require.NoError(t, err)
	require.True(t, isNew)
	time.Sleep(60 * time.Millisecond)
	seen, err := s.SeenContext(ctx, id)
	require.NoError(t, err)
	assert.False(t, seen, "expired")
	isNew, err = s.CheckAndMarkContext(ctx, id, time.Hour)
	require.NoError(t, err)
	assert.True(t, isNew, "new again once expired")
}

func badInputIsRefusedAndMarksNothing(t *testing.T, srv server) {
	s := srv.open(t, &redisstore.Options{DefaultTTL: time.Minute, MaxTTL: time.Hour, MaxIDSize: 8})
	tests := []struct {
		name string
		ids  [][]byte
		ttl  time.Duration
		want error
	}{
		{"empty ID", [][]byte{{}}, time.Minute, dedup.ErrEmptyID},
		{"ID too long", [][]byte{[]byte("123456789")}, time.Minute, dedup.ErrIDTooLong},
		{"negative TTL", [][]byte{[]byte("x")}, -time.Millisecond, dedup.ErrInvalidTTL},
		{"TTL above MaxTTL", [][]byte{[]byte("x")}, time.Hour + time.Millisecond, dedup.ErrInvalidTTL},
		{"one bad ID in a batch", [][]byte{[]byte("x"), nil, []byte("y")}, time.Minute, dedup.ErrEmptyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isNew, err := s.CheckAndMarkBatchContext(ctx, tt.ids, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, isNew)
			if len(tt.ids) == 1 {
				_, err := s.CheckAndMarkContext(ctx, tt.ids[0], tt.ttl)
				assert.ErrorIs(t, err, tt.want, "single")
			}
		})
	}
	for _, id := range []string{"x", "y"} {
		seen, err := s.SeenContext(ctx, []byte(id))
		require.NoError(t, err)
		assert.False(t, seen, "%s marked by a refused call", id)
	}
	_, err := s.SeenContext(ctx, nil)
	assert.ErrorIs(t, err, dedup.ErrEmptyID)
	assert.ErrorIs(t, s.ForgetContext(ctx, nil), dedup.ErrEmptyID)
}

func concurrentStoresAgreeOnOneWinner(t *testing.T, srv server) {
	const stores, callers, n = 2, 4, 200
	var opened []*redisstore.Store
	for range stores {
		opened = append(opened, srv.open(t, nil))
	}
	wins := make([]atomic.Int32, n)
	var wg sync.WaitGroup
	for c := range stores * callers {
		wg.Add(1)
		go func(s *redisstore.Store, batched bool) {
			defer wg.Done()
			all := ids("race", n)
			if batched {
				isNew, err := s.CheckAndMarkBatchContext(ctx, all, time.Hour)
				if assert.NoError(t, err) {
					for i, ok := range isNew {
						if ok {
							wins[i].Add(1)
						}
					}
				}
				return
			}
			for i, id := range all {
				isNew, err := s.CheckAndMarkContext(ctx, id, time.Hour)
				if assert.NoError(t, err) && isNew {
					wins[i].Add(1)
				}
			}
		}(opened[c%stores], c%2 == 0)
	}
	wg.Wait()
	for i := range wins {
		assert.Equal(t, int32(1), wins[i].Load(), "ID %d was new this many times", i)
	}
}

func prefixesAreSeparateNamespaces(t *testing.T, srv server) {
	a := srv.open(t, &redisstore.Options{Prefix: t.Name() + ":a:"})
	b := srv.open(t, &redisstore.Options{Prefix: t.Name() + ":b:"})
	for _, s := range []*redisstore.Store{a, b} {
		isNew, err := s.CheckAndMarkContext(ctx, []byte("id"), time.Hour)
		require.NoError(t, err)
		assert.True(t, isNew, "new in each namespace")
	}
}

func closedStoreRefusesEveryCall(t *testing.T, srv server) {
	s := srv.open(t, nil)
	require.NoError(t, s.Close())
	id := []byte("k")
	_, err := s.CheckAndMarkContext(ctx, id, 0)
	assert.ErrorIs(t, err, dedup.ErrClosed)
	_, err = s.SeenContext(ctx, id)
	assert.ErrorIs(t, err, dedup.ErrClosed)
	_, err = s.BeginContext(ctx, id, nil, time.Minute, 0)
	assert.ErrorIs(t, err, dedup.ErrClosed)
	assert.ErrorIs(t, s.CompleteContext(ctx, id, 1, nil), dedup.ErrClosed)
	assert.NoError(t, srv.client.Ping(ctx).Err(), "the client stays open")
}

func endedContextSendsNothing(t *testing.T, srv server) {
	s := srv.open(t, nil)
	c := begin(t, s, "held", "", time.Minute)
	ended, cancel := context.WithCancel(ctx)
	cancel()
	id, held := []byte("fresh"), []byte("held")
	_, err := s.CheckAndMarkBatchContext(ended, [][]byte{id}, time.Hour)
	assert.ErrorIs(t, err, context.Canceled)
	_, err = s.BeginContext(ended, id, nil, time.Minute, time.Hour)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, s.CompleteContext(ended, held, c.Token, nil), context.Canceled)
	assert.ErrorIs(t, s.ReleaseContext(ended, held, c.Token), context.Canceled)
	assert.ErrorIs(t, s.ForgetContext(ended, held), context.Canceled)
	_, err = s.SeenContext(ended, id)
	assert.ErrorIs(t, err, context.Canceled)
	_, _, err = s.RecordContext(ended, held)
	assert.ErrorIs(t, err, context.Canceled)

	seen, err := s.SeenContext(ctx, id)
	require.NoError(t, err)
	assert.False(t, seen)
	r, ok, err := s.RecordContext(ctx, held)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateInProgress, r.State)
}

// beginOutcomes walks one key through its life: acquired, in progress
// for everyone else, a mismatch for another request, completed with its
// result, and Complete and Release refused to any other token.
func beginOutcomes(t *testing.T, srv server) {
	s := srv.open(t, nil)
	before := time.Now()
	c := begin(t, s, "pay-1", "req-A", time.Minute)
	after := time.Now()
	require.Equal(t, dedup.Acquired, c.Outcome)
	assert.NotZero(t, c.Token)
	assert.Equal(t, dedup.StateInProgress, c.State)
	assert.Equal(t, time.Hour, c.TTL)
	assert.WithinRange(t, c.LeaseEnds, before.Add(time.Minute-time.Millisecond), after.Add(time.Minute+time.Millisecond))
	assert.WithinRange(t, c.Deadline, before.Add(time.Hour-time.Millisecond), after.Add(time.Hour+time.Millisecond))
	token := c.Token

	again := begin(t, s, "pay-1", "req-A", time.Minute)
	assert.Equal(t, dedup.InProgress, again.Outcome)
	assert.Equal(t, token, again.Token, "InProgress names the holder's token")
	assert.Equal(t, dedup.Mismatch, begin(t, s, "pay-1", "req-B", time.Minute).Outcome)
	assert.Equal(t, dedup.Mismatch, begin(t, s, "pay-1", "", time.Minute).Outcome, "no fingerprint is another fingerprint")

	key := []byte("pay-1")
	assert.ErrorIs(t, s.CompleteContext(ctx, key, token+1, []byte("x")), dedup.ErrStaleToken)
	assert.ErrorIs(t, s.ReleaseContext(ctx, key, token+1), dedup.ErrStaleToken)
	require.NoError(t, s.CompleteContext(ctx, key, token, []byte("receipt-1")))
	require.NoError(t, s.CompleteContext(ctx, key, token, []byte("ignored")), "completing twice is idempotent")

	done := begin(t, s, "pay-1", "req-A", time.Minute)
	assert.Equal(t, dedup.Completed, done.Outcome)
	assert.Equal(t, "receipt-1", string(done.Result))
	assert.Equal(t, token, done.Token)
	assert.True(t, done.LeaseEnds.IsZero())
	mismatch := begin(t, s, "pay-1", "req-B", time.Minute)
	assert.Equal(t, dedup.Mismatch, mismatch.Outcome)
	assert.Nil(t, mismatch.Result, "a mismatch does not see the result")
	assert.ErrorIs(t, s.ReleaseContext(ctx, key, token), dedup.ErrStaleToken, "completed work cannot be released")

	r, ok, err := s.RecordContext(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateCompleted, r.State)
	assert.Equal(t, "req-A", string(r.Fingerprint))
	assert.Equal(t, "receipt-1", string(r.Result))
	assert.Equal(t, token, r.Token)
	assert.WithinRange(t, r.Deadline, after.Add(time.Hour-time.Second), time.Now().Add(time.Hour+time.Millisecond), "kept for its TTL from Complete")

	_, ok, err = s.RecordContext(ctx, []byte("never-begun"))
	require.NoError(t, err)
	assert.False(t, ok)
}

func fingerprintsMatchOnlyIfEqual(t *testing.T, srv server) {
	tests := []struct {
		name      string
		first     string // the fingerprint the key was begun with; "mark" for CheckAndMark
		completed bool
		then      []byte
		want      dedup.Outcome
	}{
		{"none, then one, in progress", "", false, []byte("fp"), dedup.Mismatch},
		{"none, then one, completed", "", true, []byte("fp"), dedup.Mismatch},
		{"one, then none, in progress", "fp", false, nil, dedup.Mismatch},
		{"one, then none, completed", "fp", true, nil, dedup.Mismatch},
		{"none, then empty", "", true, []byte{}, dedup.Completed},
		{"none, then none, in progress", "", false, nil, dedup.InProgress},
		{"the same", "fp", true, []byte("fp"), dedup.Completed},
		{"a plain mark, then one", "mark", true, []byte("fp"), dedup.Completed},
		{"a plain mark, then none", "mark", true, nil, dedup.Completed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := srv.open(t, nil)
			key := []byte("k")
			if tt.first == "mark" {
				_, err := s.CheckAndMarkContext(ctx, key, time.Hour)
				require.NoError(t, err)
				_, ok, err := s.RecordContext(ctx, key)
				require.NoError(t, err)
				assert.False(t, ok, "a plain mark has no record")
			} else {
				c := begin(t, s, "k", tt.first, time.Minute)
				require.Equal(t, dedup.Acquired, c.Outcome)
				if tt.completed {
					require.NoError(t, s.CompleteContext(ctx, key, c.Token, []byte("result")))
				}
			}
			c, err := s.BeginContext(ctx, key, tt.then, time.Minute, time.Hour)
			require.NoError(t, err)
			assert.Equal(t, tt.want, c.Outcome)
			if tt.want == dedup.Mismatch {
				assert.Nil(t, c.Result, "a mismatch does not see the result")
			}
		})
	}
}

func releaseLeavesNoMarkAndTokensGrow(t *testing.T, srv server) {
	s := srv.open(t, nil)
	key := []byte("job")
	var last uint64
	for i := range 20 {
		c := begin(t, s, "job", "", time.Minute)
		require.Equal(t, dedup.Acquired, c.Outcome, "round %d", i)
		assert.Greater(t, c.Token, last, "round %d", i)
		last = c.Token
		require.NoError(t, s.ReleaseContext(ctx, key, c.Token))
		seen, err := s.SeenContext(ctx, key)
		require.NoError(t, err)
		assert.False(t, seen)
		assert.ErrorIs(t, s.ReleaseContext(ctx, key, c.Token), dedup.ErrStaleToken, "released twice")
		assert.ErrorIs(t, s.CompleteContext(ctx, key, c.Token, nil), dedup.ErrStaleToken, "completed after release")
	}
}

func endedLeaseIsTakenOverAndFenced(t *testing.T, srv server) {
	s := srv.open(t, nil)
	key := []byte("k")
	old := begin(t, s, "k", "fp", 50*time.Millisecond)
	assert.Equal(t, dedup.InProgress, begin(t, s, "k", "fp", time.Minute).Outcome, "the lease is live")
	late := begin(t, s, "late", "", 50*time.Millisecond)
	time.Sleep(60 * time.Millisecond)
	require.NoError(t, s.CompleteContext(ctx, []byte("late"), late.Token, []byte("ok")), "no one took it over")

	taken := begin(t, s, "k", "fp", time.Minute)
	require.Equal(t, dedup.Acquired, taken.Outcome)
	assert.Greater(t, taken.Token, old.Token)
	assert.ErrorIs(t, s.CompleteContext(ctx, key, old.Token, []byte("stale")), dedup.ErrStaleToken)
	assert.ErrorIs(t, s.ReleaseContext(ctx, key, old.Token), dedup.ErrStaleToken)
	require.NoError(t, s.CompleteContext(ctx, key, taken.Token, []byte("fresh")))
	assert.Equal(t, "fresh", string(begin(t, s, "k", "fp", time.Minute).Result))
}

// takeoverTokenPassesAStoredTokenAheadOfTheClock checks the stored+1 half
// of the token rule: a record whose token is ahead of the server's clock
// (written by a primary whose clock ran ahead) is still taken over with a
// larger one.
func takeoverTokenPassesAStoredTokenAheadOfTheClock(t *testing.T, srv server) {
	s := srv.open(t, nil)
	c := begin(t, s, "k", "", 20*time.Millisecond)
	ahead := uint64(time.Now().Add(24 * time.Hour).UnixMicro())
	key := t.Name() + ":k"
	v, err := srv.client.Get(ctx, key).Result()
	require.NoError(t, err)
	v = strings.Replace(v, fmt.Sprint(c.Token), fmt.Sprint(ahead), 1)
	require.NoError(t, srv.client.Set(ctx, key, v, time.Hour).Err())
	time.Sleep(30 * time.Millisecond)

	taken := begin(t, s, "k", "", time.Minute)
	require.Equal(t, dedup.Acquired, taken.Outcome)
	assert.Equal(t, ahead+1, taken.Token)
}

func completeBoundsFingerprintAndResultTogether(t *testing.T, srv server) {
	s := srv.open(t, &redisstore.Options{MaxValueSize: 1000})
	limit := s.MaxValueSize()
	require.Equal(t, 1000, limit)
	fp := strings.Repeat("f", 100)
	key := []byte("k")
	c := begin(t, s, "k", fp, time.Minute)
	require.Equal(t, dedup.Acquired, c.Outcome)

	assert.ErrorIs(t, s.CompleteContext(ctx, key, c.Token, make([]byte, limit-len(fp)+1)), dedup.ErrValueTooLarge)
	r, ok, err := s.RecordContext(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateInProgress, r.State, "a refused Complete changes nothing")

	require.NoError(t, s.CompleteContext(ctx, key, c.Token, make([]byte, limit-len(fp))), "exactly the limit")
	done := begin(t, s, "k", fp, time.Minute)
	assert.Equal(t, dedup.Completed, done.Outcome)
	assert.Equal(t, limit-len(fp), len(done.Result), "the result kept whole")
}

func recordBadInput(t *testing.T, srv server) {
	s := srv.open(t, &redisstore.Options{MaxValueSize: 1 << 10})
	c := begin(t, s, "k", "", time.Minute)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"empty key", func() error { _, err := s.BeginContext(ctx, nil, nil, time.Minute, 0); return err }, dedup.ErrEmptyID},
		{"zero lease", func() error { _, err := s.BeginContext(ctx, []byte("x"), nil, 0, 0); return err }, dedup.ErrInvalidTTL},
		{"lease past TTL", func() error {
			_, err := s.BeginContext(ctx, []byte("x"), nil, time.Hour+time.Nanosecond, time.Hour)
			return err
		}, dedup.ErrInvalidTTL},
		{"negative TTL", func() error { _, err := s.BeginContext(ctx, []byte("x"), nil, time.Minute, -time.Hour); return err }, dedup.ErrInvalidTTL},
		{"huge fingerprint", func() error {
			_, err := s.BeginContext(ctx, []byte("x"), make([]byte, 2<<10), time.Minute, 0)
			return err
		}, dedup.ErrValueTooLarge},
		{"huge result", func() error { return s.CompleteContext(ctx, []byte("k"), c.Token, make([]byte, 2<<10)) }, dedup.ErrValueTooLarge},
		{"empty key to Complete", func() error { return s.CompleteContext(ctx, nil, c.Token, nil) }, dedup.ErrEmptyID},
		{"empty key to Release", func() error { return s.ReleaseContext(ctx, nil, c.Token) }, dedup.ErrEmptyID},
		{"empty key to Record", func() error { _, _, err := s.RecordContext(ctx, nil); return err }, dedup.ErrEmptyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.call(), tt.want)
		})
	}
	r, ok, err := s.RecordContext(ctx, []byte("k"))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dedup.StateInProgress, r.State, "a refused Complete changes nothing")
	seen, err := s.SeenContext(ctx, []byte("x"))
	require.NoError(t, err)
	assert.False(t, seen, "a refused Begin marks nothing")
}

func concurrentBeginOneWinner(t *testing.T, srv server) {
	s := srv.open(t, nil)
	other := srv.open(t, nil)
	const callers = 16
	outcomes := make([]dedup.Outcome, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			c, err := st.BeginContext(ctx, []byte("k"), []byte("fp"), time.Minute, time.Hour)
			if assert.NoError(t, err) {
				outcomes[i] = c.Outcome
			}
		}(i)
	}
	wg.Wait()
	acquired := 0
	for _, o := range outcomes {
		if o == dedup.Acquired {
			acquired++
		} else {
			assert.Equal(t, dedup.InProgress, o)
		}
	}
	assert.Equal(t, 1, acquired)
}
