package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
)

// openStore opens the store under --dir with opts, sending the store's
// log records at --log-level and above to the command's stderr. A
// read-only store is never created or changed.
func (g *globals) openStore(cmd *cobra.Command, opts dedup.Options) (*dedup.Store, error) {
	dir, err := g.needDir()
	if err != nil {
		return nil, err
	}
	opts.Logger = g.logger(cmd)
	return dedup.Open(dir, &opts)
}

// logger returns the logger of the store's records at --log-level and
// above, on the command's stderr.
func (g *globals) logger(cmd *cobra.Command) *slog.Logger {
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: g.logLevel}))
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

// The options of the commands: those that only look; those that change
// marks but need a store to be there already, so that a mistyped --dir is
// an error and not a new, empty store; and those that exist to write new
// marks (mark, filter, import), which create the store if it is missing.
var (
	readOnly  = dedup.Options{ReadOnly: true}
	readWrite = dedup.Options{MustExist: true}
	create    = dedup.Options{}
)

// checkTTL checks a --ttl flag against what the store accepts, before
// the command opens the store or reads its input.
func checkTTL(ttl time.Duration) error {
	if ttl < 0 || ttl > dedup.DefaultMaxTTL {
		return usageError{fmt.Errorf("--ttl %v is outside (0, %v]; 0 means the default, 24h", ttl, dedup.DefaultMaxTTL)}
	}
	return nil
}

func newMark(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "mark ID...",
		Short: "Check-and-mark IDs, as CheckAndMark does; prints whether each was new",
		Long: `Check-and-marks each ID, as CheckAndMark does, and prints whether it was
new. The store is created if missing.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTTL(ttl); err != nil {
				return err
			}
			return g.withStore(cmd, create, func(s *dedup.Store) error {
				ids := argIDs(args)
				isNew, err := s.CheckAndMarkBatch(ids, ttl)
				if err != nil {
					return err
				}
				return printIDs(cmd, g, ids, "new", isNew)
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "TTL of the marks, at most 168h (0: the store's default, 24h)")
	return cmd
}

func argIDs(args []string) [][]byte {
	ids := make([][]byte, len(args))
	for i, a := range args {
		ids[i] = []byte(a)
	}
	return ids
}

func newSeen(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:         "get ID...",
		Short:       "Tell whether IDs have a live mark, without marking them",
		Args:        usageArgs(cobra.MinimumNArgs(1)),
		Annotations: map[string]string{remoteAnnotation: "yes", redisAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			ids := argIDs(args)
			if g.redis != nil {
				return seenRedis(cmd, g, ids)
			}
			if c := g.remote; c != nil {
				seen := make([]bool, 0, len(ids))
				err := c.lines(cmd, g, "/get", url.Values{"id": args}, func(line []byte) error {
					var l admin.SeenLine
					if err := json.Unmarshal(line, &l); err != nil {
						return c.broken(err)
					}
					seen = append(seen, l.Live)
					return nil
				})
				if err != nil || g.output == "json" {
					return err
				}
				if len(seen) != len(ids) {
					return c.broken(fmt.Errorf("%d answers for %d IDs", len(seen), len(ids)))
				}
				return printIDs(cmd, g, ids, "live", seen)
			}
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				seen := make([]bool, len(ids))
				for i, id := range ids {
					var err error
					if seen[i], err = s.Seen(id); err != nil {
						return err
					}
				}
				return printIDs(cmd, g, ids, "live", seen)
			})
		},
	}
}

func newForget(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "forget ID...",
		Short: "Remove the marks of IDs, so that they are new again",
		Long: `Removes the marks of the IDs, so that they are new again, and prints whether
each had a live mark. The store must exist.`,
		Args:        usageArgs(cobra.MinimumNArgs(1)),
		Annotations: map[string]string{redisAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.redis != nil {
				return forgetRedis(cmd, g, argIDs(args))
			}
			return g.withStore(cmd, readWrite, func(s *dedup.Store) error {
				ids := argIDs(args)
				had := make([]bool, len(ids))
				for i, id := range ids {
					var err error
					if had[i], err = s.Seen(id); err != nil {
						return err
					}
					if err := s.Forget(id); err != nil {
						return err
					}
				}
				return printIDs(cmd, g, ids, "was_live", had)
			})
		},
	}
}

// printIDs prints a boolean answer, named field, for each ID: a table, or
// JSON Lines.
func printIDs(cmd *cobra.Command, g *globals, ids [][]byte, field string, vals []bool) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		enc := json.NewEncoder(out)
		for i, id := range ids {
			j := admin.NewID(id)
			line := map[string]any{"id": j.Text, field: vals[i]}
			if j.Base64 {
				line["id_base64"] = true
			}
			if err := enc.Encode(line); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "ID\t%s\n", field)
	for i, id := range ids {
		fmt.Fprintf(w, "%s\t%v\n", displayID(id), vals[i])
	}
	return w.Flush()
}

func newStats(g *globals) *cobra.Command {
	var wf watchFlags
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print the store's sizes, generations and WAL state",
		Long: `Prints the store's sizes, generations and WAL state. disk bytes is the
size of every file under --dir added up, as du -sb counts it; compact
reports the same measure. With --addr, the JSON also holds the counters
of the process's store since it opened it.

` + watchHelp,
		Args:        usageArgs(cobra.NoArgs),
		Annotations: map[string]string{remoteAnnotation: "yes", redisAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := wf.check(cmd, g); err != nil {
				return err
			}
			if wf.on {
				return watch(cmd, g, wf)
			}
			if g.redis != nil {
				return statsRedis(cmd, g)
			}
			if c := g.remote; c != nil {
				var r admin.StatsReport
				return c.document(cmd, g, "/stats", nil, &r, func() error { return printStats(cmd, g, r) })
			}
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				r, err := admin.Stats(s)
				if err != nil {
					return err
				}
				return printStats(cmd, g, r)
			})
		},
	}
	wf.register(cmd)
	return cmd
}

func printStats(cmd *cobra.Command, g *globals, r admin.StatsReport) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(r)
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "format version\t%d\n", r.FormatVersion)
	fmt.Fprintf(w, "marks\t%d\n", r.Marks)
	fmt.Fprintf(w, "effective window\t%v\n", r.EffectiveWindow)
	fmt.Fprintf(w, "memtable marks\t%d\n", r.MemtableMarks)
	fmt.Fprintf(w, "filter bytes\t%d\n", r.FilterBytes)
	fmt.Fprintf(w, "filter FP estimate\t%.4f\n", r.FilterFPEstimate)
	fmt.Fprintf(w, "disk bytes\t%d\n", r.DiskBytes)
	fmt.Fprintf(w, "WAL segments\t%d\n", r.WALSegments)
	fmt.Fprintf(w, "WAL bytes\t%d\n", r.WALBytes)
	fmt.Fprintf(w, "last LSN\t%d\n", r.LastLSN)
	fmt.Fprintf(w, "checkpoint LSN\t%d\n", r.CheckpointLSN)
	fmt.Fprintln(w, "\ngeneration ends\tspan\tmarks\tfilters\tfilter bytes\tFP rate")
	for _, gen := range r.Generations {
		fmt.Fprintf(w, "%s\t%v\t%d\t%d\t%d\t%.4f\n", gen.Ends.UTC().Format(time.RFC3339), gen.Span, gen.Marks, gen.Filters, gen.FilterBytes, gen.FalsePositiveRate)
	}
	return w.Flush()
}
