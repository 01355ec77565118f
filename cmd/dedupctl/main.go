// Command dedupctl inspects, changes and benchmarks a dedup store, and
// filters a stream of lines down to those it has not seen before.
//
// Exit codes: 0 ok, 1 an error, 2 a usage error, 3 verify or repair found damage.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitUsage  = 2
	exitDamage = 3 // verify or repair found damage
)

// usageError marks an error in how the command was called.
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args with the given standard streams and
// returns the exit code. It is main without the process around it, so
// that tests can run commands in-process.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "dedupctl:", err)
	var ue usageError
	var de damageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	case errors.As(err, &de):
		return exitDamage
	}
	return exitError
}

// globals are the flags every command takes.
type globals struct {
	dir    string
	output string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "dedupctl",
		Short: "Inspect, change and benchmark a dedup store",
		Long: `dedupctl inspects, changes and benchmarks the dedup store under --dir (or
$DEDUP_DIR), and filters a stream of lines down to the ones not seen before.

Exit codes:
  0  success
  1  an error: the store is missing, locked, corrupt, or an I/O failed
  2  a usage error: an unknown command or flag, a bad flag value, no --dir
  3  verify or repair found damage (repair without --yes)`,
		Args:          usageArgs(cobra.NoArgs),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("-o must be table or json, not %q", g.output)}
			}
			return nil
		},
		// Runnable, so that an unknown command reaches Args and is a usage
		// error; with no command it prints the help.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.dir, "dir", os.Getenv("DEDUP_DIR"), "store directory (default $DEDUP_DIR)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.AddCommand(newBench(g), newMark(g), newSeen(g), newForget(g), newStats(g), newFilter(g), newCompact(g), newVerify(g), newExplain(g), newScan(g), newExport(g), newImport(g), newRepair(g), newSnapshot(g))
	return root
}

// usageArgs makes the error of an argument check a usage error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// needDir returns the store directory or a usage error.
func (g *globals) needDir() (string, error) {
	if g.dir == "" {
		return "", usageError{errors.New("no store: give --dir or set DEDUP_DIR")}
	}
	return g.dir, nil
}
