package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

// repairLimits says what repair cannot fix, and what to do instead.
const repairLimits = `repair fixes damage in the WAL only. It cannot fix the index:
  - a filter snapshot (index/filters/*.bloom) that fails its check: delete
    that file, and the next open rebuilds the filters from Pebble;
  - Pebble's tables or manifest (index/db), or the index's CHECKPOINT,
    missing, short or damaged: restore the store from a copy made by
    dedupctl snapshot.`

func newRepair(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Cut a damaged WAL at its last good record (only with --yes)",
		Long: `Finds the damage in the WAL that makes the store fail to open, and says what
cutting the log there loses: the LSN range and how many records after the
cut could still be read. Without --yes it changes nothing and exits 3 if
there is damage. With --yes it copies the damaged segment aside (.broken),
truncates it at the last good record and moves later segments aside.

Where the WAL is intact, or once it is cut, repair opens the store
read-only to check that it opens. If it does not, repair says so, with the
error, and exits as that error does (3 for damage).

` + repairLimits,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := g.needDir()
			if err != nil {
				return err
			}
			d, err := dedup.Repair(dir, &dedup.Options{Logger: g.logger(cmd)}, yes)
			if errors.Is(err, dedup.ErrCorrupt) {
				// The index's checkpoint, which says where the WAL
				// begins, is damaged: the WAL cannot be checked.
				r := repairReport{OpenError: err.Error()}
				if perr := printRepair(cmd, g, r); perr != nil {
					return perr
				}
				return fmt.Errorf("repair cannot fix that: %w", err)
			}
			if err != nil {
				return err
			}
			r := newRepairReport(d, yes)
			if d != nil && !yes {
				if err := printRepair(cmd, g, r); err != nil {
					return err
				}
				return damageError{fmt.Errorf("the WAL is damaged; run again with --yes to cut it")}
			}
			openErr := opens(dir)
			r.Opens = openErr == nil
			if openErr != nil {
				r.OpenError = openErr.Error()
			}
			if err := printRepair(cmd, g, r); err != nil {
				return err
			}
			if openErr != nil {
				return fmt.Errorf("the store does not open, and repair cannot fix that: %w", openErr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "cut the log; without it, only report")
	return cmd
}

// opens reports why the store in dir does not open read-only, if it does
// not.
func opens(dir string) error {
	s, err := dedup.Open(dir, &dedup.Options{ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	return s.Close()
}

// repairReport is what repair prints, as a table or as JSON.
type repairReport struct {
	// WALChecked is false when the index's checkpoint, which says where
	// the WAL begins, is itself damaged: the other fields are then zero.
	WALChecked bool     `json:"wal_checked"`
	Damaged    bool     `json:"damaged"`
	Error      string   `json:"error,omitempty"`
	Segment    string   `json:"segment,omitempty"`
	Offset     int64    `json:"offset,omitempty"`
	FirstLost  uint64   `json:"first_lost_lsn,omitempty"`
	LastLost   uint64   `json:"last_lost_lsn,omitempty"`
	Lost       int      `json:"lost_records"`
	Later      []string `json:"later_segments,omitempty"`
	// Covered says the damage lies in records the checkpoint covers: they
	// are skipped, and FirstLost is 0 if nothing after them is lost.
	Covered bool `json:"covered_by_checkpoint"`
	// NextLSN is the LSN of the next record after the repair: past every
	// LSN the damaged log used or may have used, so fencing tokens keep
	// rising.
	NextLSN uint64 `json:"next_lsn,omitempty"`
	Applied bool   `json:"applied"`
	// Opens tells whether the store opens after the repair, if it was
	// checked: not when the WAL is damaged and left as it is.
	Opens     bool   `json:"opens"`
	OpenError string `json:"open_error,omitempty"`
}

func newRepairReport(d *dedup.Damage, applied bool) repairReport {
	r := repairReport{WALChecked: true, Damaged: d != nil, Applied: applied && d != nil}
	if d != nil {
		r.Error, r.Segment, r.Offset, r.FirstLost, r.LastLost, r.Lost, r.Later, r.Covered, r.NextLSN =
			d.Err.Error(), d.Segment, d.Offset, d.FirstLost, d.LastLost, d.Lost, d.Later, d.Covered, d.Next
	}
	return r
}

func printRepair(cmd *cobra.Command, g *globals, r repairReport) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(r)
	}
	switch {
	case !r.WALChecked:
		fmt.Fprintln(out, "the WAL cannot be checked: the index's checkpoint is damaged")
	case !r.Damaged:
		fmt.Fprintln(out, "no damage in the WAL")
	default:
		fmt.Fprintf(out, "damage: %s\n", r.Error)
		fmt.Fprintf(out, "cut: %s at offset %d\n", r.Segment, r.Offset)
		if r.Covered {
			fmt.Fprintln(out, "the damage lies in records the checkpoint covers: they are skipped")
		}
		switch {
		case r.FirstLost == 0:
			fmt.Fprintln(out, "lost: nothing after the checkpoint")
		case r.LastLost >= r.FirstLost:
			fmt.Fprintf(out, "lost: LSN %d-%d, %d records readable after the cut\n", r.FirstLost, r.LastLost, r.Lost)
		default:
			fmt.Fprintf(out, "lost: LSN %d on, %d records readable after the cut\n", r.FirstLost, r.Lost)
		}
		fmt.Fprintf(out, "next LSN: %d (past every LSN the damaged log used or may have used, so fencing tokens keep rising)\n", r.NextLSN)
		for _, l := range r.Later {
			fmt.Fprintf(out, "also moved aside: %s\n", l)
		}
		if !r.Applied {
			_, err := fmt.Fprintln(out, "nothing changed: run with --yes to cut the log here")
			return err
		}
		fmt.Fprintf(out, "repaired: %s.broken keeps the damaged segment\n", r.Segment)
	}
	return printOpens(out, r)
}

func printOpens(out io.Writer, r repairReport) error {
	if r.Opens {
		_, err := fmt.Fprintln(out, "the store opens")
		return err
	}
	_, err := fmt.Fprintf(out, "the store does not open: %s\n%s\n", r.OpenError, repairLimits)
	return err
}
