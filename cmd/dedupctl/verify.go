package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

// damageError is damage that verify found: exit code 3.
type damageError struct{ error }

func newVerify(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the whole store: WAL CRCs and LSNs, Pebble checksums, filter coverage",
		Long: `Reads every WAL record (CRC, LSN sequence), every Pebble block (checksum)
and every key in Pebble, checking that its generation's filter covers it.
It opens the store read-only and changes nothing. Exit code 3 means damage,
with a report; 0 means none was found. On a terminal a spinner shows on
stderr while it reads.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.openStore(cmd, readOnly)
			if errors.Is(err, dedup.ErrCorrupt) || errors.Is(err, dedup.ErrIncompatibleFormat) {
				return damageError{err}
			}
			if err != nil {
				return err
			}
			defer s.Close()
			spin := newSpinner(cmd.ErrOrStderr(), "verifying")
			r, err := s.Verify()
			spin.Finish()
			if errors.Is(err, dedup.ErrCorrupt) {
				return damageError{err}
			}
			if err != nil {
				return err
			}
			if err := printVerify(cmd, g, r); err != nil {
				return err
			}
			if len(r.Uncovered) > 0 {
				return damageError{fmt.Errorf("%d keys are not covered by their filter", len(r.Uncovered))}
			}
			return nil
		},
	}
}

func printVerify(cmd *cobra.Command, g *globals, r dedup.VerifyReport) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(r)
	}
	fmt.Fprintf(out, "WAL records: %d\nindex keys: %d\nuncovered keys: %d\n", r.WALRecords, r.IndexKeys, len(r.Uncovered))
	for _, k := range r.Uncovered {
		fmt.Fprintf(out, "uncovered: %s\n", k)
	}
	return nil
}
