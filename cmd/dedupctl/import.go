package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
)

const (
	// maxValueSize bounds an imported record's fingerprint and result. It
	// is the store's default Options.MaxValueSize, set explicitly so that
	// the two agree and import can check every line before it writes.
	maxValueSize = 1 << 20
	// importBatch is the number of marks import restores per store call.
	importBatch = 1024
)

func newImport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "import",
		Short: "Restore marks and idempotency records from JSON lines on stdin, as export writes them",
		Long: `Reads JSON lines from stdin, as export writes them, and restores each mark
whole: its ID, its deadline to the nanosecond and, for a "kind":"record"
line, its idempotency record (state, token, lease, TTL, fingerprint and
result), so that the HTTP middleware answers from it as before. A line
without "kind" is a plain mark. It reads and checks the whole input first
and changes nothing if any line is bad, naming each bad line. Marks whose
deadline has passed are skipped, and so are IDs that already have a live
mark here, which is kept. The store is created if missing. It prints the
counts: added, already present, expired and skipped. On a terminal a
progress bar shows on stderr.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.needDir(); err != nil {
				return err // before reading the input
			}
			marks, err := readImport(cmd.InOrStdin())
			if err != nil {
				return err
			}
			opts := dedup.Options{Sync: dedup.SyncNone, MaxIDSize: maxIDSize, MaxValueSize: maxValueSize}
			return g.withStore(cmd, opts, func(s *dedup.Store) error {
				var c importCounts
				bar := newBar(cmd.ErrOrStderr(), int64(len(marks)))
				defer bar.Finish()
				for len(marks) > 0 {
					chunk := marks[:min(len(marks), importBatch)]
					marks = marks[len(chunk):]
					if err := c.restore(s, chunk); err != nil {
						return err
					}
					bar.Add(len(chunk))
				}
				// Close fsyncs: the import is durable when the command ends.
				out := cmd.OutOrStdout()
				if g.output == "json" {
					return json.NewEncoder(out).Encode(c)
				}
				_, err := fmt.Fprintf(out, "%d marks added, %d already present, %d expired and skipped\n", c.Added, c.Present, c.Expired)
				return err
			})
		},
	}
}

// importCounts is what import did.
type importCounts struct {
	Added   int `json:"added"`
	Present int `json:"present"`
	Expired int `json:"expired"`
}

// restore restores marks, in one store call, and counts them.
func (c *importCounts) restore(s *dedup.Store, marks []importMark) error {
	batch := make([]dedup.Mark, 0, len(marks))
	now := time.Now()
	for _, m := range marks {
		if !now.Before(m.Deadline) {
			c.Expired++
			continue
		}
		batch = append(batch, m.Mark)
	}
	restored, err := s.Restore(batch)
	if err != nil {
		return fmt.Errorf("lines %d-%d: %w", marks[0].line, marks[len(marks)-1].line, err)
	}
	now = time.Now()
	for i, ok := range restored {
		switch {
		case ok:
			c.Added++
		case !now.Before(batch[i].Deadline):
			c.Expired++ // it expired meanwhile
		default:
			c.Present++
		}
	}
	return nil
}

// importMark is one checked line of an import.
type importMark struct {
	line int
	dedup.Mark
}

// readImport reads and checks every line, and fails naming the bad ones.
func readImport(r io.Reader) ([]importMark, error) {
	var marks []importMark
	var bad []string
	now := time.Now()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for line := 1; sc.Scan(); line++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		m, err := parseImportLine(sc.Bytes(), now)
		if err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %v", line, err))
			continue
		}
		m.line = line
		marks = append(marks, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%d bad lines, nothing imported:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
	return marks, nil
}

// parseImportLine parses and checks a line as the store will, so that a
// bad line fails the import before anything is written.
func parseImportLine(b []byte, now time.Time) (importMark, error) {
	var l admin.MarkLine
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return importMark{}, fmt.Errorf("malformed JSON: %w", err)
	}
	switch {
	case l.Kind == "" && l.Record == nil, l.Kind == admin.KindMark:
		if l.Record != nil {
			return importMark{}, errors.New(`a "mark" line with a "record"`)
		}
	case l.Kind == admin.KindRecord:
		if err := checkRecord(l.Record); err != nil {
			return importMark{}, err
		}
	default:
		return importMark{}, fmt.Errorf(`"kind" %q: it must be "mark" or "record"`, l.Kind)
	}
	if l.ID.Text == "" {
		return importMark{}, errors.New(`no "id"`)
	}
	if l.Deadline == nil {
		return importMark{}, errors.New(`no "deadline"`)
	}
	id, err := l.ID.Bytes()
	if err != nil {
		return importMark{}, fmt.Errorf("id is not base64: %w", err)
	}
	if err := checkID(id); err != nil {
		return importMark{}, err
	}
	if l.Deadline.Sub(now) > dedup.DefaultMaxTTL {
		return importMark{}, fmt.Errorf("deadline %s is more than the maximum TTL, %v, away", l.Deadline.Format(time.RFC3339), dedup.DefaultMaxTTL)
	}
	return importMark{Mark: dedup.Mark{ID: id, Deadline: *l.Deadline, Record: l.Record}}, nil
}

// checkRecord checks a "record" line's record as Restore will.
func checkRecord(r *dedup.Record) error {
	switch {
	case r == nil:
		return errors.New(`a "record" line with no "record"`)
	case r.State != dedup.StateInProgress && r.State != dedup.StateCompleted:
		return fmt.Errorf("record state %d: it must be %d (in progress) or %d (completed)", r.State, dedup.StateInProgress, dedup.StateCompleted)
	case r.TTL <= 0 || r.TTL > dedup.DefaultMaxTTL:
		return fmt.Errorf("record TTL %v is outside (0, %v]", r.TTL, dedup.DefaultMaxTTL)
	case len(r.Fingerprint)+len(r.Result) > maxValueSize:
		return fmt.Errorf("record of %d bytes is over the limit of %d", len(r.Fingerprint)+len(r.Result), maxValueSize)
	}
	return nil
}
