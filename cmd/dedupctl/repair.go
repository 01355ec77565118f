package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/wal"
)

func newRepair(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Cut a damaged WAL at its last good record (only with --yes)",
		Long: `Finds the damage in the WAL that makes the store fail to open, and says what
cutting the log there loses: the LSN range and how many records after the
cut could still be read. Without --yes it changes nothing and exits 3 if
there is damage. With --yes it copies the damaged segment aside (.broken),
truncates it at the last good record and moves later segments aside.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := g.needDir()
			if err != nil {
				return err
			}
			d, err := dedup.Repair(dir, nil, yes)
			if err != nil {
				return err
			}
			if err := printRepair(cmd, g, d, yes); err != nil {
				return err
			}
			if d != nil && !yes {
				return damageError{fmt.Errorf("the WAL is damaged; run again with --yes to cut it")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "cut the log; without it, only report")
	return cmd
}

func printRepair(cmd *cobra.Command, g *globals, d *wal.Damage, applied bool) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		type report struct {
			Damaged   bool     `json:"damaged"`
			Error     string   `json:"error,omitempty"`
			Segment   string   `json:"segment,omitempty"`
			Offset    int64    `json:"offset,omitempty"`
			FirstLost uint64   `json:"first_lost_lsn,omitempty"`
			LastLost  uint64   `json:"last_lost_lsn,omitempty"`
			Lost      int      `json:"lost_records"`
			Later     []string `json:"later_segments,omitempty"`
			Applied   bool     `json:"applied"`
		}
		r := report{Damaged: d != nil, Applied: applied && d != nil}
		if d != nil {
			r.Error, r.Segment, r.Offset, r.FirstLost, r.LastLost, r.Lost, r.Later =
				d.Err.Error(), d.Segment, d.Offset, d.FirstLost, d.LastLost, d.Lost, d.Later
		}
		return json.NewEncoder(out).Encode(r)
	}
	if d == nil {
		_, err := fmt.Fprintln(out, "no damage in the WAL")
		return err
	}
	fmt.Fprintf(out, "damage: %v\n", d.Err)
	fmt.Fprintf(out, "cut: %s at offset %d\n", d.Segment, d.Offset)
	lost := fmt.Sprintf("LSN %d on", d.FirstLost)
	if d.LastLost >= d.FirstLost {
		lost = fmt.Sprintf("LSN %d-%d", d.FirstLost, d.LastLost)
	}
	fmt.Fprintf(out, "lost: %s, %d records readable after the cut\n", lost, d.Lost)
	for _, l := range d.Later {
		fmt.Fprintf(out, "also moved aside: %s\n", l)
	}
	if applied {
		_, err := fmt.Fprintf(out, "repaired: %s.broken keeps the damaged segment\n", d.Segment)
		return err
	}
	_, err := fmt.Fprintln(out, "nothing changed: run with --yes to cut the log here")
	return err
}
