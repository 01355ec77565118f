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
	"github.com/seed42300104/dedup/internal/backendtest"
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

// TestSpecifications runs the contract every dedup.Backend keeps, and
// this store's own specifications, against each kind of deployment.
func TestSpecifications(t *testing.T) {
	specs := []struct {
		name string
		run  func(t *testing.T, srv server)
	}{
		{"BatchIsSplitAcrossPrimaries", batchIsSplitAcrossPrimaries},
		{"ExpiryIsTheServersToTheMillisecond", expiryIsTheServersToTheMillisecond},
		{"BadInputIsRefusedAndMarksNothing", badInputIsRefusedAndMarksNothing},
		{"ConcurrentStoresAgreeOnOneWinner", concurrentStoresAgreeOnOneWinner},
		{"PrefixesAreSeparateNamespaces", prefixesAreSeparateNamespaces},
		{"CloseLeavesTheClientOpen", closeLeavesTheClientOpen},
		{"ReleaseLeavesNoMarkAndTokensGrow", releaseLeavesNoMarkAndTokensGrow},
		{"TakeoverTokenPassesAStoredTokenAheadOfTheClock", takeoverTokenPassesAStoredTokenAheadOfTheClock},
		{"CompleteBoundsFingerprintAndResultTogether", completeBoundsFingerprintAndResultTogether},
		{"ConcurrentBeginOneWinner", concurrentBeginOneWinner},
		{"EvictionPolicyOfAnyPrimaryIsRefused", evictionPolicyOfAnyPrimaryIsRefused},
		{"MarkValueIsAnIntegerToRedis", markValueIsAnIntegerToRedis},
		{"ScanYieldsEveryKeyOfTheNamespaceOnce", scanYieldsEveryKeyOfTheNamespaceOnce},
		{"ExplainTellsAMarkARecordAndAForeignKey", explainTellsAMarkARecordAndAForeignKey},
		{"StatsCountsTheNamespaceOnEveryPrimary", statsCountsTheNamespaceOnEveryPrimary},
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			t.Run("Contract", func(t *testing.T) {
				backendtest.Run(t, func(t *testing.T) dedup.Backend { return srv.open(t, nil) })
			})
			for _, spec := range specs {
				t.Run(spec.name, func(t *testing.T) { spec.run(t, srv) })
			}
		})
	}
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

func closeLeavesTheClientOpen(t *testing.T, srv server) {
	s := srv.open(t, nil)
	require.NoError(t, s.Close())
	_, err := s.CheckAndMarkContext(ctx, []byte("k"), 0)
	assert.ErrorIs(t, err, dedup.ErrClosed)
	assert.NoError(t, srv.client.Ping(ctx).Err(), "the client stays open")
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

// commands is a go-redis hook that records the arguments of every command
// sent, pipelined or not, but those go-redis sends on a new connection.
type commands struct {
	mu   sync.Mutex
	sent [][]string
}

func (c *commands) record(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range cmds {
		if cmd.Name() == "hello" {
			continue
		}
		args := make([]string, len(cmd.Args()))
		for i, a := range cmd.Args() {
			args[i] = fmt.Sprint(a)
		}
		c.sent = append(c.sent, args)
	}
}

func (c *commands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.record(cmd)
		return next(ctx, cmd)
	}
}

func (c *commands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.record(cmds...)
		return next(ctx, cmds)
	}
}

// TestMarkSentOnceIsOneSetNXPerID checks that a mark call that go-redis
// did not resend costs what a raw check-and-mark does, new IDs and
// duplicates alike: one SET key nonce PX ttl NX per distinct ID, without
// GET, whose reply alone answers.
func TestMarkSentOnceIsOneSetNXPerID(t *testing.T) {
	client := redistest.Start(t, redistest.Config{}).Client()
	s := open(t, client, &redisstore.Options{Prefix: "p:"})
	sent := &commands{}
	client.AddHook(sent)

	isNew, err := s.CheckAndMarkContext(ctx, []byte("a"), time.Hour)
	require.NoError(t, err)
	assert.True(t, isNew)
	isNew, err = s.CheckAndMarkContext(ctx, []byte("a"), time.Hour)
	require.NoError(t, err)
	assert.False(t, isNew)
	isNews, err := s.CheckAndMarkBatchContext(ctx, [][]byte{[]byte("b"), []byte("a"), []byte("b")}, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []bool{true, false, false}, isNews)

	require.Len(t, sent.sent, 4)
	for i, key := range []string{"p:a", "p:a", "p:b", "p:a"} {
		args := sent.sent[i]
		require.Len(t, args, 6, "%q", args)
		assert.Equal(t, []string{"set", key, "px", "3600000", "nx"}, []string{args[0], args[1], args[3], args[4], args[5]})
	}
}

// markValueIsAnIntegerToRedis checks that the nonce a mark holds is one
// Redis keeps as an integer, without a string of its own per key.
func markValueIsAnIntegerToRedis(t *testing.T, srv server) {
	prefix := t.Name() + ":"
	s := srv.open(t, &redisstore.Options{Prefix: prefix})
	_, err := s.CheckAndMarkBatchContext(ctx, ids("int", 3), time.Hour)
	require.NoError(t, err)
	_, err = s.CheckAndMarkContext(ctx, []byte("one"), time.Hour)
	require.NoError(t, err)
	for _, id := range append(ids("int", 3), []byte("one")) {
		enc, err := srv.client.ObjectEncoding(ctx, prefix+string(id)).Result()
		require.NoError(t, err)
		assert.Equal(t, "int", enc, "%s", id)
	}
}
