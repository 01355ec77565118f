package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

func newImport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "import",
		Short: "Mark the IDs of JSON lines from stdin, as export writes them",
		Long: `Reads JSON lines {"id": ..., "deadline": ..., "id_base64": ...} from stdin,
as export writes them, and marks each ID until its deadline. It reads and
checks the whole input first and changes nothing if any line is bad,
naming each bad line. Marks whose deadline has passed are skipped. The
store is created if missing. On a terminal a progress bar shows on stderr.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			marks, err := readImport(cmd.InOrStdin())
			if err != nil {
				return err
			}
			return g.withStore(cmd, dedup.Options{Sync: dedup.SyncNone}, func(s *dedup.Store) error {
				var added, present, expired int
				bar := newBar(cmd.ErrOrStderr(), int64(len(marks)))
				defer bar.Finish()
				for _, m := range marks {
					bar.Add(1)
					ttl := time.Until(m.deadline)
					if ttl <= 0 {
						expired++
						continue
					}
					isNew, err := s.CheckAndMark(m.id, ttl)
					if err != nil {
						return fmt.Errorf("line %d: %w", m.line, err)
					}
					if isNew {
						added++
					} else {
						present++
					}
				}
				// Close fsyncs: the import is durable when the command ends.
				fmt.Fprintf(cmd.OutOrStdout(), "%d marks added, %d already present, %d expired and skipped\n", added, present, expired)
				return nil
			})
		},
	}
}

// importMark is one checked line of an import.
type importMark struct {
	line     int
	id       []byte
	deadline time.Time
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
		m, err := parseImportLine(sc.Bytes())
		if err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %v", line, err))
			continue
		}
		if m.deadline.Sub(now) > dedup.DefaultMaxTTL {
			bad = append(bad, fmt.Sprintf("line %d: deadline %s is more than the maximum TTL, %v, away", line, m.deadline.Format(time.RFC3339), dedup.DefaultMaxTTL))
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

func parseImportLine(b []byte) (importMark, error) {
	var rec struct {
		ID       *string    `json:"id"`
		IDBase64 bool       `json:"id_base64"`
		Deadline *time.Time `json:"deadline"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return importMark{}, fmt.Errorf("malformed JSON: %w", err)
	}
	switch {
	case rec.ID == nil:
		return importMark{}, errors.New(`no "id"`)
	case rec.Deadline == nil:
		return importMark{}, errors.New(`no "deadline"`)
	}
	id := []byte(*rec.ID)
	if rec.IDBase64 {
		var err error
		if id, err = base64.StdEncoding.DecodeString(*rec.ID); err != nil {
			return importMark{}, fmt.Errorf("id is not base64: %w", err)
		}
	}
	if len(id) == 0 || len(id) > maxIDSize {
		return importMark{}, fmt.Errorf("ID of %d bytes: it must have 1 to %d", len(id), maxIDSize)
	}
	return importMark{id: id, deadline: *rec.Deadline}, nil
}
