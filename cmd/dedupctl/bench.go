package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/bench"
)

func newBench(g *globals) *cobra.Command {
	cfg := bench.Config{Workloads: bench.Workloads, Baselines: bench.Baselines}
	var sync, shape, results string
	var curve []int
	var sample int
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the benchmark workloads against a fresh store and the baselines",
		Long: `Runs each workload against a fresh store, and each baseline (raw bloom/v3,
raw Pebble, the hand-written Pebble Get-then-Set loop, Redis SET NX PX) in a
fresh directory of its own, in a temporary directory (or under --dir), and
prints per row IDs/s, p50 and p99 latency per call, CPU-seconds per million
IDs, resident memory and disk bytes per live mark, and the ratio to each
baseline, all measured in this one run.

Workloads: ` + strings.Join(bench.Workloads, ", ") + `.
Baselines: ` + strings.Join(bench.Baselines, ", ") + `.
On a Redis Cluster, run only when named: ` + strings.Join(bench.ClusterRows, ", ") + `.
--workload none or --baseline none runs none of them.
The Redis rows (redis-new, the Redis backend; redis-set-nx, its raw baseline)
start their own redis-server from PATH, persisting as --sync asks; without one
they are skipped, and say so. The Cluster rows start six (three primaries with
a replica each, with redis-cli), which takes seconds, so they run only when
--workload or --baseline names them.

With no flags it is the quick run of the README, under a minute. --results DIR
also writes DIR/results.json and DIR/chart.svg; without it nothing is written.

--rounds N sets every row up first and then times the rows in turn, N rounds
of each, each round a 1/N share of the row's IDs: on a machine whose load moves
from minute to minute, a row and its baseline are then timed in the same
minutes. This process's resident memory is not measured then, as the rows set
up share it; the Redis rows' (their own redis-server's used_memory) is, summed
over the rounds, as is that server's CPU time. Open and replay, one call each,
cannot run in rounds. The raw Pebble rows get the store's block cache (--cache),
and the memtable Pebble reserves out of it, whatever --rounds says.

--curve N,N,... runs the cost curve instead: at each size, one store of N
marks is built (the new row) and compacted, and --sample of its marks are
looked up again (cold-duplicates), --sample absent IDs are looked up with Seen
(seen-absent), and the store is reopened (open); raw Pebble and a bloom/v3
filter get the same N marks, and the same lookups (pebble-batch-insert,
pebble-get, bloom-test). It prints resident memory and disk per mark, and
--results DIR writes DIR/curve.json and DIR/curve.svg. --ids, --workload and
--baseline do not apply to it. Resident memory is measured in one process
across the sizes: build dedupctl with CGO_ENABLED=0 for figures past the
first size (see bench.CgoMemory).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			mode, err := parseSync(sync)
			if err != nil {
				return err
			}
			cfg.Sync = mode
			cfg.Shape = bench.Shape(shape)
			cfg.Logger = g.logger(cmd)
			if !slices.Contains(bench.Shapes, cfg.Shape) {
				return usageError{fmt.Errorf("--shape must be one of %v, not %q", bench.Shapes, shape)}
			}
			if cfg.IDs <= 0 || cfg.Batch <= 0 || cfg.Concurrency <= 0 {
				return usageError{fmt.Errorf("--ids, --batch and --concurrency must be positive")}
			}
			for _, list := range []*[]string{&cfg.Workloads, &cfg.Baselines} {
				if slices.Equal(*list, []string{"none"}) {
					*list = nil
				}
			}
			for _, w := range slices.Concat(cfg.Workloads, cfg.Baselines) {
				if !slices.Contains(bench.Workloads, w) && !slices.Contains(bench.Baselines, w) && !slices.Contains(bench.ClusterRows, w) {
					return usageError{fmt.Errorf("unknown workload or baseline %q", w)}
				}
			}
			if cfg.Dir == "" {
				cfg.Dir = g.dir
			}
			if cmd.Flags().Changed("curve") {
				return runCurve(cmd, g, cfg, curve, sample, results)
			}
			if cfg.Dir == "" {
				if cfg.Dir, err = os.MkdirTemp("", "dedupctl-bench-"); err != nil {
					return err
				}
				defer os.RemoveAll(cfg.Dir)
			} else if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
				return err
			}
			bar := newBar(cmd.ErrOrStderr(), int64(cfg.IDs))
			cfg.Progress = func(row string, done int) {
				bar.Describe(row)
				bar.Set(done)
			}
			rows, err := bench.Run(cfg)
			bar.Finish()
			if err != nil {
				return err
			}
			for _, r := range rows {
				if r.Skipped != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "bench: %s skipped: %s\n", r.Workload, r.Skipped)
				}
			}
			if results != "" {
				if err := bench.WriteResults(results, rows); err != nil {
					return err
				}
			}
			return printResults(cmd, g, rows)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.IDs, "ids", 1_000_000, "IDs per workload and baseline")
	f.IntVar(&cfg.Batch, "batch", 1024, "IDs per call; rows whose API takes one ID use 1")
	f.IntVar(&cfg.Concurrency, "concurrency", 1, "goroutines sharing the IDs")
	f.StringVar(&shape, "shape", string(bench.Bytes16), "ID shape: bytes16 (16 random bytes) or uuid (36-byte string)")
	f.StringVar(&sync, "sync", "always", "durability of the store and the baselines: always, interval or none")
	f.Int64Var(&cfg.CacheSize, "cache", 0, "the store's block cache in bytes (Options.CacheSize; 0: its default, 64 MiB)")
	f.IntVar(&cfg.Rounds, "rounds", 1, "above 1, set every row up first and time them in turn, this many rounds of each, so that rows compared share the machine's load")
	f.StringSliceVar(&cfg.Workloads, "workload", cfg.Workloads, "workloads to run, or none")
	f.StringSliceVar(&cfg.Baselines, "baseline", cfg.Baselines, "baselines to run, or none")
	f.StringVar(&results, "results", "", "directory to write results.json and chart.svg (curve.json and curve.svg with --curve) to (default: write nothing)")
	f.IntSliceVar(&curve, "curve", nil, "run the cost curve at these numbers of marks, e.g. 1000000,10000000")
	f.IntVar(&sample, "sample", 1_000_000, "with --curve, IDs each read row looks up")
	return cmd
}

// runCurve runs the cost curve of the run cfg describes at each of sizes
// and prints it; results, if set, is the directory it is written to.
func runCurve(cmd *cobra.Command, g *globals, cfg bench.Config, sizes []int, sample int, results string) error {
	for _, n := range sizes {
		if n <= 0 {
			return usageError{fmt.Errorf("--curve sizes must be positive, not %d", n)}
		}
	}
	if len(sizes) == 0 || sample <= 0 {
		return usageError{fmt.Errorf("--curve needs a size, and --sample must be positive")}
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "dedupctl-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	} else if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	if bench.CgoMemory && len(sizes) > 1 {
		fmt.Fprintln(cmd.ErrOrStderr(), "bench: built with cgo, Pebble's memory is malloc's, which keeps what earlier rows free:"+
			" memory figures after the first size miss what the store reuses of it (build with CGO_ENABLED=0, or run one size per process)")
	}
	bar := newSpinner(cmd.ErrOrStderr(), "curve")
	c, err := bench.RunCurve(bench.CurveConfig{Dir: cfg.Dir, Marks: sizes, Sample: sample, Batch: cfg.Batch,
		Concurrency: cfg.Concurrency, Shape: cfg.Shape, Sync: cfg.Sync, CacheSize: cfg.CacheSize, Logger: cfg.Logger,
		Progress: func(step string, done int) {
			bar.Describe(step)
			bar.Set(done)
		}})
	bar.Finish()
	if err != nil {
		return err
	}
	if results != "" {
		if err := bench.WriteCurve(results, c); err != nil {
			return err
		}
	}
	if g.output == "json" {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(c)
	}
	for _, pt := range c.Points {
		fmt.Fprintf(cmd.OutOrStdout(), "== %d marks; the read rows look up %d IDs each\n", pt.Marks, min(sample, pt.Marks))
		if err := printResults(cmd, g, pt.Rows); err != nil {
			return err
		}
		m := pt.Memory
		fmt.Fprintf(cmd.OutOrStdout(), "store RSS %d B (Go %d B) over a %d B baseline (Go %d B): %.2f B per mark, %.2f B beyond %d B of block cache",
			m.StoreRSS, m.StoreGo, m.BaseRSS, m.BaseGo, m.PerMark, m.BeyondCachesPerMark, m.CacheBytes)
		if m.MarginalPerMark != 0 {
			fmt.Fprintf(cmd.OutOrStdout(), ", %.2f B beyond it per mark added since the last size", m.MarginalPerMark)
		}
		perMark := func(b int64) float64 { return float64(b) / float64(pt.Marks) }
		fmt.Fprintf(cmd.OutOrStdout(), "; filters %.2f B, index tables %.2f B, WAL %.2f B per mark\n",
			perMark(int64(m.FilterBytes)), perMark(int64(m.IndexTableBytes)), perMark(m.WALBytes))
		fmt.Fprintf(cmd.OutOrStdout(), "Go memory grown per mark: heap objects %.2f B, free room in part-full heap spans %.2f B, runtime %.2f B\n\n",
			perMark(m.StoreHeap.Objects-m.BaseHeap.Objects), perMark(m.StoreHeap.Unused-m.BaseHeap.Unused),
			perMark(m.StoreHeap.Runtime-m.BaseHeap.Runtime))
	}
	return nil
}

func parseSync(s string) (dedup.SyncMode, error) {
	for _, m := range []dedup.SyncMode{dedup.SyncAlways, dedup.SyncInterval, dedup.SyncNone} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, usageError{fmt.Errorf("--sync must be always, interval or none, not %q", s)}
}

// printResults prints the rows as JSON or as a table with a ratio column
// per baseline that ran.
func printResults(cmd *cobra.Command, g *globals, results []bench.Result) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(results)
	}
	var base []string
	for _, r := range results {
		if r.Baseline && r.Skipped == "" {
			base = append(base, r.Workload)
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "row\tIDs/s\tp50/call\tp99/call\tCPU-s/M IDs\tRSS B/mark\tdisk B/mark\tnew\t")
	for _, b := range base {
		fmt.Fprintf(w, "vs %s\t", b)
	}
	fmt.Fprintln(w)
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(w, "%s\tskipped\t\t\t\t\t\t\t%s\n", r.Workload, strings.Repeat("\t", len(base)))
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%v\t%.2f\t%s\t%s\t%d\t", r.Workload, bench.Rate(r.IDsPerSecond()),
			short(r.P50), short(r.P99),
			r.CPUPerMillion, orDash(r.RSSPerMark), orDash(r.DiskPerMark), r.New)
		for _, b := range base {
			fmt.Fprintf(w, "%.2fx\t", r.Ratios[b])
		}
		fmt.Fprintln(w)
	}
	if len(results) > 0 {
		r := results[0]
		ids := fmt.Sprintf("%d %s IDs per row", r.IDs, r.Shape)
		if slices.ContainsFunc(results, func(o bench.Result) bool { return o.IDs != r.IDs }) {
			ids = fmt.Sprintf("%s IDs, %d in the first row", r.Shape, r.IDs)
		}
		fmt.Fprintf(w, "\n%s, batch %d (1 for one-ID APIs), %d goroutines, sync %s\n",
			ids, r.Batch, r.Concurrency, r.Sync)
	}
	return w.Flush()
}

// short rounds d to three significant digits.
func short(d time.Duration) time.Duration {
	for unit := time.Nanosecond; ; unit *= 10 {
		if d < 1000*unit {
			return d.Round(unit)
		}
	}
}

// orDash prints bytes per mark, or "-" where the row has none.
func orDash(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", x)
}
