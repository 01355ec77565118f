// Command dedupctl inspects, changes and benchmarks a dedup store.
//
// Exit codes: 0 ok, 1 an error, 2 a usage error.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError marks an error in how the command was called.
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "dedupctl:", err)
		return exitUsage
	default:
		fmt.Fprintln(os.Stderr, "dedupctl:", err)
		return exitError
	}
}

// globals are the flags every command takes.
type globals struct {
	dir    string
	output string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "dedupctl",
		Short:         "Inspect, change and benchmark a dedup store",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("-o must be table or json, not %q", g.output)}
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.dir, "dir", os.Getenv("DEDUP_DIR"), "store directory (default $DEDUP_DIR)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.AddCommand(newBench(g), newMark(g), newSeen(g), newForget(g), newStats(g))
	return root
}

// needDir returns the store directory or a usage error.
func (g *globals) needDir() (string, error) {
	if g.dir == "" {
		return "", usageError{errors.New("no store: give --dir or set DEDUP_DIR")}
	}
	return g.dir, nil
}
