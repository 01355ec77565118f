package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
)

func newCompact(g *globals) *cobra.Command {
	var trustClock bool
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Drop expired generations, checkpoint, trim the WAL and compact the index now",
		Long: `Checkpoints the store, which drops the generations whose marks have all
expired and removes the WAL segments behind the checkpoint, then has Pebble
compact the whole index so that their space is given back at once. Prints
the sizes before and after; disk bytes is measured as stats measures it,
before the store is opened and after it is closed. The store must exist.
On a terminal a spinner shows on stderr while it runs.

A store last open before the machine booted cannot tell the time it was
closed from a forward step of the wall clock, so it keeps the generations
that ended meanwhile until the clock has held for ClockJumpGrace (1h) of
running; compact says on stderr how many it kept. --trust-clock takes the
wall clock as right and drops them now: use it only when the clock is
known to be right.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := g.needDir()
			if err != nil {
				return err
			}
			var before, after compactSizes
			if before.DiskBytes, err = admin.DiskBytes(dir); err != nil {
				return err
			}
			opts := readWrite
			opts.TrustClock = trustClock
			kept := 0
			err = g.withStore(cmd, opts, func(s *dedup.Store) error {
				before.setStats(s.Stats())
				spin := newSpinner(cmd.ErrOrStderr(), "compacting")
				wall := time.Now()
				err := s.Compact(cmd.Context())
				spin.Finish()
				st := s.Stats()
				after.setStats(st)
				for _, gen := range st.Generations {
					if !gen.Ends.After(wall) {
						kept++
					}
				}
				return err
			})
			if err != nil {
				return err
			}
			if kept > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "dedupctl: compact kept %d of the generations that ended by the wall clock, which the store has not confirmed yet; --trust-clock drops them if the clock is right\n", kept)
			}
			if after.DiskBytes, err = admin.DiskBytes(dir); err != nil {
				return err
			}
			return printCompaction(cmd, g, before, after)
		},
	}
	cmd.Flags().BoolVar(&trustClock, "trust-clock", false, "drop the generations that ended by the wall clock even if the store has not confirmed it (Options.TrustClock)")
	return cmd
}

// compactSizes are the sizes compact prints, before and after.
type compactSizes struct {
	DiskBytes   int64 `json:"disk_bytes"`
	WALBytes    int64 `json:"wal_bytes"`
	WALSegments int   `json:"wal_segments"`
	Generations int   `json:"generations"`
}

func (c *compactSizes) setStats(st dedup.Stats) {
	c.WALBytes, c.WALSegments, c.Generations = st.WALBytes, st.WALSegments, len(st.Generations)
}

func printCompaction(cmd *cobra.Command, g *globals, before, after compactSizes) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(struct {
			Before compactSizes `json:"before"`
			After  compactSizes `json:"after"`
		}{before, after})
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\tbefore\tafter")
	fmt.Fprintf(w, "disk bytes\t%d\t%d\n", before.DiskBytes, after.DiskBytes)
	fmt.Fprintf(w, "WAL bytes\t%d\t%d\n", before.WALBytes, after.WALBytes)
	fmt.Fprintf(w, "WAL segments\t%d\t%d\n", before.WALSegments, after.WALSegments)
	fmt.Fprintf(w, "generations\t%d\t%d\n", before.Generations, after.Generations)
	return w.Flush()
}
