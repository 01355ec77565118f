package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
)

// damageError is damage that verify or repair found, which is not itself
// an error of the store: exit code 3.
type damageError struct{ error }

func newVerify(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the whole store: WAL CRCs and LSNs, Pebble checksums, filter coverage",
		Long: `Reads every WAL record (CRC, LSN sequence), every Pebble block (checksum)
and every key in Pebble, checking that its generation's filter covers it.
It opens the store read-only and changes nothing. It prints a report, also
when it finds damage: a store that does not open because it is damaged is
damage too. Exit code 3 means damage (the error on stderr starts with
"store corrupt" when the store failed a check); 0 means none was found.
On a terminal a spinner shows on stderr while it reads.`,
		Args:        usageArgs(cobra.NoArgs),
		Annotations: map[string]string{remoteAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c := g.remote; c != nil {
				spin := newSpinner(cmd.ErrOrStderr(), "verifying")
				resp, err := c.get(cmd, "/verify", nil)
				spin.Finish()
				if err != nil {
					return err
				}
				var r admin.VerifyReport
				return c.printDocument(cmd, g, resp, &r, func() error { return printVerify(cmd, g, r) })
			}
			s, err := g.openStore(cmd, readOnly)
			if errors.Is(err, dedup.ErrCorrupt) || errors.Is(err, dedup.ErrIncompatibleFormat) {
				return reportDamage(cmd, g, admin.VerifyReport{Uncovered: []string{}}, err)
			}
			if err != nil {
				return err
			}
			defer s.Close()
			spin := newSpinner(cmd.ErrOrStderr(), "verifying")
			r, err := admin.Verify(s)
			spin.Finish()
			if r.Damage != "" {
				return reportDamage(cmd, g, r, err)
			}
			if err != nil {
				return err
			}
			return printVerify(cmd, g, r)
		},
	}
}

// reportDamage prints r with the damage err and returns err, which exits 3.
func reportDamage(cmd *cobra.Command, g *globals, r admin.VerifyReport, err error) error {
	r.Damage = err.Error()
	if perr := printVerify(cmd, g, r); perr != nil {
		return errors.Join(err, perr)
	}
	return err
}

func printVerify(cmd *cobra.Command, g *globals, r admin.VerifyReport) error {
	out := cmd.OutOrStdout()
	if g.output == "json" {
		return json.NewEncoder(out).Encode(r)
	}
	fmt.Fprintf(out, "ok: %v\nWAL records: %d\nindex keys: %d\nuncovered keys: %d\n", r.OK, r.WALRecords, r.IndexKeys, len(r.Uncovered))
	for _, k := range r.Uncovered {
		fmt.Fprintf(out, "uncovered: %s\n", k)
	}
	if r.Damage != "" {
		fmt.Fprintf(out, "damage: %s\n", r.Damage)
	}
	return nil
}
