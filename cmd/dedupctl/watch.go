package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup/admin"
)

// watchHelp documents --watch in stats' help.
const watchHelp = `With --watch, stats asks the admin handler at --addr every --interval and
shows rates per second between two answers (new marks, duplicates, WAL
appends, fsyncs and WAL bytes appended) with the live marks, the effective
window, the WAL's bytes and whether the store has fail-stopped. On a
terminal it redraws the figures in place; otherwise, and with -o json, it
writes one line per interval (one JSON object with -o json), the first
without rates. It stops on SIGINT or SIGTERM, exiting 0, or after --count
refreshes. --watch needs --addr: only the process that holds the store
counts its work.`

// errWatchNeedsAddr refuses --watch on a store that dedupctl would open
// itself: nothing writes to it, so there are no rates to show.
var errWatchNeedsAddr = usageError{errors.New("--watch needs --addr: a live store is locked by the process that writes it, and only that process counts its work; mount admin.Handler in it and give the handler's URL with --addr")}

// watchFlags are stats' --watch flags.
type watchFlags struct {
	on       bool
	interval time.Duration
	count    int
}

func (f *watchFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.on, "watch", false, "refresh the figures every --interval, with rates per second (needs --addr)")
	cmd.Flags().DurationVar(&f.interval, "interval", time.Second, "with --watch, the time between two refreshes")
	cmd.Flags().IntVar(&f.count, "count", 0, "with --watch, stop after this many refreshes (0: until SIGINT or SIGTERM)")
}

// check returns a usage error for flags that do not go together.
func (f *watchFlags) check(cmd *cobra.Command, g *globals) error {
	if !f.on {
		if cmd.Flags().Changed("interval") || cmd.Flags().Changed("count") {
			return usageError{errors.New("--interval and --count go with --watch")}
		}
		return nil
	}
	switch {
	case g.redis != nil || g.remote == nil:
		return errWatchNeedsAddr
	case f.interval <= 0:
		return usageError{fmt.Errorf("--interval %v is not positive", f.interval)}
	case f.count < 0:
		return usageError{fmt.Errorf("--count %d is negative", f.count)}
	}
	return nil
}

// watchLine is one refresh, as -o json writes it.
type watchLine struct {
	Time time.Time `json:"time"`
	// Elapsed is the time since the previous refresh, over which Rates
	// are taken: absent on the first refresh, and after the counters
	// went back (Reset).
	Elapsed time.Duration `json:"elapsed_ns,omitempty"`
	Rates   *watchRates   `json:"rates,omitempty"`
	// Reset is set when a counter went back since the previous refresh:
	// the process reopened the store, or another took its place.
	Reset           bool            `json:"counters_reset,omitempty"`
	Marks           uint64          `json:"marks"`
	EffectiveWindow time.Duration   `json:"effective_window_ns"`
	WALBytes        int64           `json:"wal_bytes"`
	FailStopped     bool            `json:"fail_stopped"`
	Counters        *admin.Counters `json:"counters"`
}

// watchRates are counts per second between two refreshes.
type watchRates struct {
	New            float64 `json:"new_per_second"`
	Duplicates     float64 `json:"duplicates_per_second"`
	WALAppends     float64 `json:"wal_appends_per_second"`
	WALSyncs       float64 `json:"wal_syncs_per_second"`
	WALAppendBytes float64 `json:"wal_append_bytes_per_second"`
}

// watchCounts are the counters the rates are taken of, in watchRates'
// order.
func watchCounts(c *admin.Counters) [5]uint64 {
	return [5]uint64{c.SingleNew + c.BatchNew, c.SingleDuplicates + c.BatchDuplicates, c.WALAppends, c.WALSyncs, c.WALAppendBytes}
}

// watch refreshes stats from the admin handler until ctx ends or after
// f.count refreshes.
func watch(cmd *cobra.Command, g *globals, f watchFlags) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd.SetContext(ctx)
	out := cmd.OutOrStdout()
	tty := g.output != "json" && isTerminal(out)
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	var prev *watchLine
	var prevAt time.Time
	for n := 0; f.count == 0 || n < f.count; n++ {
		if n > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		r, err := g.remote.stats(cmd)
		if ctx.Err() != nil {
			return nil // stopped by a signal, maybe mid-request
		}
		if err != nil {
			return err
		}
		at := time.Now()
		l := &watchLine{Time: at.UTC(), Marks: r.Marks, EffectiveWindow: r.EffectiveWindow,
			WALBytes: r.WALBytes, FailStopped: r.FailStopped, Counters: r.Counters}
		if prev != nil {
			l.rates(prev, at.Sub(prevAt))
		}
		if err := printWatch(out, g, tty, l); err != nil {
			return err
		}
		prev, prevAt = l, at
	}
	return nil
}

// rates sets l's rates over the elapsed time since prev, unless a counter
// went back.
func (l *watchLine) rates(prev *watchLine, elapsed time.Duration) {
	cur, old := watchCounts(l.Counters), watchCounts(prev.Counters)
	var per [5]float64
	for i := range cur {
		if cur[i] < old[i] {
			l.Reset = true
			return
		}
		per[i] = float64(cur[i]-old[i]) / elapsed.Seconds()
	}
	l.Elapsed = elapsed
	l.Rates = &watchRates{New: per[0], Duplicates: per[1], WALAppends: per[2], WALSyncs: per[3], WALAppendBytes: per[4]}
}

// stats asks the handler for its stats, which must carry the counters.
func (c *client) stats(cmd *cobra.Command) (admin.StatsReport, error) {
	var r admin.StatsReport
	resp, err := c.get(cmd, "/stats", nil)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, c.broken(err)
	}
	if r.Counters == nil {
		return r, fmt.Errorf("admin handler at %s: its stats carry no counters: is the process built with an older dedup?", c.base)
	}
	return r, nil
}

// Control sequences of an ANSI terminal: the cursor home, then clear the
// screen.
const ansiHomeClear = "\x1b[H\x1b[2J"

// printWatch writes one refresh: a JSON line with -o json, a screen that
// replaces the last one on a terminal, a line otherwise.
func printWatch(out io.Writer, g *globals, tty bool, l *watchLine) error {
	if g.output == "json" {
		return json.NewEncoder(out).Encode(l)
	}
	rate := func(v float64, prec int) string {
		if l.Rates == nil {
			return "-"
		}
		return fmt.Sprintf("%.*f", prec, v)
	}
	var r watchRates
	if l.Rates != nil {
		r = *l.Rates
	}
	over := "first refresh"
	switch {
	case l.Reset:
		over = "counters reset: the store was reopened"
	case l.Rates != nil:
		over = fmt.Sprintf("over %.3fs", l.Elapsed.Seconds())
	}
	if !tty {
		_, err := fmt.Fprintf(out, "%s  new/s %s  duplicates/s %s  WAL appends/s %s  fsyncs/s %s  WAL bytes/s %s  marks %d  effective window %v  WAL bytes %d  fail-stopped %t  (%s)\n",
			l.Time.Format(time.RFC3339), rate(r.New, 2), rate(r.Duplicates, 2), rate(r.WALAppends, 2), rate(r.WALSyncs, 2), rate(r.WALAppendBytes, 0),
			l.Marks, l.EffectiveWindow, l.WALBytes, l.FailStopped, over)
		return err
	}
	var b bytes.Buffer
	b.WriteString(ansiHomeClear)
	fmt.Fprintf(&b, "dedupctl stats --watch at %s, %s\n\n", l.Time.Format(time.RFC3339), over)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "new/s\t%s\n", rate(r.New, 2))
	fmt.Fprintf(w, "duplicates/s\t%s\n", rate(r.Duplicates, 2))
	fmt.Fprintf(w, "WAL appends/s\t%s\n", rate(r.WALAppends, 2))
	fmt.Fprintf(w, "fsyncs/s\t%s\n", rate(r.WALSyncs, 2))
	fmt.Fprintf(w, "WAL bytes/s\t%s\n", rate(r.WALAppendBytes, 0))
	fmt.Fprintf(w, "marks\t%d\n", l.Marks)
	fmt.Fprintf(w, "effective window\t%v\n", l.EffectiveWindow)
	fmt.Fprintf(w, "WAL bytes\t%d\n", l.WALBytes)
	fmt.Fprintf(w, "fail-stopped\t%t\n", l.FailStopped)
	w.Flush()
	_, err := out.Write(b.Bytes()) // one write, so that the screen does not flicker
	return err
}
