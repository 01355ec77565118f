// Package bench runs the store's benchmark workloads and the baselines
// they are compared with, in one process, so that every figure is a ratio
// measured on the same machine at the same time.
//
// A row is a workload (the store under one mix of IDs) or a baseline (what
// a user would use instead: raw bloom/v3, raw Pebble, a hand-written Pebble
// loop, Redis). Each row gets a fresh directory. Its setup (marking IDs a
// workload re-checks, filling a filter or a Pebble) is untimed; Run times
// only the calls, and reads the process's CPU time, RSS and the row's disk
// use around them.
//
// RunCurve measures how the costs grow with the marks held: at each size it
// builds one store, and one raw Pebble, of that many marks, timing the
// build, and runs the read rows on them.
package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seed42300104/dedup"
)

// Config is one benchmark run. Every row of the run uses the same IDs,
// batch size, concurrency and durability.
type Config struct {
	// Dir holds the rows' directories, each removed after its row.
	Dir string
	// IDs is the number of IDs each row feeds to its calls.
	IDs int
	// Batch is the number of IDs per call. Rows whose API takes one ID
	// (Seen, bloom Test, Pebble Get) use 1.
	Batch int
	// Concurrency is the number of goroutines that share the IDs, each
	// calling with its own contiguous part.
	Concurrency int
	// Shape is the form of the IDs. Zero means Bytes16.
	Shape Shape
	// Sync is the durability of the store and of the baselines that write.
	Sync dedup.SyncMode
	// CacheSize is the store's Options.CacheSize. Zero means its default.
	CacheSize int64
	// Logger is the stores' Options.Logger. Nil means silent: the rows
	// open and close many stores.
	Logger *slog.Logger
	// Workloads and Baselines name the rows to run, in order, from
	// Workloads and Baselines (the package variables) or ClusterRows.
	Workloads, Baselines []string
	// Rounds, above 1, times the rows in turn instead of one after the
	// other: every row is set up first, then each round times the next
	// 1/Rounds of each row's IDs, row after row, and a row's figures are
	// the sums over its rounds. Rows compared in one window of time share
	// whatever else the machine runs, which moves from minute to minute on
	// a shared one. This process's resident memory per mark is then not
	// measured, as the rows' setups share it; a server's (the Redis rows')
	// is, summed over the rounds, as each row has its own. Open and
	// replay, one call each, cannot be cut into rounds.
	Rounds int
	// Progress, if set, is told every 100ms, and at the end of a row, how
	// many of its IDs are done. It is never called concurrently.
	Progress func(row string, done int)
}

// TTL is the time to live of every mark the rows write, in the store and
// in Redis alike.
const TTL = 24 * time.Hour

// Result is what one row measured.
type Result struct {
	Workload    string        `json:"workload"`
	Baseline    bool          `json:"baseline"`
	Shape       Shape         `json:"shape"`
	Sync        string        `json:"sync"`
	IDs         int           `json:"ids"`
	Batch       int           `json:"batch"`
	Concurrency int           `json:"concurrency"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	// P50 and P99 are the latencies of one call (a batch, or one ID),
	// from a sample of the calls.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// New counts the IDs a write reported new; for a read (Seen, Test,
	// Get) it counts the IDs reported present.
	New int `json:"new"`
	// CPUPerMillion is the CPU time, user and system, per million IDs, in
	// seconds: this process's, plus redis-server's (every node's of a
	// Cluster) for the Redis rows.
	CPUPerMillion float64 `json:"cpu_seconds_per_million"`
	// RSSPerMark is the growth of resident memory per live mark, in bytes:
	// this process's after a GC, or redis-server's used_memory (the sum
	// of a Cluster's nodes, replicas included). Zero where the row holds
	// no marks, and with Config.Rounds where the row has no server.
	RSSPerMark float64 `json:"rss_bytes_per_mark,omitempty"`
	// DiskPerMark is the row's directory size per live mark, in bytes, as
	// du counts it (preallocated WAL space included). Zero where the row
	// keeps nothing on disk.
	DiskPerMark float64 `json:"disk_bytes_per_mark,omitempty"`
	// Ratios is this row's IDs/s over each baseline's that ran.
	Ratios map[string]float64 `json:"ratios,omitempty"`
	// Skipped says why the row did not run; the other fields are then zero.
	Skipped string `json:"skipped,omitempty"`
}

// IDsPerSecond is the throughput.
func (r Result) IDsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.IDs) / r.Elapsed.Seconds()
}

// trial is a row after its untimed setup: what Run times and measures.
type trial struct {
	// call handles one batch and returns how many IDs it found new (or,
	// for a read, present).
	call func(ids [][]byte) (int, error)
	// marks is the number of live marks once the calls are done; nil
	// means RSS and disk per mark are meaningless for the row.
	marks func() int
	// dir is measured for disk per mark; "" means nothing is on disk.
	dir string
	// external, if set, reports the CPU time and memory of a server
	// process: Run adds their growth to the row's.
	external func() (cpu time.Duration, mem int64, err error)
	// close releases what setup opened or started.
	close func() error
}

// count is the number of live marks, or 0 where it is meaningless.
func (t trial) count() int {
	if t.marks == nil {
		return 0
	}
	return t.marks()
}

// errSkip makes Run skip a row and say why.
type errSkip struct{ reason string }

func (e errSkip) Error() string { return e.reason }

// row is a workload or a baseline.
type row struct {
	name     string
	baseline bool
	// single says the row's API takes one ID per call.
	single bool
	// whole says the row takes all its IDs in one call, on one goroutine.
	whole bool
	// cluster says the row runs on a Redis Cluster: only when named.
	cluster bool
	// input returns the IDs the calls get, building every set of IDs the
	// row uses, so that they exist before the row's memory is measured.
	input func(in *inputs) [][]byte
	// setup prepares the row in dir, untimed.
	setup func(cfg Config, in *inputs, dir string) (trial, error)
}

// Run runs cfg's workloads and then its baselines, and returns a result per
// row with its ratios to every baseline that ran. A baseline that cannot
// run here (no redis-server) is a Result with Skipped set, not an error.
func Run(cfg Config) ([]Result, error) {
	if cfg.IDs <= 0 || cfg.Batch <= 0 || cfg.Concurrency <= 0 {
		return nil, fmt.Errorf("bench: IDs, Batch and Concurrency must be positive")
	}
	if cfg.Shape == "" {
		cfg.Shape = Bytes16
	}
	if !slices.Contains(Shapes, cfg.Shape) {
		return nil, fmt.Errorf("bench: unknown ID shape %q (known: %v)", cfg.Shape, Shapes)
	}
	var rows []row
	for _, names := range []struct {
		names []string
		known []row
	}{{cfg.Workloads, workloads}, {cfg.Baselines, baselines}} {
		for _, name := range names.names {
			i := slices.IndexFunc(names.known, func(r row) bool { return r.name == name })
			if i < 0 {
				return nil, fmt.Errorf("bench: unknown row %q (workloads: %v; baselines: %v; on a Cluster: %v)", name, Workloads, Baselines, ClusterRows)
			}
			rows = append(rows, names.known[i])
		}
	}
	return run(cfg, rows)
}

// run is Run on rows, cfg checked: a result per row, each with its ratios
// to every baseline that ran.
func run(cfg Config, rows []row) ([]Result, error) {
	in := &inputs{shape: cfg.Shape, n: cfg.IDs}
	if cfg.Rounds > 1 {
		return runRounds(cfg, in, rows)
	}
	var out []Result
	for _, r := range rows {
		res, err := runRow(cfg, in, r)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", r.name, err)
		}
		out = append(out, res)
	}
	setRatios(out)
	return out, nil
}

// setRatios sets each result's ratio to every baseline that ran.
func setRatios(results []Result) {
	for i := range results {
		for _, b := range results {
			if !b.Baseline || b.Skipped != "" || results[i].Skipped != "" || b.IDsPerSecond() == 0 {
				continue
			}
			if results[i].Ratios == nil {
				results[i].Ratios = map[string]float64{}
			}
			results[i].Ratios[b.Workload] = results[i].IDsPerSecond() / b.IDsPerSecond()
		}
	}
}

// runRow sets r up in a fresh directory under cfg.Dir, times it and removes
// the directory.
func runRow(cfg Config, in *inputs, r row) (Result, error) {
	if r.single {
		cfg.Batch = 1
	}
	if r.whole {
		cfg.Batch, cfg.Concurrency = cfg.IDs, 1
	}
	res := newResult(r.name, r.baseline, cfg, cfg.IDs)
	dir, err := os.MkdirTemp(cfg.Dir, r.name+"-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	ids := r.input(in) // input, not the row's memory
	rss0 := rss()
	t, err := r.setup(cfg, in, dir)
	if skip := (errSkip{}); errors.As(err, &skip) {
		res.Skipped = skip.reason
		return res, nil
	}
	if err != nil {
		return res, err
	}
	err = measure(cfg, r.name, feeds(ids, cfg.Concurrency, cfg.Batch), len(ids), t, rss0, &res)
	return res, errors.Join(err, t.close())
}

// runRounds is Run for cfg.Rounds above 1: it sets every row up, then
// times the rows in turn, a round of each at a time.
func runRounds(cfg Config, in *inputs, rows []row) (out []Result, err error) {
	type running struct {
		row
		cfg  Config
		ids  [][]byte
		t    trial
		used usage // summed over the rounds so far
		res  *Result
	}
	out = make([]Result, 0, len(rows)) // rs points into it
	var rs []*running
	var dirs []string
	defer func() {
		for _, r := range rs {
			err = errors.Join(err, r.t.close())
		}
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}()
	for _, r := range rows {
		if r.whole {
			return nil, fmt.Errorf("bench: %s is one call, which rounds cannot cut", r.name)
		}
		rc := cfg
		if r.single {
			rc.Batch = 1
		}
		res := newResult(r.name, r.baseline, rc, cfg.IDs)
		out = append(out, res)
		dir, err := os.MkdirTemp(cfg.Dir, r.name+"-")
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, dir)
		ids := r.input(in)
		t, err := r.setup(rc, in, dir)
		if skip := (errSkip{}); errors.As(err, &skip) {
			out[len(out)-1].Skipped = skip.reason
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", r.name, err)
		}
		rs = append(rs, &running{row: r, cfg: rc, ids: ids, t: t, res: &out[len(out)-1]})
	}
	lats := make(map[*running][]time.Duration)
	for k := range cfg.Rounds {
		for _, r := range rs {
			part := r.ids[len(r.ids)*k/cfg.Rounds : len(r.ids)*(k+1)/cfg.Rounds]
			var res Result
			l, u, err := timeUsage(r.cfg, r.name, feeds(part, r.cfg.Concurrency, r.cfg.Batch), r.t, &res)
			if err != nil {
				return nil, fmt.Errorf("bench: %s: %w", r.name, err)
			}
			r.used.cpu += u.cpu
			r.used.mem += u.mem
			r.used.memKnown = u.memKnown
			r.res.Elapsed += res.Elapsed
			r.res.New += res.New
			lats[r] = append(lats[r], l...)
		}
	}
	for _, r := range rs {
		r.res.setLatencies(lats[r])
		r.res.setUsage(r.used, len(r.ids), r.t)
	}
	setRatios(out)
	return out, nil
}

// newResult is the result of a row of n IDs run as cfg says, before it
// runs.
func newResult(name string, baseline bool, cfg Config, n int) Result {
	return Result{Workload: name, Baseline: baseline, Shape: cfg.Shape, Sync: cfg.Sync.String(),
		IDs: n, Batch: cfg.Batch, Concurrency: cfg.Concurrency}
}

// measure times t's calls on in, n IDs in all, and reads the CPU, memory
// and disk they used. rss0 is this process's resident memory before t's
// setup, for a row without a server.
func measure(cfg Config, name string, in []feed, n int, t trial, rss0 int64, res *Result) error {
	lats, u, err := timeUsage(cfg, name, in, t, res)
	if err != nil {
		return err
	}
	res.setLatencies(lats)
	if !u.memKnown && t.marks != nil { // rss runs a GC: only where it counts
		u.mem, u.memKnown = rss()-rss0, true
	}
	res.setUsage(u, n, t)
	return nil
}

// usage is what a row's calls used: CPU time, this process's plus its
// server's where the row has one, and the growth of the memory that holds
// the row's marks.
type usage struct {
	cpu time.Duration
	mem int64
	// memKnown says mem is measured: the server's is by timeUsage; this
	// process's only by a caller that times the row alone.
	memKnown bool
}

// timeUsage times t's calls on in, as timeCalls does, and reads
// the CPU time they used and, where t has a server, the growth of its
// memory.
func timeUsage(cfg Config, name string, in []feed, t trial, res *Result) ([]time.Duration, usage, error) {
	var server0, server1 time.Duration
	var mem0, mem1 int64
	var err error
	if t.external != nil {
		if server0, mem0, err = t.external(); err != nil {
			return nil, usage{}, err
		}
	}
	self0 := cpuTime()
	lats, err := timeCalls(cfg, name, in, t.call, res)
	if err != nil {
		return nil, usage{}, err
	}
	u := usage{cpu: cpuTime() - self0}
	if t.external != nil {
		if server1, mem1, err = t.external(); err != nil {
			return nil, usage{}, err
		}
		u.cpu += server1 - server0
		u.mem, u.memKnown = mem1-mem0, true
	}
	return lats, u, nil
}

// setUsage sets res's CPU per million IDs from u, what t's calls on n IDs
// used, and, where t holds marks, its disk and (if u knows it) memory per
// mark.
func (res *Result) setUsage(u usage, n int, t trial) {
	res.CPUPerMillion = u.cpu.Seconds() / float64(n) * 1e6
	marks := t.count()
	if marks <= 0 {
		return
	}
	if u.memKnown {
		res.RSSPerMark = max(float64(u.mem), 0) / float64(marks)
	}
	if t.dir != "" {
		res.DiskPerMark = float64(DiskUsage(t.dir)) / float64(marks)
	}
}

// sampleCalls is how many IDs pass between two timed calls: timing every
// call of a 100ns Seen would cost as much as the call.
const sampleCalls = 64

// feed is one goroutine's input: each call returns its next batch, and
// nil once it has none left.
type feed func() [][]byte

// feeds cuts ids into n contiguous parts of nearly equal length, handed
// out batch IDs at a time.
func feeds(ids [][]byte, n, batch int) []feed {
	n = min(n, max(len(ids), 1))
	out := make([]feed, n)
	for i := range out {
		part := ids[len(ids)*i/n : len(ids)*(i+1)/n]
		out[i] = func() [][]byte {
			if len(part) == 0 {
				return nil
			}
			b := part[:min(batch, len(part))]
			part = part[len(b):]
			return b
		}
	}
	return out
}

// setLatencies sets res's percentiles from the sampled latencies of its
// calls, which it sorts.
func (res *Result) setLatencies(all []time.Duration) {
	slices.Sort(all)
	if len(all) > 0 {
		res.P50, res.P99 = all[len(all)/2], all[len(all)*99/100]
	}
}

// timeCalls runs a goroutine per feed, each passing its batches to call,
// fills in the elapsed time and the count of new IDs, and returns the
// sampled latencies of the calls, unsorted.
func timeCalls(cfg Config, name string, in []feed, call func([][]byte) (int, error), res *Result) ([]time.Duration, error) {
	every := max(1, sampleCalls/cfg.Batch)
	lats := make([][]time.Duration, len(in))
	var done, found atomic.Int64
	stop := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if cfg.Progress != nil {
					cfg.Progress(name, int(done.Load()))
				}
			}
		}
	}()

	errs := make([]error, len(in))
	var wg sync.WaitGroup
	start := time.Now()
	for g, next := range in {
		wg.Go(func() {
			for c := 0; ; c++ {
				b := next()
				if b == nil {
					return
				}
				timed := c%every == 0
				var t0 time.Time
				if timed {
					t0 = time.Now()
				}
				n, err := call(b)
				if err != nil {
					errs[g] = err
					return
				}
				if timed {
					lats[g] = append(lats[g], time.Since(t0))
				}
				found.Add(int64(n))
				done.Add(int64(len(b)))
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	close(stop)
	<-progressDone
	if cfg.Progress != nil {
		cfg.Progress(name, int(done.Load()))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res.New = int(found.Load())
	return slices.Concat(lats...), nil
}

// cpuTime is the CPU time, user and system, this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the process's resident memory after a GC that returns free memory
// to the system, or 0 where /proc is missing.
func rss() int64 {
	debug.FreeOSMemory()
	var size, resident int64
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0
	}
	return resident * int64(os.Getpagesize())
}

// goResident is the memory the Go runtime holds from the system, less what
// it has returned: an upper bound of its part of the RSS.
func goResident() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.Sys - ms.HeapReleased)
}

// GoHeap is how the Go runtime's memory divides, from runtime/metrics.
type GoHeap struct {
	// Objects is the memory of live heap objects, each at its size
	// class's size.
	Objects int64 `json:"objects_bytes"`
	// Unused is the free room in heap spans that also hold live objects.
	// The GC frees a dead object, but the span goes back to the system
	// only once all of it is free: objects that die in random order, as
	// the blocks Pebble's block cache evicts do when it lives on the Go
	// heap (no cgo), leave most spans part-full, up to the heap goal
	// that GOGC sets.
	Unused int64 `json:"unused_bytes"`
	// Runtime is the rest the runtime holds but has not returned: stacks,
	// its metadata, profiling buckets, free spans.
	Runtime int64 `json:"runtime_bytes"`
}

// goHeap reads GoHeap; after rss, which runs a GC first.
func goHeap() GoHeap {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	h := GoHeap{Objects: v(0), Unused: v(1)}
	h.Runtime = v(2) - v(3) - h.Objects - h.Unused
	return h
}

// DiskUsage is the space the files under dir take, as du counts it:
// preallocated space included.
func DiskUsage(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

// logger returns the stores' logger: cfg.Logger, or one that discards.
func (cfg Config) logger() *slog.Logger {
	if cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return cfg.Logger
}
