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

func newExplain(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain ID...",
		Short: "Tell whether IDs are live, and what the filters, the unflushed WAL tail and Pebble hold of each",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				for _, a := range args {
					x, err := s.Explain([]byte(a))
					if err != nil {
						return err
					}
					if err := printExplanation(cmd, g, a, x); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}

func printExplanation(cmd *cobra.Command, g *globals, id string, x dedup.Explanation) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(struct {
			ID string `json:"id"`
			dedup.Explanation
		}{id, x})
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "ID\t%s\n", id)
	fmt.Fprintf(w, "live\t%v\n", x.Live)
	if x.Live {
		fmt.Fprintf(w, "deadline\t%s\n", stamp(x.Deadline))
	}
	filters := "none: definitely new"
	if len(x.FilterGenerations) > 0 {
		var ends []string
		for _, e := range x.FilterGenerations {
			ends = append(ends, "generation ending "+stamp(e))
		}
		filters = "may hold it: " + strings.Join(ends, ", ")
	}
	fmt.Fprintf(w, "filters\t%s\n", filters)
	if v := x.Unflushed; v != nil {
		fmt.Fprintf(w, "WAL tail\t%s (LSN %d, not yet checkpointed)\n", describeVersion(*v), v.LSN)
	} else {
		fmt.Fprintf(w, "WAL tail\tnothing\n")
	}
	if len(x.Pebble) == 0 {
		fmt.Fprintf(w, "Pebble\tnothing\n")
	}
	for _, v := range x.Pebble {
		fmt.Fprintf(w, "Pebble\t%s\n", describeVersion(v))
	}
	fmt.Fprintln(w)
	return w.Flush()
}

func describeVersion(v dedup.Version) string {
	if v.Forgotten {
		return "forgotten"
	}
	return fmt.Sprintf("mark until %s, generation ending %s", stamp(v.Deadline), stamp(v.GenerationEnds))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
