package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

// openStore opens the store under --dir with opts, sending the store's
// operational messages to the command's stderr. A read-only store is never
// created or changed.
func (g *globals) openStore(cmd *cobra.Command, opts dedup.Options) (*dedup.Store, error) {
	dir, err := g.needDir()
	if err != nil {
		return nil, err
	}
	stderr := cmd.ErrOrStderr()
	opts.Logf = func(format string, args ...any) {
		fmt.Fprintf(stderr, "dedupctl: %s\n", strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
	}
	return dedup.Open(dir, &opts)
}

// withStore runs fn on the store under --dir, opened with opts, and closes
// it.
func (g *globals) withStore(cmd *cobra.Command, opts dedup.Options, fn func(*dedup.Store) error) (err error) {
	s, err := g.openStore(cmd, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}()
	return fn(s)
}

// readOnly and readWrite are the options of the commands that only look,
// and of those that change the store.
var (
	readOnly  = dedup.Options{ReadOnly: true}
	readWrite = dedup.Options{}
)

func newMark(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "mark ID...",
		Short: "Check-and-mark IDs, as CheckAndMark does; prints whether each was new",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, readWrite, func(s *dedup.Store) error {
				ids := make([][]byte, len(args))
				for i, a := range args {
					ids[i] = []byte(a)
				}
				isNew, err := s.CheckAndMarkBatch(ids, ttl)
				if err != nil {
					return err
				}
				return printIDs(cmd, g, args, "new", isNew)
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "TTL of the marks (0: the store's default, 24h)")
	return cmd
}

func newSeen(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID...",
		Short: "Tell whether IDs have a live mark, without marking them",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				seen := make([]bool, len(args))
				for i, a := range args {
					var err error
					if seen[i], err = s.Seen([]byte(a)); err != nil {
						return err
					}
				}
				return printIDs(cmd, g, args, "live", seen)
			})
		},
	}
}

func newForget(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "forget ID...",
		Short: "Remove the marks of IDs, so that they are new again",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, readWrite, func(s *dedup.Store) error {
				for _, a := range args {
					if err := s.Forget([]byte(a)); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}

func printIDs(cmd *cobra.Command, g *globals, ids []string, field string, vals []bool) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		enc := json.NewEncoder(out)
		for i, id := range ids {
			if err := enc.Encode(map[string]any{"id": id, field: vals[i]}); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "ID\t%s\n", field)
	for i, id := range ids {
		fmt.Fprintf(w, "%s\t%v\n", id, vals[i])
	}
	return w.Flush()
}

func newStats(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Print the store's sizes, generations and WAL state",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				st := s.Stats()
				out := cmd.OutOrStdout()
				if g.output == "json" {
					return json.NewEncoder(out).Encode(st)
				}
				w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "format version\t%d\n", dedup.FormatVersion)
				var marks uint64
				miss := 1.0 // that no filter lets an absent ID through
				for _, gen := range st.Generations {
					marks += gen.Marks
					miss *= 1 - gen.FalsePositiveRate
				}
				fmt.Fprintf(w, "marks\t%d\n", marks)
				fmt.Fprintf(w, "effective window\t%v\n", st.EffectiveWindow)
				fmt.Fprintf(w, "memtable marks\t%d\n", st.MemtableMarks)
				fmt.Fprintf(w, "filter bytes\t%d\n", st.FilterBytes)
				fmt.Fprintf(w, "filter FP estimate\t%.4f\n", 1-miss)
				fmt.Fprintf(w, "index disk bytes\t%d\n", st.IndexDiskBytes)
				fmt.Fprintf(w, "WAL segments\t%d\n", st.WALSegments)
				fmt.Fprintf(w, "last LSN\t%d\n", st.LastLSN)
				fmt.Fprintf(w, "checkpoint LSN\t%d\n", st.CheckpointLSN)
				fmt.Fprintln(w, "\ngeneration ends\tspan\tmarks\tfilters\tfilter bytes\tFP rate")
				for _, gen := range st.Generations {
					fmt.Fprintf(w, "%s\t%v\t%d\t%d\t%d\t%.4f\n", gen.Ends.UTC().Format(time.RFC3339), gen.Span, gen.Marks, gen.Filters, gen.FilterBytes, gen.FalsePositiveRate)
				}
				return w.Flush()
			})
		},
	}
}
