package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/internal/redistest"
)

func smallConfig(t *testing.T) Config {
	return Config{Dir: t.TempDir(), IDs: 2000, Batch: 64, Concurrency: 2, Shape: Bytes16, Sync: dedup.SyncAlways}
}

// TestRunRows runs every default row, on a machine with redis-server on
// PATH and on one without (PATH emptied), where the Redis rows alone are
// skipped.
func TestRunRows(t *testing.T) {
	t.Run("redis-server on PATH", func(t *testing.T) {
		redistest.Require(t, "redis-server")
		testRunRows(t, false)
	})
	t.Run("no redis-server", func(t *testing.T) {
		t.Setenv("PATH", "")
		testRunRows(t, true)
	})
}

// testRunRows runs every row and checks what each found; withoutRedis
// says the Redis rows must be skipped.
func testRunRows(t *testing.T, withoutRedis bool) {
	cfg := smallConfig(t)
	cfg.Workloads, cfg.Baselines = Workloads, Baselines
	var progressed []string
	cfg.Progress = func(row string, done int) {
		if !slices.Contains(progressed, row) {
			progressed = append(progressed, row)
		}
	}
	results, err := Run(cfg)
	require.NoError(t, err)

	var got, ran []string
	byName := map[string]Result{}
	for _, r := range results {
		got = append(got, r.Workload)
		byName[r.Workload] = r
		if r.Skipped == "" {
			ran = append(ran, r.Workload)
		}
	}
	require.Equal(t, slices.Concat(Workloads, Baselines), got, "one row per workload and baseline, in order")
	assert.Equal(t, ran, progressed, "every row that runs reports progress")
	for _, name := range redisRows {
		assert.Equal(t, withoutRedis, byName[name].Skipped != "", "%s runs where redis-server is", name)
	}

	// What each row found says it ran the mix it claims.
	want := map[string]int{
		"new": 2000, "hot-duplicates": 0, "cold-duplicates": 0, "open": 2000, "replay": 2000,
		"pebble-batch-insert": 2000, "pebble-get": 2000, "pebble-get-then-set": 2000, "redis-set-nx": 2000,
		"redis-new": 2000,
	}
	for _, r := range results {
		if r.Skipped != "" {
			assert.Contains(t, redisRows, r.Workload, "only Redis may be skipped")
			continue
		}
		assert.Positive(t, r.IDsPerSecond(), r.Workload)
		assert.Positive(t, r.P50, r.Workload)
		assert.GreaterOrEqual(t, r.P99, r.P50, r.Workload)
		assert.Positive(t, r.CPUPerMillion, r.Workload)
		assert.Equal(t, r.Baseline, slices.Contains(Baselines, r.Workload), r.Workload)
		if n, ok := want[r.Workload]; ok {
			assert.Equal(t, n, r.New, "%s: new", r.Workload)
		}
	}
	assert.Greater(t, byName["bloom-test-and-add"].New, 1950, "bloom-test-and-add: new but for false positives")
	mix := byName["segment-mix"].New
	assert.True(t, mix < 2000 && mix > 1950, "segment-mix: %d of 2000 new; want about 0.6%% duplicates", mix)
	assert.Less(t, byName["zipf"].New, 1000, "zipf: most draws repeat a few IDs")
	assert.Less(t, byName["seen-absent"].New, 100, "seen-absent: only false positives are seen")
	assert.Less(t, byName["bloom-test"].New, 100, "bloom-test: only false positives are seen")
	for _, name := range []string{"open", "replay"} {
		assert.Equal(t, 2000, byName[name].Batch, "%s: one call recovers every mark", name)
		assert.Equal(t, 1, byName[name].Concurrency, name)
	}

	// Rows whose API takes one ID run with batch 1.
	for _, name := range []string{"seen-absent", "bloom-test", "bloom-test-and-add", "pebble-get"} {
		assert.Equal(t, 1, byName[name].Batch, name)
	}
	assert.Equal(t, 64, byName["new"].Batch)
	assert.Positive(t, byName["new"].DiskPerMark, "the store is on disk")
	assert.Zero(t, byName["bloom-test"].DiskPerMark, "a filter is not on disk")
}

// redisRows are the default rows that need redis-server.
var redisRows = []string{"redis-new", "redis-set-nx"}

// TestClusterRowsRunOnlyWhenNamed runs the Redis Cluster rows, which the
// default rows leave out because a Cluster takes seconds to form.
func TestClusterRowsRunOnlyWhenNamed(t *testing.T) {
	assert.Equal(t, []string{"redis-cluster-new", "redis-cluster-set-nx"}, ClusterRows)
	for _, name := range ClusterRows {
		assert.NotContains(t, slices.Concat(Workloads, Baselines), name, "%s is not a default row", name)
	}
	redistest.Require(t, "redis-server")
	redistest.Require(t, "redis-cli")
	cfg := smallConfig(t)
	cfg.Sync = dedup.SyncNone
	cfg.Workloads, cfg.Baselines = []string{"redis-cluster-new"}, []string{"redis-cluster-set-nx"}
	results, err := Run(cfg)
	require.NoError(t, err)
	require.Len(t, results, 2)
	for _, r := range results {
		assert.Empty(t, r.Skipped, r.Workload)
		assert.Equal(t, 2000, r.New, "%s: every ID new", r.Workload)
		assert.Positive(t, r.RSSPerMark, "%s: the nodes' used_memory grows with the keys", r.Workload)
	}
	assert.Contains(t, results[0].Ratios, "redis-cluster-set-nx")
}

func TestRatiosAreOverEachBaseline(t *testing.T) {
	results := []Result{
		{Workload: "new", IDs: 1000, Elapsed: time.Second},
		{Workload: "pebble-batch-insert", Baseline: true, IDs: 1000, Elapsed: 4 * time.Second},
		{Workload: "bloom-test", Baseline: true, IDs: 1000, Elapsed: time.Second / 10},
		{Workload: "redis-set-nx", Baseline: true, Skipped: "no redis"},
	}
	setRatios(results)
	assert.Equal(t, map[string]float64{"pebble-batch-insert": 4, "bloom-test": 0.1}, results[0].Ratios)
	assert.Equal(t, map[string]float64{"pebble-batch-insert": 1, "bloom-test": 0.025}, results[1].Ratios)
	assert.Nil(t, results[3].Ratios, "a skipped row has no ratios")
}

func TestRedisSkippedWithoutServer(t *testing.T) {
	t.Setenv("PATH", "")
	cfg := smallConfig(t)
	cfg.Workloads, cfg.Baselines = []string{"new"}, []string{"pebble-batch-insert", "redis-set-nx"}
	results, err := Run(cfg)
	require.NoError(t, err)
	require.Len(t, results, 3)
	assert.Empty(t, results[1].Skipped, "only the Redis row is skipped")
	assert.Contains(t, results[2].Skipped, "redis-server not found on PATH")
	assert.NotContains(t, results[0].Ratios, "redis-set-nx")
	assert.Contains(t, results[0].Ratios, "pebble-batch-insert")
}

// TestRedisPersistsAsTheStore runs the Redis rows in each timing mode:
// their memory per mark, in both, is their server's, which only the
// server's usage hook reports, so the hook is wired in both.
func TestRedisPersistsAsTheStore(t *testing.T) {
	redistest.Require(t, "redis-server")
	for _, mode := range []dedup.SyncMode{dedup.SyncAlways, dedup.SyncNone} {
		for _, m := range timingModes {
			t.Run(mode.String()+"/"+m.name, func(t *testing.T) {
				cfg := smallConfig(t)
				cfg.Sync, cfg.Rounds, cfg.Workloads, cfg.Baselines = mode, m.rounds, []string{"redis-new"}, []string{"redis-set-nx"}
				results, err := Run(cfg)
				require.NoError(t, err)
				for _, r := range results {
					assertPersisted(t, mode, r)
				}
			})
		}
	}
}

// assertPersisted checks that a Redis row kept its marks in memory, and
// on disk only where mode asks for persistence.
func assertPersisted(t *testing.T, mode dedup.SyncMode, r Result) {
	t.Helper()
	assert.Empty(t, r.Skipped, r.Workload)
	assert.Equal(t, 2000, r.New, r.Workload)
	assert.Positive(t, r.RSSPerMark, "%s: used_memory grows with the keys", r.Workload)
	if mode == dedup.SyncAlways {
		assert.Positive(t, r.DiskPerMark, "%s: the AOF holds the keys", r.Workload)
	} else {
		assert.Zero(t, r.DiskPerMark, "%s: no persistence", r.Workload)
	}
}

func TestWriteResults(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Workloads, cfg.Baselines = []string{"new", "seen-absent"}, []string{"bloom-test"}
	results, err := Run(cfg)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "results")
	require.NoError(t, WriteResults(dir, results))

	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	require.NoError(t, err)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal(b, &rows))
	require.Len(t, rows, 3)
	for _, key := range []string{"workload", "baseline", "shape", "sync", "ids", "batch", "concurrency",
		"elapsed_ns", "p50_ns", "p99_ns", "new", "cpu_seconds_per_million", "ratios"} {
		assert.Contains(t, rows[0], key)
	}
	assert.Equal(t, "new", rows[0]["workload"])
	assert.Contains(t, rows[0]["ratios"], "bloom-test")

	svg, err := os.ReadFile(filepath.Join(dir, "chart.svg"))
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(svg, []byte("<?xml")), "chart.svg starts with %.20q", svg)
	for _, name := range []string{"new", "seen-absent", "bloom-test"} {
		assert.Contains(t, string(svg), name, "the chart names every row")
	}
}

func TestIDShapes(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, id := range IDs(UUID, 1, 100) {
		assert.Regexp(t, uuid, string(id))
	}
	for _, id := range IDs(Bytes16, 1, 100) {
		assert.Len(t, id, 16)
	}
	assert.Equal(t, IDs(UUID, 7, 10), IDs(UUID, 7, 10), "a seed gives the same IDs")
	assert.NotEqual(t, IDs(UUID, 7, 10), IDs(UUID, 8, 10))
}

func TestUnknownRowOrShape(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Workloads = []string{"nope"}
	_, err := Run(cfg)
	assert.ErrorContains(t, err, `unknown row "nope"`)

	cfg = smallConfig(t)
	cfg.Shape = "ulid"
	_, err = Run(cfg)
	assert.ErrorContains(t, err, `unknown ID shape "ulid"`)
}

// TestRoundsTimeTheRowsInTurn checks that with Rounds the rows are set up
// first and then timed a round of each at a time, and that each row's
// figures add up over its rounds.
func TestRoundsTimeTheRowsInTurn(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Rounds = 3
	cfg.Workloads, cfg.Baselines = []string{"cold-duplicates"}, []string{"pebble-get"}
	var order []string
	cfg.Progress = func(row string, done int) {
		if len(order) == 0 || order[len(order)-1] != row {
			order = append(order, row)
		}
	}
	results, err := Run(cfg)
	require.NoError(t, err)
	assert.Equal(t, []string{"cold-duplicates", "pebble-get", "cold-duplicates", "pebble-get", "cold-duplicates", "pebble-get"}, order)
	require.Len(t, results, 2)
	assert.Zero(t, results[0].New, "every re-marked ID is a duplicate, in every round")
	assert.Equal(t, 2000, results[1].New, "every ID found, over the rounds")
	for _, r := range results {
		assert.Equal(t, 2000, r.IDs, r.Workload)
		assert.Positive(t, r.Elapsed, r.Workload)
		assert.Positive(t, r.CPUPerMillion, r.Workload)
		assert.Positive(t, r.DiskPerMark, r.Workload)
		assert.Contains(t, r.Ratios, "pebble-get", r.Workload)
	}
	assert.Equal(t, 1, results[1].Batch, "Get takes one ID per call")
}

// fakeServer stands in for a server process that a row's calls run on:
// each ID handled costs it serverCPUPerID of CPU time and serverMemPerID
// bytes of memory, which its usage hook reports, failing with err if set.
type fakeServer struct {
	handled atomic.Int64
	err     error
}

const (
	serverCPUPerID = 10 * time.Millisecond
	serverMemPerID = 100
)

// row is a row whose every ID is new, on s.
func (s *fakeServer) row() row {
	return row{name: "fake-server", input: (*inputs).marked, setup: func(Config, *inputs, string) (trial, error) {
		return trial{
			call: func(ids [][]byte) (int, error) {
				s.handled.Add(int64(len(ids)))
				return len(ids), nil
			},
			marks: func() int { return int(s.handled.Load()) },
			external: func() (time.Duration, int64, error) {
				n := s.handled.Load()
				return time.Duration(n) * serverCPUPerID, n * serverMemPerID, s.err
			},
			close: func() error { return nil },
		}, nil
	}}
}

// timingModes are the two ways Run times a row: in one go, and in rounds.
var timingModes = []struct {
	name   string
	rounds int
}{{"one go", 1}, {"rounds", 3}}

// TestServerUsageIsTheRowsInEveryMode checks that a row whose calls run on
// a server process is charged the server's CPU time and memory growth, as
// its usage hook reports them, in one go and in rounds alike.
func TestServerUsageIsTheRowsInEveryMode(t *testing.T) {
	for _, m := range timingModes {
		t.Run(m.name, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.Rounds = m.rounds
			results, err := run(cfg, []row{new(fakeServer).row()})
			require.NoError(t, err)
			require.Len(t, results, 1)
			r := results[0]
			assert.Equal(t, 2000, r.New)
			// The server's share is 10,000 s per million IDs; this
			// process's, for calls that do nothing, is a small fraction.
			serverPerMillion := serverCPUPerID.Seconds() * 1e6
			assert.GreaterOrEqual(t, r.CPUPerMillion, serverPerMillion, "the server's CPU is counted")
			assert.Less(t, r.CPUPerMillion, serverPerMillion*1.1, "the server's CPU is counted once")
			assert.Equal(t, float64(serverMemPerID), r.RSSPerMark, "the server's memory growth per mark")
		})
	}
}

// TestServerUsageErrorFailsTheRow checks that a row whose server cannot
// report its usage fails, in one go and in rounds, rather than be charged
// this process's CPU alone.
func TestServerUsageErrorFailsTheRow(t *testing.T) {
	for _, m := range timingModes {
		t.Run(m.name, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.Rounds = m.rounds
			_, err := run(cfg, []row{(&fakeServer{err: errFakeServer}).row()})
			assert.ErrorIs(t, err, errFakeServer)
			assert.ErrorContains(t, err, "fake-server")
		})
	}
}

var errFakeServer = errors.New("fake server: INFO refused")

func TestRoundsRefuseRowsOfOneCall(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Rounds = 2
	cfg.Workloads, cfg.Baselines = []string{"open"}, nil
	_, err := Run(cfg)
	assert.ErrorContains(t, err, "open is one call")
}

// TestPebbleBaselinesHaveTheStoresBlockCache checks that raw Pebble is
// compared with the store at the same room for blocks: the store's cache
// and the memtable Pebble reserves out of its own.
func TestPebbleBaselinesHaveTheStoresBlockCache(t *testing.T) {
	for _, tc := range []struct {
		cache, want int64
	}{
		{0, 64<<20 + pebbleMemTableSize},
		{256 << 20, 256<<20 + pebbleMemTableSize},
	} {
		assert.Equal(t, tc.want, pebbleCacheSize(Config{CacheSize: tc.cache}), "store cache %d", tc.cache)
	}
}
