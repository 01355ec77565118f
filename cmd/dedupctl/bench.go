package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/bench"
)

func newBench(g *globals) *cobra.Command {
	cfg := bench.Config{}
	var sync string
	workloads := bench.Workloads
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the benchmark workloads against a fresh store and the baselines",
		Long: `Runs each workload against a fresh store in a temporary directory (or under
--dir) and prints IDs/s, call latency and the ratio to the raw Pebble baseline,
all measured in this one run. With no flags it is a quick run of under a minute.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			mode, err := parseSync(sync)
			if err != nil {
				return err
			}
			if cfg.IDs <= 0 || cfg.Batch <= 0 {
				return usageError{fmt.Errorf("--ids and --batch must be positive")}
			}
			cfg.Sync = mode
			if cfg.Dir == "" {
				cfg.Dir = g.dir
			}
			if cfg.Dir == "" {
				if cfg.Dir, err = os.MkdirTemp("", "dedupctl-bench-"); err != nil {
					return err
				}
				defer os.RemoveAll(cfg.Dir)
			}
			bar := newBar(cmd.ErrOrStderr(), int64(cfg.IDs))
			cfg.Progress = func(w string, done int) {
				bar.Describe(w)
				bar.Set(done)
			}
			results, err := bench.Run(cfg, workloads)
			bar.Finish()
			if err != nil {
				return err
			}
			return printResults(cmd, g, results)
		},
	}
	cmd.Flags().IntVar(&cfg.IDs, "ids", 1_000_000, "IDs per workload")
	cmd.Flags().IntVar(&cfg.Batch, "batch", 1024, "IDs per call")
	cmd.Flags().StringVar(&sync, "sync", "always", "durability: always, interval or none")
	cmd.Flags().StringSliceVar(&workloads, "workload", workloads, "workloads to run")
	return cmd
}

func parseSync(s string) (dedup.SyncMode, error) {
	for _, m := range []dedup.SyncMode{dedup.SyncAlways, dedup.SyncInterval, dedup.SyncNone} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, usageError{fmt.Errorf("--sync must be always, interval or none, not %q", s)}
}

func printResults(cmd *cobra.Command, g *globals, results []bench.Result) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(results)
	}
	var base float64
	for _, r := range results {
		if r.Workload == "pebble-batch-insert" {
			base = r.IDsPerSecond()
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "workload\tIDs\tbatch\tIDs/s\tp50/call\tp99/call\tnew\tvs pebble\t")
	for _, r := range results {
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2fx", r.IDsPerSecond()/base)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%v\t%v\t%d\t%s\t\n", r.Workload, r.IDs, r.Batch, r.IDsPerSecond(),
			r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.New, ratio)
	}
	return w.Flush()
}
