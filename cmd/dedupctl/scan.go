package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

func newScan(g *globals) *cobra.Command {
	var prefix, only string
	var limit int
	var expired bool
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "Stream the live marks, one per line (JSON Lines with -o json)",
		Long: `Streams the IDs that have a live mark, each once, with their deadline and
state: live, or for a key with an idempotency record in-progress (with its
lease's token and end) or completed. With --expired it also streams the
versions that are not live: expired, forgotten, or superseded by a later
mark of the same ID. --state keeps one state only: --state in-progress
lists the leases, live or ended, of work begun and never completed.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError{fmt.Errorf("--limit must not be negative")}
			}
			switch only {
			case "", "live", "in-progress", "completed":
			case "expired", "forgotten", "superseded":
				expired = true
			default:
				return usageError{fmt.Errorf("--state must be live, in-progress, completed, expired, forgotten or superseded, not %q", only)}
			}
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				now := time.Now()
				enc := json.NewEncoder(cmd.OutOrStdout())
				n := 0
				return scanEach(s, []byte(prefix), expired, func(m dedup.Mark) (bool, error) {
					st := state(m, now)
					if only != "" && st != only {
						return true, nil
					}
					n++
					more := limit == 0 || n < limit
					if g.output != "json" {
						return more, writeMarkLine(cmd.OutOrStdout(), m, st, now)
					}
					l := newMarkLine(m)
					l.Live, l.State = &m.Live, st
					return more, enc.Encode(l)
				})
			})
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only IDs that start with this")
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many lines (0: no limit)")
	cmd.Flags().BoolVar(&expired, "expired", false, "also the versions that are not live")
	cmd.Flags().StringVar(&only, "state", "", "only this state: live, in-progress, completed, expired, forgotten or superseded")
	return cmd
}

func newExport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "export",
		Short: `Stream the live marks as JSON lines, for import`,
		Long: `Streams every live mark as a JSON line, whatever -o says, for import into
another store. Each line says what it holds: a plain mark,
  {"kind":"mark","id":"a","deadline":"2026-01-02T03:04:05.123456789Z"}
or a key with an idempotency record, kept whole (state 1 in progress, 2
completed; token, lease end, TTL, fingerprint and result in base64):
  {"kind":"record","id":"k","deadline":"...","record":{"state":2,"token":7,...}}
Deadlines are RFC 3339 to the nanosecond. An ID that is not valid UTF-8 is
base64-encoded, with "id_base64": true. When stderr is a terminal and
stdout is not, a spinner on stderr counts the marks.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				enc := json.NewEncoder(cmd.OutOrStdout())
				progress := cmd.ErrOrStderr()
				if isTerminal(cmd.OutOrStdout()) {
					progress = io.Discard // the marks themselves show it, and a spinner would garble them
				}
				spin := newSpinner(progress, "exporting")
				defer spin.Finish()
				return scanEach(s, nil, false, func(m dedup.Mark) (bool, error) {
					spin.Add(1)
					return true, enc.Encode(newMarkLine(m))
				})
			})
		},
	}
}

// scanEach runs write on each mark Scan yields, until write says stop or
// fails, and returns the first error of either.
func scanEach(s *dedup.Store, prefix []byte, all bool, write func(dedup.Mark) (more bool, err error)) error {
	var werr error
	err := s.Scan(prefix, all, func(m dedup.Mark) bool {
		var more bool
		more, werr = write(m)
		return more && werr == nil
	})
	if err != nil {
		return err
	}
	return werr
}

// markLine is one mark as a JSON line: what export writes and import
// reads, and, with Live and State, what scan -o json writes. Kind says
// what the line holds: a plain mark, or a mark with its idempotency
// record, which import restores whole.
type markLine struct {
	Kind string `json:"kind"`
	jsonID
	Deadline *time.Time    `json:"deadline,omitempty"`
	Live     *bool         `json:"live,omitempty"`
	State    string        `json:"state,omitempty"`
	Record   *dedup.Record `json:"record,omitempty"`
}

// The kinds of markLine.
const (
	kindMark   = "mark"
	kindRecord = "record"
)

func newMarkLine(m dedup.Mark) markLine {
	l := markLine{Kind: kindMark, jsonID: newJSONID(m.ID), Record: m.Record}
	if m.Record != nil {
		l.Kind = kindRecord
	}
	if !m.Deadline.IsZero() {
		d := m.Deadline.UTC()
		l.Deadline = &d
	}
	return l
}

// state names what a scanned version is: a live mark with an idempotency
// record is in the record's state.
func state(m dedup.Mark, now time.Time) string {
	switch {
	case m.Live && m.Record != nil:
		return m.Record.State.String()
	case m.Live:
		return "live"
	case m.Deadline.IsZero():
		return "forgotten"
	case !now.Before(m.Deadline):
		return "expired"
	}
	return "superseded"
}

// writeMarkLine writes a mark as "ID deadline state", tab-separated, and
// for a record in progress its lease.
func writeMarkLine(w io.Writer, m dedup.Mark, state string, now time.Time) error {
	deadline := "-"
	if !m.Deadline.IsZero() {
		deadline = stamp(m.Deadline)
	}
	line := fmt.Sprintf("%s\t%s\t%s", displayID(m.ID), deadline, state)
	if m.Live && m.Record != nil && m.Record.State == dedup.StateInProgress {
		line += "\t" + describeRecord(*m.Record, now)
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
