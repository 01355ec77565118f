package metrics_test

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
	dtestutil "github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
	"github.com/seed42300104/dedup/metrics"
	"github.com/seed42300104/dedup/ttl"
)

// anyRise is a wanted move of a series that only has to be positive (a
// byte count, a time).
var anyRise = math.Inf(1)

// scrape gathers reg into one value per series, "name{label=value,...}",
// a histogram as its _count and _sum.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if l.GetName() != "store" {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
			}
			sort.Strings(labels)
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
				out[key+"_sum"] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

// isCounter says whether a series only rises: a counter or a histogram's
// count. Pebble's compactions run in the background, when Pebble decides:
// their time is left out.
func isCounter(key string) bool {
	name, _, _ := strings.Cut(key, "{")
	if name == "dedup_compaction_seconds_total" {
		return false
	}
	return strings.HasSuffix(name, "_total") || strings.HasSuffix(key, "_count")
}

// assertMoved checks that exactly the counters in want moved from before
// to after, each by its amount (anyRise: by any positive amount).
func assertMoved(t *testing.T, step string, before, after map[string]float64, want map[string]float64) {
	t.Helper()
	moved := map[string]float64{}
	for k, v := range after {
		if isCounter(k) && v != before[k] {
			moved[k] = v - before[k]
		}
	}
	for k, w := range want {
		if w == anyRise {
			if assert.Greater(t, moved[k], 0.0, "%s: %s must rise", step, k) {
				moved[k] = anyRise
			}
		}
	}
	assert.Equal(t, want, moved, "%s: the counters that moved", step)
}

// failWALSyncs fails the SyncData of WAL segments once armed, as a disk
// that loses a write does.
type failWALSyncs struct{ armed atomic.Bool }

func (f *failWALSyncs) String() string { return "fail SyncData of .wal files once armed" }

func (f *failWALSyncs) MaybeError(op errorfs.Op) error {
	if f.armed.Load() && op.Kind == errorfs.OpFileSyncData && strings.HasSuffix(op.Path, ".wal") {
		return errorfs.ErrInjected
	}
	return nil
}

// TestCollectorFollowsTheStore drives a store through new marks,
// duplicates, a checkpoint, an expiry drop, ErrFull and a failed fsync,
// scraping after each step: exactly the right counters move, by the
// right amounts, the gauges follow, and each event is logged once, with
// its attributes.
func TestCollectorFollowsTheStore(t *testing.T) {
	clock := ttl.NewFake(dtestutil.Epoch)
	fault := &failWALSyncs{}
	var log dtestutil.Log
	const maxMarks = 150
	s, err := dedup.Open("store", &dedup.Options{
		FS: errorfs.Wrap(vfs.NewMem(), fault), Clock: clock, Logger: log.Logger(),
		MaxMarks: maxMarks, ExpiryInterval: 24 * time.Hour, // no checkpoint of its own
	})
	require.NoError(t, err)
	c := metrics.NewCollector(s, prometheus.Labels{"store": "test"})
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, problems, "the series follow Prometheus's conventions")
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	last := scrape(t, reg)
	step := func(name string, want map[string]float64) map[string]float64 {
		t.Helper()
		now := scrape(t, reg)
		assertMoved(t, name, last, now, want)
		last = now
		return now
	}
	assert.Equal(t, 0.0, last["dedup_fail_stopped"])
	assert.Equal(t, (24 * time.Hour).Seconds(), last["dedup_default_ttl_seconds"])
	if opened := log.Find("dedup: opened"); assert.Len(t, opened, 1) {
		assert.Equal(t, int64(0), opened[0].Attrs["replayed_records"])
		assert.Contains(t, opened[0].Attrs, "duration")
	}

	ids := storetest.IDs("m", 100)
	_, err = s.CheckAndMarkBatch(ids, time.Hour)
	require.NoError(t, err)
	now := step("100 new marks", map[string]float64{
		`dedup_checks_total{call=batch,outcome=new}`: 100,
		`dedup_lookups_total{answered_by=filters}`:   100, // no generation yet
		"dedup_wal_appends_total":                    1,
		"dedup_wal_append_bytes_total":               anyRise,
		"dedup_wal_syncs_total":                      1,
		"dedup_wal_sync_duration_seconds_count":      1,
		"dedup_wal_sync_records_count":               1,
	})
	assert.Equal(t, 1.0, now["dedup_wal_sync_records_sum"], "one record in the one fsync")
	assert.Equal(t, 100.0, now["dedup_marks"])
	assert.Equal(t, 1.0, now["dedup_generations"])
	assert.Positive(t, now["dedup_filter_estimated_false_positive_ratio"])

	isNew, err := s.CheckAndMark(ids[0], time.Hour)
	require.NoError(t, err)
	require.False(t, isNew)
	seen, err := s.Seen(ids[1])
	require.NoError(t, err)
	require.True(t, seen)
	seen, err = s.Seen([]byte("never marked"))
	require.NoError(t, err)
	require.False(t, seen)
	step("a duplicate and two Seens", map[string]float64{
		`dedup_checks_total{call=single,outcome=duplicate}`: 1,
		`dedup_seen_total{outcome=seen}`:                    1,
		`dedup_seen_total{outcome=absent}`:                  1,
		`dedup_lookups_total{answered_by=memtable}`:         2,
		`dedup_lookups_total{answered_by=filters}`:          1,
	})

	for range 2 { // the second looks them up under the shared lock first
		_, err = s.CheckAndMarkBatch(ids, time.Hour)
		require.NoError(t, err)
	}
	step("two batches of duplicates", map[string]float64{
		`dedup_checks_total{call=batch,outcome=duplicate}`: 200,
		`dedup_lookups_total{answered_by=memtable}`:        200, // each ID once per call
	})

	require.NoError(t, s.Checkpoint())
	now = step("a checkpoint", map[string]float64{
		"dedup_checkpoints_total":                 1,
		"dedup_checkpoint_duration_seconds_count": 1,
	})
	assert.Equal(t, 0.0, now["dedup_memtable_marks"])
	assert.Equal(t, 0.0, now["dedup_wal_records_since_checkpoint"])
	assert.Positive(t, now[`dedup_disk_bytes{part=filters}`])
	assert.Positive(t, now[`dedup_disk_bytes{part=index}`])
	if ckpts := log.Find("dedup: checkpoint"); assert.Len(t, ckpts, 1) {
		assert.Equal(t, slog.LevelDebug, ckpts[0].Level)
		assert.Equal(t, int64(100), ckpts[0].Attrs["marks"])
	}

	clock.Advance(3 * time.Hour) // past every deadline and the generation's end
	require.NoError(t, s.Checkpoint())
	now = step("an expiry drop", map[string]float64{
		"dedup_checkpoints_total":                         1,
		"dedup_checkpoint_duration_seconds_count":         1,
		`dedup_generations_dropped_total{reason=expired}`: 1,
		"dedup_reclaim_seconds_total":                     anyRise, // the excision of its keys
	})
	assert.Equal(t, 0.0, now["dedup_marks"])
	assert.Equal(t, 0.0, now["dedup_generations"])
	assert.Len(t, log.Find("dedup: generation dropped"), 1)

	_, err = s.CheckAndMarkBatch(storetest.IDs("full", maxMarks), time.Hour)
	require.NoError(t, err)
	step("marks up to MaxMarks", map[string]float64{
		`dedup_checks_total{call=batch,outcome=new}`: maxMarks,
		`dedup_lookups_total{answered_by=filters}`:   maxMarks,
		"dedup_wal_appends_total":                    1,
		"dedup_wal_append_bytes_total":               anyRise,
		"dedup_wal_syncs_total":                      1,
		"dedup_wal_sync_duration_seconds_count":      1,
		"dedup_wal_sync_records_count":               1,
	})
	for _, id := range [][]byte{[]byte("one too many"), []byte("and another")} {
		_, err = s.CheckAndMark(id, time.Hour)
		require.ErrorIs(t, err, dedup.ErrFull)
	}
	step("two writes refused", map[string]float64{
		`dedup_capacity_events_total{event=full}`:  2,
		`dedup_errors_total{kind=full}`:            2,
		`dedup_lookups_total{answered_by=filters}`: 2,
	})
	if full := log.Find("dedup: store full, writes of new marks refused"); assert.Len(t, full, 1, "once per episode") {
		assert.Equal(t, slog.LevelWarn, full[0].Level)
		assert.Equal(t, uint64(maxMarks), full[0].Attrs["marks"])
	}

	fault.armed.Store(true)
	require.ErrorIs(t, s.Forget(ids[0]), errorfs.ErrInjected)
	now = step("a failed fsync", map[string]float64{
		"dedup_wal_appends_total":               1,
		"dedup_wal_append_bytes_total":          anyRise,
		"dedup_wal_syncs_total":                 1,
		"dedup_wal_sync_duration_seconds_count": 1,
		`dedup_errors_total{kind=io}`:           1,
	})
	assert.Equal(t, 1.0, now["dedup_fail_stopped"])
	if stops := log.Find("wal: fail-stop"); assert.Len(t, stops, 1) {
		assert.Equal(t, slog.LevelError, stops[0].Level)
		assert.ErrorIs(t, stops[0].Attrs["err"].(error), errorfs.ErrInjected)
	}

	require.ErrorIs(t, s.Close(), errorfs.ErrInjected)
	closed := scrape(t, reg)
	assert.Equal(t, now[`dedup_checks_total{call=batch,outcome=new}`], closed[`dedup_checks_total{call=batch,outcome=new}`],
		"a closed store still reports its counters")
	assert.Equal(t, 1.0, closed["dedup_fail_stopped"])
	assert.NotContains(t, fmt.Sprint(log.Records()), "never marked", "nothing is logged per ID")
}

// TestIdempotencyCollectorExportsTheCounters serves a first run and a
// replay through the middleware and processes a message twice, then
// checks the series, and that they follow Prometheus's conventions.
func TestIdempotencyCollectorExportsTheCounters(t *testing.T) {
	counters := idempotency.NewCounters()
	store := storetest.OpenMem(t, nil)
	h := idempotency.Middleware(store, &idempotency.Options{Counters: counters})(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	for range 2 {
		r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader("{}"))
		r.Header.Set("Idempotency-Key", "k")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	consumer := &idempotency.Consumer{Store: store, Counters: counters}
	for range 2 {
		_, err := consumer.Process([]byte("m"), func() error { return nil })
		require.NoError(t, err)
	}

	c := metrics.NewIdempotencyCollector(counters, prometheus.Labels{"service": "payments"})
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, problems)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	got := scrape(t, reg)
	assert.Equal(t, 1.0, got[`dedup_http_requests_total{outcome=first_run,service=payments}`])
	assert.Equal(t, 1.0, got[`dedup_http_requests_total{outcome=replayed,service=payments}`])
	assert.Equal(t, 0.0, got[`dedup_http_requests_total{outcome=in_progress,service=payments}`])
	assert.Equal(t, 1.0, got[`dedup_http_handler_duration_seconds{service=payments}_count`])
	assert.Equal(t, 1.0, got[`dedup_consumer_messages_total{service=payments,status=processed}`])
	assert.Equal(t, 1.0, got[`dedup_consumer_messages_total{service=payments,status=duplicate}`])
}

// TestBackendCollectorExportsTheCallsOfAnyBackend exports the counters
// of a Counted backend, here the embedded store, under the Collector's
// names.
func TestBackendCollectorExportsTheCallsOfAnyBackend(t *testing.T) {
	s := storetest.OpenMem(t, nil)
	_, err := s.CheckAndMarkBatch(storetest.IDs("m", 3), 0)
	require.NoError(t, err)
	_, err = s.Seen(nil)
	require.ErrorIs(t, err, dedup.ErrEmptyID)

	c := metrics.NewBackendCollector(s, prometheus.Labels{"backend": "test"})
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, problems)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	got := scrape(t, reg)
	assert.Equal(t, 3.0, got[`dedup_checks_total{backend=test,call=batch,outcome=new}`])
	assert.Equal(t, 1.0, got[`dedup_errors_total{backend=test,kind=invalid_argument}`])
	assert.Equal(t, 0.0, got[`dedup_seen_total{backend=test,outcome=absent}`])
	assert.Len(t, got, 4+2+len(dedup.ErrorKinds), "the calls' series only")
}
