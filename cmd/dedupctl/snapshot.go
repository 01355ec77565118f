package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

func newSnapshot(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot DEST",
		Short: "Write a consistent copy of the whole store into DEST, a store directory of its own",
		Long: `Checkpoints the store and writes a consistent copy of it into DEST, which
must not exist: Pebble's checkpoint (hard links where it can), the filter
snapshots and the WAL. DEST is a store directory: move it to another machine
and use it as --dir there. Writes to the store wait while the copy is made.
The store must exist. On a terminal a spinner shows on stderr while it runs.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, readWrite, func(s *dedup.Store) error {
				spin := newSpinner(cmd.ErrOrStderr(), "copying")
				err := s.Snapshot(args[0])
				spin.Finish()
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if g.output == "json" {
					return json.NewEncoder(out).Encode(map[string]string{"snapshot": args[0]})
				}
				_, err = fmt.Fprintf(out, "snapshot written to %s\n", args[0])
				return err
			})
		},
	}
}
