package admin

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
	"unicode/utf8"

	"github.com/seed42300104/dedup"
)

// ID is an ID as the JSON of the handler and of dedupctl writes it: as a
// string, or in base64 (RFC 4648, padded) with Base64 set when it is not
// valid UTF-8, which JSON strings cannot hold. Embedded in a line, its
// fields are the line's "id" and "id_base64".
type ID struct {
	Text   string `json:"id"`
	Base64 bool   `json:"id_base64,omitempty"`
}

// NewID returns id as JSON writes it.
func NewID(id []byte) ID {
	if !utf8.Valid(id) {
		return ID{Text: base64.StdEncoding.EncodeToString(id), Base64: true}
	}
	return ID{Text: string(id)}
}

// Bytes decodes the ID.
func (j ID) Bytes() ([]byte, error) {
	if j.Base64 {
		return base64.StdEncoding.DecodeString(j.Text)
	}
	return []byte(j.Text), nil
}

// SeenLine is what get answers for one ID: whether it has a live mark.
type SeenLine struct {
	ID
	Live bool `json:"live"`
}

// ExplainLine is what explain answers for one ID (or, for an HTTP
// idempotency key, the key as the client sent it).
type ExplainLine struct {
	ID
	dedup.Explanation
}

// StatsReport is what stats answers: the same fields in dedupctl's table
// and in JSON.
type StatsReport struct {
	FormatVersion   int           `json:"format_version"`
	Marks           uint64        `json:"marks"`
	EffectiveWindow time.Duration `json:"effective_window_ns"`
	MemtableMarks   int           `json:"memtable_marks"`
	FilterBytes     uint64        `json:"filter_bytes"`
	// FilterFPEstimate is the chance that some generation's filter lets
	// an absent ID through to a lookup.
	FilterFPEstimate float64 `json:"filter_fp_estimate"`
	// DiskBytes is measured as DiskBytes measures it.
	DiskBytes     int64                   `json:"disk_bytes"`
	WALSegments   int                     `json:"wal_segments"`
	WALBytes      int64                   `json:"wal_bytes"`
	LastLSN       uint64                  `json:"last_lsn"`
	CheckpointLSN uint64                  `json:"checkpoint_lsn"`
	Generations   []dedup.GenerationStats `json:"generations"` // never null
	// FailStopped is Store.FailStopped: the store refuses writes until it
	// is reopened.
	FailStopped bool `json:"fail_stopped"`
	// Counters are the store's counters since it was opened, for a client
	// to take rates between two reports. Only the handler sets them: they
	// count the work of the process that holds the store, while a store
	// that dedupctl opens itself with --dir has counted nothing but its
	// own opening.
	Counters *Counters `json:"counters,omitempty"`
}

// Counters is dedup.Counters as stats answers it: totals since the store
// was opened, with each histogram reduced to its sum (package metrics
// exports the buckets). Its JSON names are part of the handler's
// interface: do not rename.
type Counters struct {
	SingleNew        uint64 `json:"single_new"`
	SingleDuplicates uint64 `json:"single_duplicates"`
	BatchNew         uint64 `json:"batch_new"`
	BatchDuplicates  uint64 `json:"batch_duplicates"`

	SeenTrue      uint64 `json:"seen_true"`
	SeenFalse     uint64 `json:"seen_false"`
	SeenByFilters uint64 `json:"seen_by_filters"`

	LookupsByFilters   uint64 `json:"lookups_by_filters"`
	LookupsInMemtables uint64 `json:"lookups_in_memtables"`
	LookupsOnDisk      uint64 `json:"lookups_on_disk"`
	FilterMisses       uint64 `json:"filter_misses"`

	WALAppends     uint64 `json:"wal_appends"`
	WALAppendBytes uint64 `json:"wal_append_bytes"`
	WALSyncs       uint64 `json:"wal_syncs"`
	// WALSyncSeconds is the time the WALSyncs fsyncs took, added up.
	WALSyncSeconds float64 `json:"wal_sync_seconds"`

	Checkpoints uint64 `json:"checkpoints"`
	// CheckpointSeconds is the time the Checkpoints took, added up.
	CheckpointSeconds       float64 `json:"checkpoint_seconds"`
	GenerationsExpired      uint64  `json:"generations_expired"`
	GenerationsDroppedEarly uint64  `json:"generations_dropped_early"`
	Full                    uint64  `json:"full"`
	// Errors counts errors by dedup.ErrorKinds.
	Errors map[string]uint64 `json:"errors"`
}

// NewCounters returns c as stats answers it.
func NewCounters(c dedup.Counters) *Counters {
	return &Counters{
		SingleNew: c.SingleNew, SingleDuplicates: c.SingleDuplicates,
		BatchNew: c.BatchNew, BatchDuplicates: c.BatchDuplicates,
		SeenTrue: c.SeenTrue, SeenFalse: c.SeenFalse, SeenByFilters: c.SeenByFilters,
		LookupsByFilters: c.LookupsByFilters, LookupsInMemtables: c.LookupsInMemtables,
		LookupsOnDisk: c.LookupsOnDisk, FilterMisses: c.FilterMisses,
		WALAppends: c.WALAppends, WALAppendBytes: c.WALAppendBytes,
		WALSyncs: c.WALSyncs, WALSyncSeconds: c.WALSyncSeconds.Sum,
		Checkpoints: c.Checkpoints, CheckpointSeconds: c.CheckpointSeconds.Sum,
		GenerationsExpired: c.GenerationsExpired, GenerationsDroppedEarly: c.GenerationsDroppedEarly,
		Full: c.Full, Errors: c.Errors,
	}
}

// Stats reports on s.
func Stats(s *dedup.Store) (StatsReport, error) {
	st := s.Stats()
	r := StatsReport{
		FormatVersion: s.FormatVersion(), EffectiveWindow: st.EffectiveWindow,
		MemtableMarks: st.MemtableMarks, FilterBytes: st.FilterBytes,
		WALSegments: st.WALSegments, WALBytes: st.WALBytes,
		LastLSN: st.LastLSN, CheckpointLSN: st.CheckpointLSN,
		Generations: append([]dedup.GenerationStats{}, st.Generations...),
		FailStopped: s.FailStopped(),
	}
	miss := 1.0 // that no filter lets an absent ID through
	for _, gen := range st.Generations {
		r.Marks += gen.Marks
		miss *= 1 - gen.FalsePositiveRate
	}
	r.FilterFPEstimate = 1 - miss
	var err error
	r.DiskBytes, err = DiskBytes(s.Dir())
	return r, err
}

// DiskBytes is the one measure of a store's size on disk that stats and
// dedupctl's compact report: the sizes of all the files under dir added
// up, as du --apparent-size counts them (du -sb). It includes the WAL's
// preallocated segments and everything Pebble keeps.
func DiskBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walk, as an obsolete table is
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// VerifyReport is what verify answers, also when it finds damage.
type VerifyReport struct {
	OK         bool   `json:"ok"`
	WALRecords uint64 `json:"wal_records"`
	IndexKeys  uint64 `json:"index_keys"`
	// Uncovered lists Pebble keys, in hex, that no filter covers.
	Uncovered []string `json:"uncovered"` // never null
	// Damage is the error that damage made, if any.
	Damage string `json:"damage,omitempty"`
}

// Verify runs s.Verify, with its cost: writes and checkpoints wait until
// it has read the whole store. Damage, which wraps dedup.ErrCorrupt or is
// keys no filter covers, is both in the report and the error; any other
// failure is an error and no report.
func Verify(s *dedup.Store) (VerifyReport, error) {
	vr, err := s.Verify()
	r := VerifyReport{WALRecords: vr.WALRecords, IndexKeys: vr.IndexKeys, Uncovered: append([]string{}, vr.Uncovered...)}
	switch {
	case errors.Is(err, dedup.ErrCorrupt):
	case err != nil:
		return VerifyReport{}, err
	case len(r.Uncovered) > 0:
		err = fmt.Errorf("%w: %d keys are not covered by their filter", dedup.ErrCorrupt, len(r.Uncovered))
	default:
		r.OK = true
		return r, nil
	}
	r.Damage = err.Error()
	return r, err
}

// MarkLine is one mark as a JSON line: what dedupctl's export writes and
// its import reads, and, with Live and State, what scan answers. Kind says
// what the line holds: a plain mark (KindMark), or a mark with its
// idempotency record (KindRecord), which import restores whole.
type MarkLine struct {
	Kind string `json:"kind"`
	ID
	Deadline *time.Time    `json:"deadline,omitempty"`
	Live     *bool         `json:"live,omitempty"`
	State    string        `json:"state,omitempty"`
	Record   *dedup.Record `json:"record,omitempty"`
}

// The kinds of MarkLine.
const (
	KindMark   = "mark"
	KindRecord = "record"
)

// NewMarkLine returns m as export writes it, without Live and State.
func NewMarkLine(m dedup.Mark) MarkLine {
	l := MarkLine{Kind: KindMark, ID: NewID(m.ID), Record: m.Record}
	if m.Record != nil {
		l.Kind = KindRecord
	}
	if !m.Deadline.IsZero() {
		d := m.Deadline.UTC()
		l.Deadline = &d
	}
	return l
}

// ScanQuery selects what Scan yields.
type ScanQuery struct {
	// Prefix keeps the IDs that start with it.
	Prefix []byte
	// Limit is the most lines yielded; zero means no limit.
	Limit int
	// Expired also yields the versions that are not live: expired,
	// forgotten, or superseded by a later mark of the same ID.
	Expired bool
	// State, if not empty, keeps the lines of that state only: live,
	// in-progress or completed (a live mark with an idempotency record in
	// that state), or expired, forgotten or superseded, which imply
	// Expired.
	State string
}

// Check reports a query that asks for what cannot be, with an error
// that wraps ErrUsage.
func (q ScanQuery) Check() error {
	if q.Limit < 0 {
		return badRequest("--limit must not be negative")
	}
	switch q.State {
	case "", "live", "in-progress", "completed", "expired", "forgotten", "superseded":
		return nil
	}
	return badRequest(fmt.Sprintf("--state must be live, in-progress, completed, expired, forgotten or superseded, not %q", q.State))
}

// ErrUsage is a request that asks for what cannot be: a bad limit or
// state, an unknown parameter. The handler answers it 400, kind usage,
// as it does the store's own errors of bad input (dedup.ErrEmptyID,
// dedup.ErrIDTooLong).
var ErrUsage = errors.New("admin: bad request")

// badRequest is an error that wraps ErrUsage and says only what was
// wrong, as dedupctl prints it.
type badRequest string

func (e badRequest) Error() string        { return string(e) }
func (e badRequest) Is(target error) bool { return target == ErrUsage }

// Scan calls fn with each line q selects, with Live and State set, until
// fn fails or the limit is reached. It has the cost of dedup.Store.Scan:
// the marks are read a step at a time, while writes wait, and a scan that
// stops at the limit has read at most the step it stopped in.
func Scan(s *dedup.Store, q ScanQuery, fn func(MarkLine) error) error {
	if err := q.Check(); err != nil {
		return err
	}
	all := q.Expired
	switch q.State {
	case "expired", "forgotten", "superseded":
		all = true
	}
	now := time.Now()
	n := 0
	var ferr error
	err := s.Scan(q.Prefix, all, func(m dedup.Mark) bool {
		st := State(m, now)
		if q.State != "" && st != q.State {
			return true
		}
		n++
		l := NewMarkLine(m)
		l.Live, l.State = &m.Live, st
		ferr = fn(l)
		return ferr == nil && (q.Limit == 0 || n < q.Limit)
	})
	if err != nil {
		return err
	}
	return ferr
}

// State names what a scanned version is, as ScanQuery.State lists the
// states: a live mark with an idempotency record is in the record's state.
func State(m dedup.Mark, now time.Time) string {
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
