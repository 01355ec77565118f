package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
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
		Args:        usageArgs(cobra.NoArgs),
		Annotations: map[string]string{remoteAnnotation: "yes", redisAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := admin.ScanQuery{Prefix: []byte(prefix), Limit: limit, Expired: expired, State: only}
			if err := q.Check(); err != nil {
				return usageError{err}
			}
			if g.redis != nil {
				return scanRedis(cmd, g, q)
			}
			now := time.Now()
			if c := g.remote; c != nil {
				v := url.Values{"prefix": {prefix}, "limit": {strconv.Itoa(limit)},
					"expired": {strconv.FormatBool(expired)}, "state": {only}}
				return c.lines(cmd, g, "/scan", v, func(line []byte) error {
					var l admin.MarkLine
					if err := json.Unmarshal(line, &l); err != nil {
						return c.broken(err)
					}
					return writeMarkLine(cmd.OutOrStdout(), l, now)
				})
			}
			return g.withStore(cmd, readOnly, func(s *dedup.Store) error {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return admin.Scan(s, q, func(l admin.MarkLine) error {
					if g.output == "json" {
						return enc.Encode(l)
					}
					return writeMarkLine(cmd.OutOrStdout(), l, now)
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
					return true, enc.Encode(admin.NewMarkLine(m))
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

// writeMarkLine writes a scanned mark as "ID deadline state",
// tab-separated, and for a record in progress its lease.
func writeMarkLine(w io.Writer, l admin.MarkLine, now time.Time) error {
	id, err := l.ID.Bytes()
	if err != nil {
		return err
	}
	deadline := "-"
	if l.Deadline != nil {
		deadline = stamp(*l.Deadline)
	}
	line := fmt.Sprintf("%s\t%s\t%s", displayID(id), deadline, l.State)
	if l.Live != nil && *l.Live && l.Record != nil && l.Record.State == dedup.StateInProgress {
		line += "\t" + describeRecord(*l.Record, now)
	}
	_, err = fmt.Fprintln(w, line)
	return err
}
