package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/idempotency"
)

func newExplain(g *globals) *cobra.Command {
	var httpKeys bool
	var scope string
	cmd := &cobra.Command{
		Use:   "explain ID...",
		Short: "Tell whether IDs are live, and what the filters, the unflushed WAL tail and Pebble hold of each",
		Long: `Tells whether each ID is live, its deadline, and what each structure holds
of it: the filters, the WAL tail not yet checkpointed, and Pebble. For a key
with an idempotency record it also shows the record's state, its lease's
token and end, its request fingerprint and the size of its stored result.
With --http the arguments are Idempotency-Key values of the HTTP middleware
(in --scope), not store IDs.`,
		Args:        usageArgs(cobra.MinimumNArgs(1)),
		Annotations: map[string]string{remoteAnnotation: "yes", redisAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.redis != nil {
				return explainRedis(cmd, g, args, httpKeys, scope)
			}
			if c := g.remote; c != nil {
				q := url.Values{"id": args}
				if httpKeys {
					q.Set("http", "true")
					q.Set("scope", scope)
				}
				return c.lines(cmd, g, "/explain", q, func(line []byte) error {
					var l admin.ExplainLine
					if err := json.Unmarshal(line, &l); err != nil {
						return c.broken(err)
					}
					id, err := l.ID.Bytes()
					if err != nil {
						return c.broken(err)
					}
					return printExplanation(cmd, g, id, l.Explanation)
				})
			}
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				for _, a := range args {
					id := []byte(a)
					if httpKeys {
						id = idempotency.StoreKey(scope, a)
					}
					x, err := s.Explain(id)
					if err != nil {
						return err
					}
					if err := printExplanation(cmd, g, []byte(a), x); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&httpKeys, "http", false, "the IDs are Idempotency-Key values of the HTTP middleware")
	cmd.Flags().StringVar(&scope, "scope", "", "with --http, the scope (Options.Scope) the keys are in")
	return cmd
}

// printExplanation prints what explain found of id: a table, or one JSON
// line.
func printExplanation(cmd *cobra.Command, g *globals, id []byte, x dedup.Explanation) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(admin.ExplainLine{ID: admin.NewID(id), Explanation: x})
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "ID\t%s\n", displayID(id))
	fmt.Fprintf(w, "live\t%v\n", x.Live)
	if x.Live {
		fmt.Fprintf(w, "deadline\t%s\n", stamp(x.Deadline))
	}
	if r := x.Record; r != nil {
		fmt.Fprintf(w, "record\t%s\n", describeRecord(*r, time.Now()))
		fmt.Fprintf(w, "fingerprint\t%x\n", r.Fingerprint)
		fmt.Fprintf(w, "result\t%d bytes\n", len(r.Result))
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

// describeRecord says what state a record is in and, in progress, who
// holds its lease and until when.
func describeRecord(r dedup.Record, now time.Time) string {
	if r.State == dedup.StateCompleted {
		return fmt.Sprintf("completed (token %d)", r.Token)
	}
	lease := "live"
	if !now.Before(r.LeaseEnds) {
		lease = "ended: the next Begin takes it over"
	}
	return fmt.Sprintf("in progress: lease of token %d until %s, %s", r.Token, stamp(r.LeaseEnds), lease)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
