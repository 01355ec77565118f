package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

func newCompact(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "compact",
		Short: "Drop expired generations, checkpoint, trim the WAL and compact the index now",
		Long: `Checkpoints the store, which drops the generations whose marks have all
expired and removes the WAL segments behind the checkpoint, then has Pebble
compact the whole index so that their space is given back at once. Prints
the sizes before and after. On a terminal a spinner shows on stderr while
it runs.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withStore(cmd, readWrite, func(s *dedup.Store) error {
				before := s.Stats()
				spin := newSpinner(cmd.ErrOrStderr(), "compacting")
				err := s.Compact(cmd.Context())
				spin.Finish()
				if err != nil {
					return err
				}
				return printCompaction(cmd, g, before, s.Stats())
			})
		},
	}
}

func printCompaction(cmd *cobra.Command, g *globals, before, after dedup.Stats) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(map[string]dedup.Stats{"before": before, "after": after})
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\tbefore\tafter")
	fmt.Fprintf(w, "index disk bytes\t%d\t%d\n", before.IndexDiskBytes, after.IndexDiskBytes)
	fmt.Fprintf(w, "WAL bytes\t%d\t%d\n", before.WALBytes, after.WALBytes)
	fmt.Fprintf(w, "WAL segments\t%d\t%d\n", before.WALSegments, after.WALSegments)
	fmt.Fprintf(w, "generations\t%d\t%d\n", len(before.Generations), len(after.Generations))
	return w.Flush()
}
