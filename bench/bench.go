// Package bench runs the store's benchmark workloads and the baselines
// they are compared with, in one process, so that every figure is a ratio
// measured on the same machine at the same time.
package bench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/seed42300104/dedup"
)

// Config is one benchmark run.
type Config struct {
	// Dir holds the stores; each workload gets a fresh subdirectory.
	Dir string
	// IDs is the number of IDs each workload checks.
	IDs int
	// Batch is the number of IDs per call.
	Batch int
	// Sync is the durability of the store and of the baselines.
	Sync dedup.SyncMode
	// Progress, if set, is told how many IDs a workload has done.
	Progress func(workload string, done int)
}

// Result is what one workload measured.
type Result struct {
	Workload string        `json:"workload"`
	IDs      int           `json:"ids"`
	Batch    int           `json:"batch"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	// P50 and P99 are the latencies of one call.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// New counts the IDs reported new.
	New int `json:"new"`
}

// IDsPerSecond is the throughput.
func (r Result) IDsPerSecond() float64 { return float64(r.IDs) / r.Elapsed.Seconds() }

// Workloads lists the workloads Run knows, in the order it runs them.
var Workloads = []string{"new", "hot-duplicates", "pebble-batch-insert"}

// Run runs the named workloads.
func Run(cfg Config, workloads []string) ([]Result, error) {
	var out []Result
	for _, w := range workloads {
		if !slices.Contains(Workloads, w) {
			return nil, fmt.Errorf("bench: unknown workload %q (known: %v)", w, Workloads)
		}
		dir, err := os.MkdirTemp(cfg.Dir, w+"-")
		if err != nil {
			return nil, err
		}
		r, err := run(cfg, w, dir)
		os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", w, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func run(cfg Config, workload, dir string) (Result, error) {
	ids := RandomIDs(1, cfg.IDs)
	switch workload {
	case "pebble-batch-insert":
		return pebbleInsert(cfg, dir, ids)
	}
	s, err := dedup.Open(dir, &dedup.Options{Sync: cfg.Sync})
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	if workload == "hot-duplicates" {
		if _, err := batches(cfg, "mark", ids, func(b [][]byte) (int, error) { return checkBatch(s, b) }); err != nil {
			return Result{}, err
		}
	}
	return batches(cfg, workload, ids, func(b [][]byte) (int, error) { return checkBatch(s, b) })
}

func checkBatch(s *dedup.Store, b [][]byte) (int, error) {
	isNew, err := s.CheckAndMarkBatch(b, 0)
	n := 0
	for _, v := range isNew {
		if v {
			n++
		}
	}
	return n, err
}

// batches feeds ids to call in batches and times each call.
func batches(cfg Config, workload string, ids [][]byte, call func([][]byte) (int, error)) (Result, error) {
	r := Result{Workload: workload, IDs: len(ids), Batch: cfg.Batch}
	lat := make([]time.Duration, 0, len(ids)/cfg.Batch+1)
	start := time.Now()
	for i := 0; i < len(ids); i += cfg.Batch {
		t := time.Now()
		n, err := call(ids[i:min(i+cfg.Batch, len(ids))])
		if err != nil {
			return r, err
		}
		lat = append(lat, time.Since(t))
		r.New += n
		if cfg.Progress != nil {
			cfg.Progress(workload, min(i+cfg.Batch, len(ids)))
		}
	}
	r.Elapsed = time.Since(start)
	slices.Sort(lat)
	r.P50, r.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return r, nil
}

// pebbleInsert is the baseline of the index alone: raw Pebble batch
// inserts with Pebble's own WAL at the same durability.
func pebbleInsert(cfg Config, dir string, ids [][]byte) (Result, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: silent{}})
	if err != nil {
		return Result{}, err
	}
	defer db.Close()
	wo := pebble.NoSync
	if cfg.Sync == dedup.SyncAlways {
		wo = pebble.Sync
	}
	val := make([]byte, 8)
	return batches(cfg, "pebble-batch-insert", ids, func(b [][]byte) (int, error) {
		batch := db.NewBatch()
		defer batch.Close()
		for _, id := range b {
			if err := batch.Set(id, val, nil); err != nil {
				return 0, err
			}
		}
		return len(b), batch.Commit(wo)
	})
}

// RandomIDs returns n random 16-byte IDs drawn from seed.
func RandomIDs(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 16*n)
	ids := make([][]byte, n)
	for i := range ids {
		id := buf[16*i : 16*i+16]
		binary.LittleEndian.PutUint64(id, r.Uint64())
		binary.LittleEndian.PutUint64(id[8:], r.Uint64())
		ids[i] = id
	}
	return ids
}

// silent drops Pebble's informational logging.
type silent struct{}

func (silent) Infof(string, ...any)              {}
func (silent) Errorf(string, ...any)             {}
func (silent) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
