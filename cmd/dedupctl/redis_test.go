package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/internal/redistest"
	"github.com/seed42300104/dedup/redisstore"
)

// redisNamespace fills the namespace "ns:" on client as a fleet would:
// two marks, a job in progress, a completed HTTP idempotency record, and
// a hash that something else wrote under the prefix.
func redisNamespace(t *testing.T, client redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	s, err := redisstore.New(ctx, client, &redisstore.Options{Prefix: "ns:"})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.CheckAndMarkBatchContext(ctx, [][]byte{[]byte("a-1"), []byte("a-2")}, time.Hour)
	require.NoError(t, err)
	_, err = s.BeginContext(ctx, []byte("job"), []byte{0xab}, time.Hour, 2*time.Hour)
	require.NoError(t, err)
	key := idempotency.StoreKey("acct_1", "order-9")
	c, err := s.BeginContext(ctx, key, []byte("fp"), time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.CompleteContext(ctx, key, c.Record.Token, []byte("stored response")))
	require.NoError(t, client.HSet(ctx, "ns:h", "f", "v").Err())
	_, err = s.CheckAndMarkContext(ctx, []byte("a-1"), time.Hour) // another namespace's
	require.NoError(t, err)
}

// TestRedisNamespaceCommands runs get, explain, scan, forget and stats on a
// namespace of a standalone server and of a Cluster, named by one URL
// and, for the Cluster, by every node's.
func TestRedisNamespaceCommands(t *testing.T) {
	single := redistest.Start(t, redistest.Config{})
	cluster := redistest.StartCluster(t, redistest.Config{})
	var urls []string
	for _, a := range cluster.Addrs() {
		urls = append(urls, "redis://"+a)
	}
	redisNamespace(t, single.Client())
	redisNamespace(t, cluster.Client(t))
	for _, tc := range []struct {
		name, redis string
		primaries   int
	}{
		{"standalone", "redis://" + single.Addr, 1},
		{"cluster by one node", urls[0], 3},
		{"cluster by every node", strings.Join(urls, ","), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := []string{"--redis", tc.redis, "--redis-prefix", "ns:"}
			run := func(args ...string) string {
				t.Helper()
				code, stdout, stderr := runIn(t, nil, append(append([]string{}, ns...), args...)...)
				require.Equal(t, exitOK, code, "%v: %s", args, stderr)
				return stdout
			}

			assert.Regexp(t, `^ID +live\na-1 +true\njob +true\nnever +false\n$`, run("get", "a-1", "job", "never"))
			assert.Equal(t, "{\"id\":\"a-1\",\"live\":true}\n", run("-o", "json", "get", "a-1"))

			out := run("explain", "a-1", "job", "h", "never")
			assert.Regexp(t, `ID +a-1\nlive +true\nkind +mark\ndeadline +\S+\nTTL left +[0-9hms.]+\n`, out)
			assert.Regexp(t, `ID +job\nlive +true\nkind +record\n(.*\n){2}record +in progress: lease of token \d+ until \S+, live\nfingerprint +ab\n`, out)
			assert.Regexp(t, `ID +h\nlive +true\nkind +hash\nTTL left +none`, out)
			assert.Regexp(t, `ID +never\nlive +false\n`, out)
			var l redisExplainLine
			require.NoError(t, json.Unmarshal([]byte(run("-o", "json", "explain", "--http", "--scope", "acct_1", "order-9")), &l))
			assert.Equal(t, "order-9", l.Text)
			assert.Equal(t, redisstore.KindRecord, l.Kind)
			require.NotNil(t, l.Record)
			assert.Equal(t, dedup.StateCompleted, l.Record.State)
			assert.Equal(t, []byte("stored response"), l.Record.Result)

			lines := strings.Split(strings.TrimSpace(run("-o", "json", "scan")), "\n")
			states := map[string]string{}
			for _, line := range lines {
				var m struct {
					ID, State string
				}
				require.NoError(t, json.Unmarshal([]byte(line), &m))
				states[m.ID] = m.State
			}
			assert.Len(t, states, 4, "the marks and records, not the hash: %v", lines)
			assert.Equal(t, "live", states["a-1"])
			assert.Equal(t, "in-progress", states["job"])
			assert.Regexp(t, `^a-1\t\S+\tlive\n$`, run("scan", "--prefix", "a-1"))
			assert.Regexp(t, `^job\t\S+\tin-progress\tin progress: lease of token \d+`, run("scan", "--state", "in-progress"))
			assert.Equal(t, 1, strings.Count(run("scan", "--prefix", "a", "--limit", "1"), "\n"))
			assert.Empty(t, run("scan", "--state", "expired"), "Redis keeps no expired versions")

			var st redisstore.Stats
			require.NoError(t, json.Unmarshal([]byte(run("-o", "json", "stats")), &st))
			assert.EqualValues(t, 5, st.Keys, "every key under the prefix")
			assert.Len(t, st.Primaries, tc.primaries)
			assert.Regexp(t, `prefix +ns:\nkeys +5\n\nprimary +keys +db keys +used memory +maxmemory +maxmemory-policy\n`, run("stats"))
			assert.Contains(t, run("stats"), "noeviction")
		})
	}
	for _, redisURL := range []string{"redis://" + single.Addr, urls[0]} {
		ns := []string{"--redis", redisURL, "--redis-prefix", "ns:"}
		code, stdout, stderr := runIn(t, nil, append(ns, "forget", "a-2", "never")...)
		require.Equal(t, exitOK, code, stderr)
		assert.Regexp(t, `a-2 +true\nnever +false\n`, stdout)
		_, stdout, _ = runIn(t, nil, append(ns, "explain", "a-2")...)
		assert.Regexp(t, `live +false`, stdout, "forgotten")
	}
}

// TestRedisIsRefusedOrFailsAsDirDoes checks the usage errors and exit
// codes of --redis and $DEDUP_REDIS.
func TestRedisIsRefusedOrFailsAsDirDoes(t *testing.T) {
	single := redistest.Start(t, redistest.Config{})
	redisNamespace(t, single.Client())
	url := "redis://" + single.Addr
	for _, args := range [][]string{
		{"mark", "x"}, {"filter"}, {"import"}, {"compact"}, {"verify"}, {"export"}, {"bench"},
		{"repair"}, {"snapshot", filepath.Join(t.TempDir(), "snap")},
	} {
		code, stdout, stderr := runIn(t, []byte("x\n"), append([]string{"--redis", url}, args...)...)
		assert.Equal(t, exitUsage, code, "%v", args)
		assert.Empty(t, stdout, "%v", args)
		assert.Contains(t, stderr, args[0]+" does not work with --redis", "%v", args)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"both --dir and --redis", []string{"--redis", url, "--dir", t.TempDir(), "stats"}, exitUsage, "give one of --dir, --addr and --redis"},
		{"both --addr and --redis", []string{"--redis", url, "--addr", "http://127.0.0.1:1", "stats"}, exitUsage, "give one of"},
		{"not a Redis URL", []string{"--redis", "http://" + single.Addr, "stats"}, exitUsage, "invalid URL scheme"},
		{"an empty ID", []string{"--redis", url, "explain", ""}, exitUsage, "empty ID"},
		{"a bad state", []string{"--redis", url, "scan", "--state", "stuck"}, exitUsage, "--state must be"},
		{"nobody listens", []string{"--redis", "redis://127.0.0.1:1", "stats"}, exitError, "redis at 127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runIn(t, nil, tc.args...)
			assert.Equal(t, tc.code, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.err)
			assert.NotContains(t, stderr, "pool.go", "go-redis's own log is silenced")
		})
	}

	t.Setenv("DEDUP_REDIS", url)
	code, stdout, stderr := runIn(t, nil, "--redis-prefix", "ns:", "explain", "a-1")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "kind      mark", "$DEDUP_REDIS serves explain when --dir is not given")
	dir := filepath.Join(t.TempDir(), "other")
	code, _, stderr = runIn(t, nil, "--dir", dir, "mark", "a-1")
	require.Equal(t, exitOK, code, "$DEDUP_REDIS is ignored by the commands it does not serve: %s", stderr)
	code, stdout, stderr = runIn(t, nil, "--dir", dir, "explain", "a-1")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "filters", "--dir beats $DEDUP_REDIS")
}
