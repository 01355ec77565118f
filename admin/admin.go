// Package admin serves a live dedup.Store's read-only operator views over
// HTTP: stats, get, explain, scan and verify, as the JSON that dedupctl
// prints with -o json. dedupctl --addr is its client, so that an operator
// can inspect a store that a running process holds locked.
//
// The handler answers GET (and HEAD) on these paths, relative to where it
// is mounted (mount it under a prefix with http.StripPrefix):
//
//	/stats                           one JSON document, StatsReport,
//	                                 with the store's Counters
//	/get?id=A&id=B                   JSON Lines, SeenLine per ID
//	/explain?id=A[&http=1&scope=S]   JSON Lines, ExplainLine per ID; with
//	                                 http=1 the IDs are Idempotency-Key
//	                                 values of the idempotency middleware
//	                                 in scope S
//	/scan?prefix=P&limit=N&expired=1&state=S
//	                                 JSON Lines, MarkLine per mark; see
//	                                 ScanQuery and Options.MaxScanLines
//	/verify                          one JSON document, VerifyReport
//
// An ID that is not valid UTF-8 is percent-encoded in the query like any
// other byte. A failure is a Problem: as the body (application/problem+json,
// RFC 9457, with the status) when nothing else was written, or, once a
// stream or verify's report is under way, in the Dedup-Error header or
// trailer, which a client must check after reading the body to its end.
//
// Nothing it serves changes the store, and nothing writes is offered. It
// is not for the public: it reveals IDs, idempotency keys and the stored
// responses of the middleware. Serve it on a loopback or otherwise
// private listener, or behind the application's own authentication.
//
// Two requests cost the writers of the store: a scan reads every mark
// under its prefix into memory, while writes wait, whatever its limit;
// verify reads the whole store, WAL and Pebble, while writes and
// checkpoints wait.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
)

// DefaultMaxScanLines is Options.MaxScanLines when it is zero.
const DefaultMaxScanLines = 10_000

// Options configures the handler. A nil *Options, or a zero field, means
// the documented default; Handler never writes to the caller's Options.
type Options struct {
	// MaxScanLines bounds the lines one scan answers. A scan with no
	// limit, or a larger one, that would answer more stops after
	// MaxScanLines lines with a usage problem in the trailer, so that a
	// client knows the answer is cut short. Zero (or less) means
	// DefaultMaxScanLines.
	MaxScanLines int
}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	if out.MaxScanLines <= 0 {
		out.MaxScanLines = DefaultMaxScanLines
	}
	return out
}

// Handler returns the read-only admin handler of store. See the package
// doc for what it serves and why it must not be exposed publicly.
func Handler(store *dedup.Store, opts *Options) http.Handler {
	h := &handler{store: store, opts: opts.withDefaults(), mux: http.NewServeMux()}
	h.mux.HandleFunc("/stats", h.stats)
	h.mux.HandleFunc("/get", h.get)
	h.mux.HandleFunc("/explain", h.explain)
	h.mux.HandleFunc("/scan", h.scan)
	h.mux.HandleFunc("/verify", h.verify)
	return h
}

type handler struct {
	store *dedup.Store
	opts  Options
	mux   *http.ServeMux
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeProblem(w, &Problem{Kind: KindUsage, Status: http.StatusMethodNotAllowed,
			Detail: fmt.Sprintf("%s is not served: the admin handler is read-only", r.Method)})
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		writeProblem(w, &Problem{Kind: KindNotFound, Status: http.StatusNotFound,
			Detail: fmt.Sprintf("%s is not served: try /stats, /get, /explain, /scan or /verify", r.URL.Path)})
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	rep, err := Stats(h.store)
	if err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	rep.Counters = NewCounters(h.store.Counters())
	writeDocument(w, http.StatusOK, rep)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "id")
	if err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	ids := q["id"]
	if len(ids) == 0 {
		writeProblem(w, problemOf(errNoID))
		return
	}
	lines := make([]SeenLine, len(ids))
	for i, id := range ids {
		live, err := h.store.Seen([]byte(id))
		if err != nil {
			writeProblem(w, problemOf(err))
			return
		}
		lines[i] = SeenLine{NewID([]byte(id)), live}
	}
	s := newStream(w)
	for _, l := range lines {
		if err := s.line(l); err != nil {
			return // the client has gone
		}
	}
	s.end(nil)
}

func (h *handler) explain(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "id", "http", "scope")
	var httpKeys bool
	if err == nil && q.Has("http") {
		httpKeys, err = parseBool(q, "http")
	}
	if err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	if !q.Has("id") {
		writeProblem(w, problemOf(errNoID))
		return
	}
	s := newStream(w)
	for _, a := range q["id"] {
		id := []byte(a)
		if httpKeys {
			id = idempotency.StoreKey(q.Get("scope"), a)
		}
		x, err := h.store.Explain(id)
		if err != nil {
			s.end(err)
			return
		}
		if err := s.line(ExplainLine{NewID([]byte(a)), x}); err != nil {
			return
		}
	}
	s.end(nil)
}

func (h *handler) scan(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "prefix", "limit", "expired", "state")
	var sq ScanQuery
	if err == nil {
		sq, err = scanQuery(q)
	}
	if err == nil {
		err = sq.Check()
	}
	if err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	// Ask for one line more than the handler serves, to tell a store
	// that holds exactly that many from one that holds more.
	max := h.opts.MaxScanLines
	capped := sq.Limit == 0 || sq.Limit > max
	if capped {
		sq.Limit = max + 1
	}
	s := newStream(w)
	n := 0
	err = Scan(h.store, sq, func(l MarkLine) error {
		if n++; capped && n > max {
			return badRequest(fmt.Sprintf("scan stopped after %d lines, the most the admin handler serves at once: give a smaller --limit, or narrow it with --prefix or --state", max))
		}
		return s.line(l)
	})
	if s.gone {
		return
	}
	s.end(err)
}

func (h *handler) verify(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	rep, err := Verify(h.store)
	if err != nil && rep.Damage == "" {
		writeProblem(w, problemOf(err))
		return
	}
	status := http.StatusOK
	if err != nil {
		p := problemOf(err)
		status = p.Status
		w.Header().Set(ErrorHeader, p.encode())
	}
	writeDocument(w, status, rep)
}

var errNoID = badRequest("no ID: give one or more id parameters")

// query returns the request's query parameters, or an error that wraps
// ErrUsage if it has one not in allowed, so that a mistyped parameter is
// not silently ignored.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest(fmt.Sprintf("query %q: %v", r.URL.RawQuery, err))
	}
	for k := range q {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		if !known {
			return nil, badRequest(fmt.Sprintf("unknown parameter %q", k))
		}
	}
	return q, nil
}

func scanQuery(q url.Values) (ScanQuery, error) {
	sq := ScanQuery{Prefix: []byte(q.Get("prefix")), State: q.Get("state")}
	var err error
	if q.Has("limit") {
		if sq.Limit, err = strconv.Atoi(q.Get("limit")); err != nil {
			return sq, badRequest(fmt.Sprintf("--limit %q is not a number", q.Get("limit")))
		}
	}
	if q.Has("expired") {
		sq.Expired, err = parseBool(q, "expired")
	}
	return sq, err
}

func parseBool(q url.Values, name string) (bool, error) {
	b, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, badRequest(fmt.Sprintf("%s=%q is not true or false", name, q.Get(name)))
	}
	return b, nil
}

func writeDocument(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) // a client gone away is not the handler's failure
}

// stream writes JSON Lines. Until its first line it can still answer a
// failure with a problem body; after, a failure goes in the trailer.
type stream struct {
	w       http.ResponseWriter
	enc     *json.Encoder
	started bool
	gone    bool // a write failed: the client has gone
}

func newStream(w http.ResponseWriter) *stream { return &stream{w: w, enc: json.NewEncoder(w)} }

func (s *stream) line(v any) error {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/jsonl")
		s.w.Header().Set("Trailer", ErrorHeader)
		s.w.WriteHeader(http.StatusOK)
	}
	err := s.enc.Encode(v)
	s.gone = err != nil
	return err
}

// end ends the stream with err, if not nil, as a problem.
func (s *stream) end(err error) {
	switch {
	case err == nil && !s.started:
		s.w.Header().Set("Content-Type", "application/jsonl")
		s.w.WriteHeader(http.StatusOK)
	case err != nil && !s.started:
		writeProblem(s.w, problemOf(err))
	case err != nil:
		s.w.Header().Set(ErrorHeader, problemOf(err).encode())
	}
}

// ErrorHeader is the header, or trailer, that carries a Problem when the
// body is the answer's output: verify's report of damage, or a stream
// that failed or was cut short after its first line.
const ErrorHeader = "Dedup-Error"

// ProblemContentType is the content type of a body that is a Problem.
const ProblemContentType = "application/problem+json"

// The kinds of Problem, for a client to act on (dedupctl maps them to its
// exit codes). Part of the handler's interface: do not rename.
const (
	KindUsage      = "usage"      // a bad request: parameter, ID, limit, state (400, 405)
	KindNotFound   = "not_found"  // a path the handler does not serve (404)
	KindCorrupt    = "corrupt"    // the store is damaged: dedup.ErrCorrupt (500)
	KindPermission = "permission" // the store's files may not be read (500)
	KindClosed     = "closed"     // the store is closed (503)
	KindError      = "error"      // any other failure, such as an I/O error (500)
)

// Problem is a failure as the handler answers it: RFC 9457 problem
// details with Kind, one of the Kind constants, as an extension member.
type Problem struct {
	Kind   string `json:"kind"`
	Status int    `json:"status"`
	Title  string `json:"title"`
	// Detail is the error's message, as dedupctl would print it.
	Detail string `json:"detail"`
}

func (p *Problem) Error() string { return p.Detail }

// problemOf returns the problem that answers err.
func problemOf(err error) *Problem {
	p := &Problem{Kind: KindError, Status: http.StatusInternalServerError, Detail: err.Error()}
	switch {
	case errors.Is(err, ErrUsage), errors.Is(err, dedup.ErrEmptyID), errors.Is(err, dedup.ErrIDTooLong):
		p.Kind, p.Status = KindUsage, http.StatusBadRequest
	case errors.Is(err, dedup.ErrCorrupt), errors.Is(err, dedup.ErrIncompatibleFormat):
		p.Kind = KindCorrupt
	case errors.Is(err, dedup.ErrPermission), errors.Is(err, fs.ErrPermission):
		p.Kind = KindPermission
	case errors.Is(err, dedup.ErrClosed):
		p.Kind, p.Status = KindClosed, http.StatusServiceUnavailable
	}
	p.Title = http.StatusText(p.Status)
	return p
}

func (p *Problem) encode() string {
	b, _ := json.Marshal(p) // of strings and an int: cannot fail
	return string(b)
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	p.Title = http.StatusText(p.Status)
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	w.Write([]byte(p.encode() + "\n")) // a client gone away is not the handler's failure
}
