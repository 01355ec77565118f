// Command dedupctl inspects, changes and benchmarks a dedup store, and
// filters a stream of lines down to those it has not seen before.
//
// Its exit codes are listed in the root command's help (exitHelp).
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/redisstore"
)

// Exit codes, one per kind of failure a script may want to tell apart.
// Part of the command's interface: do not renumber.
const (
	exitOK         = 0
	exitError      = 1 // any other failure, such as an I/O error
	exitUsage      = 2 // a bad command line: command, flag, argument, ID or TTL
	exitCorrupt    = 3 // damage: the store fails a check, or verify or repair found some
	exitNotStore   = 4 // --dir holds no store
	exitLocked     = 5 // another process holds the store
	exitPermission = 6 // the store's files may not be read or written
	exitFull       = 7 // the store is at MaxMarks or MaxDiskBytes
)

// exitHelp documents the exit codes in --help.
const exitHelp = `Exit codes:
  0  success
  1  an error not listed below, such as an I/O error
  2  a usage error: an unknown command or flag, a bad flag value, no --dir,
     an empty or overlong ID, a TTL outside (0, 168h]
  3  the store is damaged (store corrupt), or verify or repair found damage
  4  not a store: --dir holds no store (only mark, filter and import create one)
  5  the store is locked: another process has it open
  6  permission denied on the store's files
  7  the store is full (MaxMarks or MaxDiskBytes)`

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
	code := exitCode(err)
	if code == exitUsage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// exitCode returns the exit code of a failed command.
func exitCode(err error) int {
	var ue usageError
	var de damageError
	var p *admin.Problem
	switch {
	case errors.As(err, &p):
		return problemExit(p)
	case errors.As(err, &ue), errors.Is(err, dedup.ErrEmptyID), errors.Is(err, dedup.ErrIDTooLong),
		errors.Is(err, dedup.ErrInvalidTTL):
		return exitUsage
	case errors.As(err, &de), errors.Is(err, dedup.ErrCorrupt):
		return exitCorrupt
	case errors.Is(err, dedup.ErrNotStore):
		return exitNotStore
	case errors.Is(err, dedup.ErrPermission), errors.Is(err, fs.ErrPermission):
		return exitPermission
	case errors.Is(err, dedup.ErrLocked):
		return exitLocked
	case errors.Is(err, dedup.ErrFull):
		return exitFull
	}
	return exitError
}

// version is the module version dedupctl was built from: a tag for go
// install of a release, a pseudo-version for a commit, (devel) in a
// checkout, with the VCS revision when the build recorded one.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			v += " " + s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			v += " (modified)"
		}
	}
	return v + " " + bi.GoVersion
}

// globals are the flags every command takes.
type globals struct {
	dir      string
	output   string
	addr     string
	logLevel slog.Level // of the store's log, on stderr
	remote   *client    // set when the command asks the admin handler at addr

	redisURLs   []string
	redisPrefix string
	redis       *redisTarget // set when the command works on a Redis namespace
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "dedupctl",
		Short: "Inspect, change and benchmark a dedup store",
		Long: `dedupctl inspects, changes and benchmarks the dedup store under --dir (or
$DEDUP_DIR), and filters a stream of lines down to the ones not seen before.

` + outputHelp + `

` + addrHelp + `

` + redisHelp + `

` + exitHelp,
		Version:       version(),
		Args:          usageArgs(cobra.NoArgs),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("-o must be table or json, not %q", g.output)}
			}
			if err := g.resolveRedis(cmd); err != nil || g.redis != nil {
				return err
			}
			return g.resolveAddr(cmd)
		},
		// Runnable, so that an unknown command reaches Args and is a usage
		// error; with no command it prints the help.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetVersionTemplate("dedupctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.dir, "dir", os.Getenv("DEDUP_DIR"), "store directory (default $DEDUP_DIR)")
	root.PersistentFlags().StringVar(&g.addr, "addr", os.Getenv("DEDUP_ADDR"), "URL of a running process's admin handler, for get, explain, scan, stats and verify (default $DEDUP_ADDR)")
	root.PersistentFlags().StringSliceVar(&g.redisURLs, "redis", envList("DEDUP_REDIS"), "redis:// URL of a Redis server, or of Cluster nodes (repeated or comma-separated), for get, explain, scan, forget and stats (default $DEDUP_REDIS)")
	root.PersistentFlags().StringVar(&g.redisPrefix, "redis-prefix", redisstore.DefaultPrefix, "with --redis, the namespace: the backend's Options.Prefix")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().TextVar(&g.logLevel, "log-level", slog.LevelWarn, "the least level of the store's log records written to stderr: debug, info, warn or error")
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
