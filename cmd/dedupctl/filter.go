package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup"
)

const (
	// maxIDSize is the longest ID filter hands to the store. It is the
	// store's default Options.MaxIDSize, set explicitly so that the two
	// agree and an overlong ID is a bad line rather than a failed batch.
	maxIDSize = 4096
	// maxLine bounds an input line, and so the memory filter needs.
	maxLine = 16 << 20
)

// filterFlags are the flags of the filter command, as given.
type filterFlags struct {
	ttl   time.Duration
	field string
	regex string
	onBad string
	batch int
	sync  string
}

func newFilter(g *globals) *cobra.Command {
	var fl filterFlags
	cmd := &cobra.Command{
		Use:   "filter",
		Short: "Copy stdin to stdout, keeping only the lines whose ID is new",
		Long: `Reads lines from stdin and writes to stdout, in input order, only those whose
ID has no live mark in the store, marking it for --ttl. The store under --dir
is created if missing, so the filter remembers across runs.

The ID is the whole line (without its line end), the JSON field at --field
(a string's value or a number's literal text), or the first capture group of
--regex. A line without an ID (no match, a missing or non-scalar field, an
empty ID or one over 4096 bytes) or with malformed JSON is reported on stderr
with its line number and passed or dropped as --on-bad says. A summary goes
to stderr at the end.

Lines are marked in batches of --batch, each one call to the store, and
then written to stdout, one write per batch. A line passes only once its
mark is durable (as --sync says), so that a line written is never passed
again by a later run.

If stdout closes early (dedupctl filter | head -1), filter stops reading,
forgets again the marks of the new lines of the batch that were not
written in full, so that a later run passes them, and exits 1. A line
counts as written once the write to stdout returns: lines left unread in a
pipe by a reader that stopped stay marked. A crash between a batch's
marking and its write also leaves its new lines marked and not written:
at most one batch, and --batch 1 bounds that to one line.`,
		Example: `  dedupctl filter --dir /var/lib/seen < events.log > new.log
  tail -f events.jsonl | dedupctl filter --dir seen --field .meta.event_id --ttl 1h
  dedupctl filter --dir seen --regex 'msgid=(\S+)' --on-bad drop`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, mode, err := fl.parse()
			if err != nil {
				return err
			}
			// A write to a closed pipe (dedupctl filter | head -1) then
			// fails with EPIPE instead of killing the process, so that
			// filter can forget the marks of the lines it did not write.
			signal.Ignore(syscall.SIGPIPE)
			return g.withStore(cmd, dedup.Options{Sync: mode, MaxIDSize: maxIDSize}, func(s *dedup.Store) error {
				f.store = s
				f.out = cmd.OutOrStdout()
				f.stderr = cmd.ErrOrStderr()
				err := f.run(cmd.InOrStdin())
				if serr := f.printSummary(g.output); err == nil {
					err = serr
				}
				return err
			})
		},
	}
	flags := cmd.Flags()
	flags.DurationVar(&fl.ttl, "ttl", 0, "TTL of the marks (0: the store's default, 24h)")
	flags.StringVar(&fl.field, "field", "", "the ID is this JSON field of each line, as .id or .meta.event_id")
	flags.StringVar(&fl.regex, "regex", "", "the ID is the first capture group of this regular expression")
	flags.StringVar(&fl.onBad, "on-bad", "pass", "what to do with a line without an ID: pass or drop")
	flags.IntVar(&fl.batch, "batch", 1024, "lines per store call")
	flags.StringVar(&fl.sync, "sync", "always", "durability: always, interval or none")
	return cmd
}

// parse checks the flags and returns the filter they describe, without
// its store and streams, and the store's sync mode.
func (fl *filterFlags) parse() (*filter, dedup.SyncMode, error) {
	mode, err := parseSync(fl.sync)
	if err != nil {
		return nil, 0, err
	}
	if err := checkTTL(fl.ttl); err != nil {
		return nil, 0, err
	}
	if fl.batch <= 0 {
		return nil, 0, usageError{fmt.Errorf("--batch must be positive, not %d", fl.batch)}
	}
	if fl.onBad != "pass" && fl.onBad != "drop" {
		return nil, 0, usageError{fmt.Errorf("--on-bad must be pass or drop, not %q", fl.onBad)}
	}
	id, err := fl.idFunc()
	if err != nil {
		return nil, 0, err
	}
	return &filter{ttl: fl.ttl, id: id, passBad: fl.onBad == "pass", batchSize: fl.batch}, mode, nil
}

// idFunc returns how to find a line's ID, from --field or --regex.
func (fl *filterFlags) idFunc() (idFunc, error) {
	switch {
	case fl.field != "" && fl.regex != "":
		return nil, usageError{errors.New("give --field or --regex, not both")}
	case fl.field != "":
		p, err := parseJSONPath(fl.field)
		if err != nil {
			return nil, usageError{err}
		}
		return p.id, nil
	case fl.regex != "":
		re, err := regexp.Compile(fl.regex)
		if err != nil {
			return nil, usageError{fmt.Errorf("--regex: %w", err)}
		}
		if re.NumSubexp() == 0 {
			return nil, usageError{fmt.Errorf("--regex %q has no capture group for the ID", fl.regex)}
		}
		return regexID(re), nil
	}
	return wholeLine, nil
}

// An idFunc returns the ID in a line (which it may alias), or why the line
// has none.
type idFunc func(line []byte) ([]byte, error)

func wholeLine(line []byte) ([]byte, error) { return line, nil }

// regexID returns an idFunc taking the first capture group of re.
func regexID(re *regexp.Regexp) idFunc {
	return func(line []byte) ([]byte, error) {
		m := re.FindSubmatchIndex(line)
		if m == nil || m[2] < 0 {
			return nil, fmt.Errorf("no ID: no match for --regex %s", re)
		}
		return line[m[2]:m[3]], nil
	}
}

// jsonPath is a parsed --field: the keys to follow from the top-level
// object to the ID.
type jsonPath []string

// parseJSONPath parses a path of the form .key1.key2, at least one key.
func parseJSONPath(s string) (jsonPath, error) {
	rest, ok := strings.CutPrefix(s, ".")
	if !ok || rest == "" {
		return nil, fmt.Errorf("--field %q must be a path of keys such as .id or .meta.event_id", s)
	}
	keys := strings.Split(rest, ".")
	for _, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("--field %q has an empty key", s)
		}
	}
	return keys, nil
}

func (p jsonPath) String() string { return "." + strings.Join(p, ".") }

// id returns the string value or the number literal at p in the JSON
// document line.
func (p jsonPath) id(line []byte) ([]byte, error) {
	raw := json.RawMessage(line)
	for _, key := range p {
		// Unmarshal checks the whole document before decoding, so only a
		// syntax error at the top level can happen.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			if syn := (*json.SyntaxError)(nil); errors.As(err, &syn) {
				return nil, fmt.Errorf("malformed JSON at byte %d: %w", syn.Offset, err)
			}
			return nil, p.noID() // not an object
		}
		var ok bool
		if raw, ok = obj[key]; !ok {
			return nil, p.noID()
		}
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("string at %v: %w", p, err)
		}
		return []byte(s), nil
	case c == '-' || '0' <= c && c <= '9':
		return raw, nil
	}
	return nil, p.noID() // an object, array, boolean or null
}

func (p jsonPath) noID() error { return fmt.Errorf("no ID at %v", p) }

// filter passes on the lines whose ID the store finds new.
type filter struct {
	store     *dedup.Store
	ttl       time.Duration
	id        idFunc
	passBad   bool
	batchSize int
	out       io.Writer
	stderr    io.Writer
	outBuf    []byte // a batch's output, written in one call

	batch  filterBatch
	counts filterCounts
}

// filterBatch holds the lines read since the last store call. Lines and
// IDs are copied into one buffer reused from batch to batch.
type filterBatch struct {
	buf   []byte
	lines []lineRef
	ids   [][]byte // the IDs of the good lines, for the store call
}

// lineRef locates a line, and its ID unless it is bad, in filterBatch.buf.
type lineRef struct {
	start, end     int
	idStart, idEnd int
	bad            bool
}

// filterCounts is the summary of a run.
type filterCounts struct {
	Read       int64 `json:"read"`
	New        int64 `json:"new"`
	Duplicates int64 `json:"duplicates"`
	Bad        int64 `json:"bad"`
	// Unwritten counts the new lines that could not be written, whose
	// marks were forgotten again.
	Unwritten int64 `json:"unwritten"`
}

// run filters the lines of in to f.out, a batch at a time.
func (f *filter) run(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), maxLine)
	sc.Split(scanLines)
	for sc.Scan() {
		f.add(sc.Bytes())
		if len(f.batch.lines) == f.batchSize {
			if err := f.flush(); err != nil {
				return err
			}
		}
	}
	if err := f.flush(); err != nil {
		return err
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Errorf("line %d: longer than the limit of %d MiB", f.counts.Read+1, maxLine>>20)
	case err != nil:
		return fmt.Errorf("line %d: read input: %w", f.counts.Read+1, err)
	}
	return nil
}

// scanLines splits at '\n' only, so that a "\r\n" line end is written
// back as it was read.
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// add appends line to the batch with its ID, or reports it as bad.
func (f *filter) add(line []byte) {
	f.counts.Read++
	b := &f.batch
	ref := lineRef{start: len(b.buf)}
	b.buf = append(b.buf, line...)
	ref.end = len(b.buf)
	id, err := f.id(bytes.TrimSuffix(line, []byte{'\r'}))
	if err == nil {
		err = checkID(id)
	}
	if err != nil {
		ref.bad = true
		fmt.Fprintf(f.stderr, "dedupctl: line %d: %v\n", f.counts.Read, err)
	} else {
		ref.idStart = len(b.buf)
		b.buf = append(b.buf, id...)
		ref.idEnd = len(b.buf)
	}
	b.lines = append(b.lines, ref)
}

// checkID rejects the IDs the store would reject, which would fail the
// whole batch.
func checkID(id []byte) error {
	switch {
	case len(id) == 0:
		return errors.New("empty ID")
	case len(id) > maxIDSize:
		return fmt.Errorf("ID of %d bytes is over the limit of %d", len(id), maxIDSize)
	}
	return nil
}

// flush marks the batch's IDs in one store call and writes the lines to
// pass in one write. If the write fails it forgets again the marks of the
// new lines not written in full.
func (f *filter) flush() error {
	b := &f.batch
	if len(b.lines) == 0 {
		return nil
	}
	b.ids = b.ids[:0]
	for _, l := range b.lines {
		if !l.bad {
			b.ids = append(b.ids, b.buf[l.idStart:l.idEnd])
		}
	}
	var isNew []bool
	if len(b.ids) > 0 {
		var err error
		if isNew, err = f.store.CheckAndMarkBatch(b.ids, f.ttl); err != nil {
			first := f.counts.Read - int64(len(b.lines)) + 1
			return fmt.Errorf("lines %d-%d: %w", first, f.counts.Read, err)
		}
	}
	// newEnds[i] is where the ith new line's output ends, and newIDs its
	// ID: those not written in full are forgotten.
	var newEnds []int
	var newIDs [][]byte
	f.outBuf = f.outBuf[:0]
	for _, l := range b.lines {
		pass := f.passBad
		if l.bad {
			f.counts.Bad++
		} else {
			pass, isNew = isNew[0], isNew[1:]
			if pass {
				f.counts.New++
			} else {
				f.counts.Duplicates++
			}
		}
		if pass {
			f.outBuf = append(f.outBuf, b.buf[l.start:l.end]...)
			f.outBuf = append(f.outBuf, '\n')
			if !l.bad {
				newEnds = append(newEnds, len(f.outBuf))
				newIDs = append(newIDs, b.buf[l.idStart:l.idEnd])
			}
		}
	}
	var werr error
	if len(f.outBuf) > 0 {
		var n int
		n, werr = f.out.Write(f.outBuf)
		if werr != nil {
			werr = f.unwrite(newEnds, newIDs, n, werr)
		}
	}
	b.buf, b.lines = b.buf[:0], b.lines[:0]
	return werr
}

// unwrite forgets the marks of the new lines whose output, ending at ends,
// did not fit in the n bytes written before err.
func (f *filter) unwrite(ends []int, ids [][]byte, n int, err error) error {
	errs := []error{fmt.Errorf("write output: %w", err)}
	for i, end := range ends {
		if end <= n {
			continue
		}
		if ferr := f.store.Forget(ids[i]); ferr != nil {
			errs = append(errs, fmt.Errorf("forgetting the mark of an unwritten line: %w", ferr))
			break
		}
		f.counts.New--
		f.counts.Unwritten++
	}
	if f.counts.Unwritten > 0 {
		errs[0] = fmt.Errorf("%w; the marks of the %d new lines not written were forgotten again", errs[0], f.counts.Unwritten)
	}
	return errors.Join(errs...)
}

// printSummary writes the counts to stderr, as one line of text or JSON.
func (f *filter) printSummary(output string) error {
	onBad := "dropped"
	if f.passBad {
		onBad = "passed"
	}
	if output == "json" {
		return json.NewEncoder(f.stderr).Encode(struct {
			filterCounts
			Bad string `json:"bad_lines"`
		}{f.counts, onBad})
	}
	c := f.counts
	unwritten := ""
	if c.Unwritten > 0 {
		unwritten = fmt.Sprintf(", %d new not written and forgotten", c.Unwritten)
	}
	_, err := fmt.Fprintf(f.stderr, "dedupctl: %d lines read, %d new passed, %d duplicates dropped, %d bad %s%s\n",
		c.Read, c.New, c.Duplicates, c.Bad, onBad, unwritten)
	return err
}
