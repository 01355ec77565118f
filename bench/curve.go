package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/seed42300104/dedup"
)

// CurveConfig is a run of the cost curve: how the store's costs grow with
// the marks it holds, against raw Pebble and bloom/v3 holding as many.
type CurveConfig struct {
	// Dir holds each size's store and Pebble, each removed after its rows.
	Dir string
	// Marks are the sizes, in order: at each, one store of that many marks
	// is built, and the read rows run on it.
	Marks []int
	// Sample is the number of IDs each read row looks up: that many of the
	// marks, spread evenly over them (all of them at a smaller size), or
	// as many IDs never marked.
	Sample int
	// Batch, Concurrency, Shape, Sync and CacheSize are as in Config.
	Batch       int
	Concurrency int
	Shape       Shape
	Sync        dedup.SyncMode
	CacheSize   int64
	// Logger is the stores' Options.Logger. Nil means silent.
	Logger *slog.Logger
	// Progress, if set, is told what runs and how many of its IDs are done,
	// as Config.Progress is; a step that is not timed is told 0.
	Progress func(step string, done int)
}

// CurveRows are the rows of each size of the curve, in the order they run:
//
//   - new: the store's CheckAndMarkBatch of the size's marks, all new;
//     the store is then compacted, untimed, and the read rows run on it;
//   - cold-duplicates: CheckAndMarkBatch of Sample of those marks;
//   - seen-absent: Seen of Sample IDs never marked;
//   - open: Open of the store, all of it checkpointed, one call;
//   - pebble-batch-insert: the size's marks into raw Pebble, which is then
//     flushed and compacted, untimed;
//   - pebble-get: Get of the Sample marks cold-duplicates looks up;
//   - bloom-test: bloom/v3 Test of the seen-absent IDs, on a filter
//     holding the size's marks.
var CurveRows = []string{"new", "cold-duplicates", "seen-absent", "open", "pebble-batch-insert", "pebble-get", "bloom-test"}

// Seeds of the curve's IDs: the marks are Concurrency streams, the g-th
// drawn from markSeed+g, and the absent IDs one stream apart from them.
const (
	markSeed   = 1 << 20
	absentSeed = 2
)

// Curve is the cost curve: a point per size.
type Curve struct {
	Points []CurvePoint `json:"points"`
	// CgoMemory is the package's CgoMemory in the run: if true, the
	// memory figures of every size but the first miss what the store
	// reused of memory earlier rows freed.
	CgoMemory bool `json:"cgo_memory"`
}

// CurvePoint is what the rows measured at one size.
type CurvePoint struct {
	Marks int `json:"marks"`
	// Rows are the results of CurveRows, in order, with their ratios to
	// the baselines at this size.
	Rows   []Result `json:"rows"`
	Memory Memory   `json:"memory"`
}

// Memory is what the store of a size holds in memory and on disk, once
// compacted and after the read rows ran on it.
type Memory struct {
	// BaseRSS is the process's resident memory just before the store's
	// Open, after a GC that returns free memory to the system: the Go
	// runtime, the code, and the read rows' IDs, already drawn. It is the
	// fixed baseline.
	BaseRSS int64 `json:"base_rss_bytes"`
	// StoreRSS is the same measure after the read rows, the store open.
	StoreRSS int64 `json:"store_rss_bytes"`
	// BaseGo and StoreGo are the parts of BaseRSS and StoreRSS the Go
	// runtime holds (MemStats.Sys less HeapReleased, an upper bound); the
	// rest is the binary and C memory, where Pebble keeps its block cache
	// and memtables.
	BaseGo  int64 `json:"base_go_bytes"`
	StoreGo int64 `json:"store_go_bytes"`
	// BaseHeap and StoreHeap divide the Go runtime's memory at the same
	// two readings. Without cgo, Pebble's block cache and memtables are
	// among the heap's objects, and the block cache's churn is most of
	// the growth of Unused.
	BaseHeap  GoHeap `json:"base_go_heap"`
	StoreHeap GoHeap `json:"store_go_heap"`
	// CacheBytes is what the configured caches can hold: the block cache,
	// or the index tables if smaller, since the cache holds only their
	// blocks. The memtable is empty after the compaction.
	CacheBytes int64 `json:"cache_bytes"`
	// FilterBytes, IndexTableBytes and WALBytes are the store's Stats.
	FilterBytes     uint64 `json:"filter_bytes"`
	IndexTableBytes uint64 `json:"index_table_bytes"`
	WALBytes        int64  `json:"wal_bytes"`
	// PerMark is (StoreRSS - BaseRSS) per mark.
	PerMark float64 `json:"rss_bytes_per_mark"`
	// BeyondCachesPerMark is (StoreRSS - BaseRSS - CacheBytes) per mark,
	// or 0 if that is negative: the memory that grows with the marks.
	BeyondCachesPerMark float64 `json:"rss_beyond_caches_bytes_per_mark"`
	// MarginalPerMark is the growth of StoreRSS - BaseRSS - CacheBytes
	// from the previous size, per mark added: what each mark costs once
	// the fixed memory is paid. Zero at the first size.
	MarginalPerMark float64 `json:"rss_marginal_bytes_per_mark,omitempty"`
}

// beyondCaches is the store's resident memory beyond the fixed baseline
// and the configured caches.
func (m Memory) beyondCaches() int64 {
	return m.StoreRSS - m.BaseRSS - m.CacheBytes
}

// RunCurve runs CurveRows at each of cfg's sizes, smallest first.
func RunCurve(cfg CurveConfig) (Curve, error) {
	if cfg.Sample <= 0 || cfg.Batch <= 0 || cfg.Concurrency <= 0 || len(cfg.Marks) == 0 {
		return Curve{}, fmt.Errorf("bench: curve: Marks, Sample, Batch and Concurrency must be given and positive")
	}
	if cfg.Shape == "" {
		cfg.Shape = Bytes16
	}
	c := Curve{CgoMemory: CgoMemory}
	for i, n := range cfg.Marks {
		if n <= 0 {
			return c, fmt.Errorf("bench: curve: %d marks: must be positive", n)
		}
		pt, err := curvePoint(cfg, n)
		if err != nil {
			return c, fmt.Errorf("bench: curve at %d marks: %w", n, err)
		}
		if i > 0 {
			prev := c.Points[i-1]
			grown := float64(pt.Memory.beyondCaches() - prev.Memory.beyondCaches())
			pt.Memory.MarginalPerMark = grown / float64(n-prev.Marks)
		}
		c.Points = append(c.Points, pt)
	}
	return c, nil
}

// curvePoint runs the rows at n marks.
func curvePoint(cfg CurveConfig, n int) (CurvePoint, error) {
	sample := min(cfg.Sample, n)
	pt := CurvePoint{Marks: n}
	// The read rows' IDs are drawn before any memory is measured.
	rc := Config{Dir: cfg.Dir, IDs: sample, Batch: cfg.Batch, Concurrency: cfg.Concurrency, Shape: cfg.Shape,
		Sync: cfg.Sync, CacheSize: cfg.CacheSize, Logger: cfg.Logger}
	present := markSample(rc, n, sample)
	absent := IDs(cfg.Shape, absentSeed, sample)
	if cfg.Progress != nil {
		rc.Progress = func(row string, done int) { cfg.Progress(fmt.Sprintf("%d marks: %s", n, row), done) }
	}
	steps := []func(Config, int, [][]byte, [][]byte, *CurvePoint) error{curveStore, curvePebble, curveBloom}
	for _, step := range steps {
		if err := step(rc, n, present, absent, &pt); err != nil {
			return pt, err
		}
	}
	setRatios(pt.Rows)
	return pt, nil
}

// curveStore builds a store of n marks, runs the store's rows on it and
// measures its memory.
func curveStore(cfg Config, n int, present, absent [][]byte, pt *CurvePoint) error {
	dir, err := os.MkdirTemp(cfg.Dir, "store-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	o := dedup.Options{Sync: cfg.Sync, ExpectedMarks: n, CacheSize: cfg.CacheSize, Logger: cfg.logger()}
	rss0 := rss()
	go0, heap0 := goResident(), goHeap()
	s, err := dedup.Open(dir, &o)
	if err != nil {
		return err
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	fill := newResult("new", false, cfg, n)
	if err := measure(cfg, "new", markFeeds(cfg, n), n, trial{call: markCalls(s)}, 0, &fill); err != nil {
		return err
	}
	step(cfg, "compact")
	if err := s.Compact(context.Background()); err != nil {
		return err
	}
	fill.DiskPerMark = float64(DiskUsage(dir)) / float64(n)

	cold := newResult("cold-duplicates", false, cfg, len(present))
	if err := measure(cfg, cold.Workload, feeds(present, cfg.Concurrency, cfg.Batch), len(present),
		trial{call: markCalls(s)}, 0, &cold); err != nil {
		return err
	}
	seen := newResult("seen-absent", false, withBatch(cfg, 1), len(absent))
	if err := measure(withBatch(cfg, 1), seen.Workload, feeds(absent, cfg.Concurrency, 1), len(absent),
		trial{call: seenCalls(s)}, 0, &seen); err != nil {
		return err
	}

	st := s.Stats()
	m := Memory{BaseRSS: rss0, StoreRSS: rss(), BaseGo: go0, StoreGo: goResident(), BaseHeap: heap0, StoreHeap: goHeap(),
		FilterBytes: st.FilterBytes, IndexTableBytes: st.IndexTableBytes, WALBytes: st.WALBytes}
	m.CacheBytes = min(cacheSize(cfg), int64(st.IndexTableBytes))
	m.PerMark = float64(m.StoreRSS-m.BaseRSS) / float64(n)
	m.BeyondCachesPerMark = max(0, float64(m.beyondCaches())/float64(n))
	pt.Memory = m
	fill.RSSPerMark = m.PerMark

	err = s.Close()
	s = nil
	if err != nil {
		return err
	}
	open := newResult("open", false, Config{Batch: n, Concurrency: 1, Shape: cfg.Shape, Sync: cfg.Sync}, n)
	probe := present[len(present)-1]
	err = timeOnce(cfg, &open, func() error {
		s, err := dedup.Open(dir, &o)
		if err != nil {
			return err
		}
		seen, err := s.Seen(probe)
		if err := errors.Join(err, s.Close()); err != nil {
			return err
		}
		if !seen {
			return fmt.Errorf("the reopened store lost the mark of %x", probe)
		}
		return nil
	})
	if err != nil {
		return err
	}
	open.New = n
	pt.Rows = append(pt.Rows, fill, cold, seen, open)
	return nil
}

// curvePebble inserts n marks into raw Pebble, settles it, and looks up
// present in it.
func curvePebble(cfg Config, n int, present, _ [][]byte, pt *CurvePoint) error {
	dir, err := os.MkdirTemp(cfg.Dir, "pebble-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rss0 := rss()
	db, err := openPebble(dir, pebbleCacheSize(cfg))
	if err != nil {
		return err
	}
	defer db.Close()
	insert := newResult("pebble-batch-insert", true, cfg, n)
	ins := pebbleInsert(cfg)
	call := func(ids [][]byte) (int, error) { return ins(db, ids) }
	if err := measure(cfg, insert.Workload, markFeeds(cfg, n), n, trial{call: call}, 0, &insert); err != nil {
		return err
	}
	step(cfg, "pebble compact")
	if err := settlePebble(db); err != nil {
		return err
	}
	insert.DiskPerMark = float64(DiskUsage(dir)) / float64(n)
	get := newResult("pebble-get", true, withBatch(cfg, 1), len(present))
	call = func(ids [][]byte) (int, error) { return pebbleGets(db, ids) }
	if err := measure(withBatch(cfg, 1), get.Workload, feeds(present, cfg.Concurrency, 1), len(present),
		trial{call: call}, 0, &get); err != nil {
		return err
	}
	insert.RSSPerMark = float64(max(rss()-rss0, 0)) / float64(n)
	pt.Rows = append(pt.Rows, insert, get)
	return nil
}

// curveBloom fills a bloom/v3 filter with n marks, untimed, and tests
// absent in it. Its memory per mark is its bitset's size: RSS cannot
// tell it apart from the memory Pebble's baseline, closed just before,
// is still giving back.
func curveBloom(cfg Config, n int, _, absent [][]byte, pt *CurvePoint) error {
	f := newFilter(n)
	step(cfg, "bloom add")
	for _, next := range markFeeds(cfg, n) {
		for b := next(); b != nil; b = next() {
			for _, id := range b {
				f.Add(id)
			}
		}
	}
	test := newResult("bloom-test", true, withBatch(cfg, 1), len(absent))
	if err := measure(withBatch(cfg, 1), test.Workload, feeds(absent, cfg.Concurrency, 1), len(absent),
		trial{call: bloomTests(f)}, 0, &test); err != nil {
		return err
	}
	test.RSSPerMark = float64(f.Cap()) / 8 / float64(n)
	pt.Rows = append(pt.Rows, test)
	return nil
}

// markFeeds are the n marks of a size, drawn batch by batch, a stream per
// goroutine: the g-th of cfg.Concurrency draws its share from markSeed+g.
func markFeeds(cfg Config, n int) []feed {
	out := make([]feed, cfg.Concurrency)
	for g := range out {
		left := share(n, cfg.Concurrency, g)
		s := newIDStream(cfg.Shape, markSeed+uint64(g))
		out[g] = func() [][]byte {
			if left == 0 {
				return nil
			}
			b := s.next(min(cfg.Batch, left))
			left -= len(b)
			return b
		}
	}
	return out
}

// markSample is sample of the n marks markFeeds draws, spread evenly over
// each goroutine's share.
func markSample(cfg Config, n, sample int) [][]byte {
	k := max(1, n/sample)
	var ids [][]byte
	for g := range cfg.Concurrency {
		ids = append(ids, newIDStream(cfg.Shape, markSeed+uint64(g)).every(share(n, cfg.Concurrency, g), k)...)
	}
	return ids[:min(sample, len(ids))]
}

// share is the g-th of parts nearly equal shares of n.
func share(n, parts, g int) int {
	return n*(g+1)/parts - n*g/parts
}

// defaultCacheSize is what Options.CacheSize zero means.
const defaultCacheSize = 64 << 20

// cacheSize is the store's block cache in a run of cfg.
func cacheSize(cfg Config) int64 {
	if cfg.CacheSize == 0 {
		return defaultCacheSize
	}
	return cfg.CacheSize
}

// withBatch is cfg with another batch size.
func withBatch(cfg Config, batch int) Config {
	cfg.Batch = batch
	return cfg
}

// timeOnce times one call of f as res's only call, with its CPU time.
func timeOnce(cfg Config, res *Result, f func() error) error {
	step(cfg, res.Workload)
	cpu0 := cpuTime()
	start := time.Now()
	if err := f(); err != nil {
		return err
	}
	res.Elapsed = time.Since(start)
	res.P50, res.P99 = res.Elapsed, res.Elapsed
	res.CPUPerMillion = (cpuTime() - cpu0).Seconds() / float64(res.IDs) * 1e6
	return nil
}

// step tells cfg.Progress that an untimed step, or a one-call row, began.
func step(cfg Config, name string) {
	if cfg.Progress != nil {
		cfg.Progress(name, 0)
	}
}
