// Package idempotency makes HTTP handlers and message consumers
// idempotent over a dedup.Backend, the embedded dedup.Store or a shared
// one: a repeated request gets the stored response of the first, and a
// redelivered message is not processed again.
//
// Middleware follows draft-ietf-httpapi-idempotency-key-header and
// Stripe's behaviour. The first request with a key runs the handler under
// a lease; its status, chosen headers and body (5xx included) are stored
// for Options.TTL and replayed byte for byte, with "Idempotent-Replayed:
// true", to every repeat. A repeat while the first runs gets 409, a key
// reused for another request 422, a missing (when required) or malformed
// key 400, each with an application/problem+json body (RFC 9457).
//
// Once the handler returns, its work is done: its response is stored
// whether or not its client is still there to read it, since the client's
// retry is the very request a key exists for. Only a panic releases the
// lease, so that a retry runs the handler again; a handler that gives up
// before doing its work, as when its client has gone away, and wants the
// retry to run it, panics with http.ErrAbortHandler, which net/http does
// not log.
//
// A response body longer than Options.MaxResponseBytes still goes to the
// client in full, but is not kept, and neither is the memory to record it:
// the work is still done once, and a repeat gets the stored status and
// the kept headers that do not describe the body, with an
// application/problem+json body saying that the response was not kept.
// Informational (1xx) responses go to the client as they are written and
// are not stored; the final status is.
//
// Consumer gives message consumers the same in one call: run a handler
// for a message ID only if the ID has not been processed, mark it only if
// the handler succeeds, and release it if not.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/seed42300104/dedup"
)

// Options configures Middleware. A nil *Options, or a zero field, means the
// documented default; Middleware never writes to the caller's Options.
type Options struct {
	// KeyHeader is the request header that carries the key. Zero means
	// "Idempotency-Key".
	KeyHeader string
	// Required makes a request without a key fail with 400. Otherwise it
	// passes through to the handler.
	Required bool
	// Methods are the methods the middleware applies to; requests with
	// other methods pass through untouched. Nil means POST and PATCH.
	Methods []string
	// TTL is how long a response is kept and replayed. Zero means 24h.
	TTL time.Duration
	// Lease is how long a request may run before a repeat may take its key
	// over and run the handler again. Zero means one minute.
	Lease time.Duration
	// Fingerprint identifies a request, so that a key reused for another
	// request gets 422. The request's body can be read and is restored
	// afterwards. Nil means SHA-256 of the method, the request URI and the
	// body.
	Fingerprint func(*http.Request) ([]byte, error)
	// Scope is the namespace of a request's key, such as the authenticated
	// account: Stripe scopes keys per account, so that one client cannot
	// replay another's response. Nil means one namespace.
	Scope func(*http.Request) string
	// MaxKeyLength bounds a key, in bytes. Zero means 255, Stripe's limit.
	MaxKeyLength int
	// MaxBodyBytes bounds the request body read for the fingerprint; a
	// larger body gets 413. Zero means 1 MiB.
	MaxBodyBytes int64
	// Headers are the response headers stored and replayed. Nil means
	// Content-Type, Content-Encoding, Content-Language, Location, ETag,
	// Last-Modified and Cache-Control.
	Headers []string
	// MaxResponseBytes bounds the response body kept for replay, and so the
	// memory that recording a response holds. A longer body still goes to
	// the client in full, but a repeat gets its status and a problem body
	// saying that the response was not kept. Zero means all the room the
	// store's MaxValueSize leaves after the request's fingerprint and the
	// response's status and kept headers; a larger value is lowered to
	// that, since a record holds no more.
	MaxResponseBytes int
	// Logger reports what cannot be told to the client, such as a
	// response that could not be stored, with the request's key. Nil
	// means slog.Default().
	Logger *slog.Logger
	// Counters, if set, counts the requests by outcome and times the
	// handler (package metrics exports them). Nil counts nothing.
	Counters *Counters
}

// ReplayedHeader marks a replayed response.
const ReplayedHeader = "Idempotent-Replayed"

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.KeyHeader == "" {
		c.KeyHeader = "Idempotency-Key"
	}
	if c.Methods == nil {
		c.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	if c.TTL == 0 {
		c.TTL = 24 * time.Hour
	}
	if c.Lease == 0 {
		c.Lease = time.Minute
	}
	if c.Fingerprint == nil {
		c.Fingerprint = DefaultFingerprint
	}
	if c.MaxKeyLength == 0 {
		c.MaxKeyLength = 255
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.Headers == nil {
		c.Headers = []string{"Content-Type", "Content-Encoding", "Content-Language", "Location", "ETag", "Last-Modified", "Cache-Control"}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// DefaultFingerprint is SHA-256 of the method, the request URI and the
// body.
func DefaultFingerprint(r *http.Request) ([]byte, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", r.Method, r.URL.RequestURI())
	if _, err := io.Copy(h, r.Body); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// Middleware returns middleware that makes the requests it applies to
// idempotent by their key, over store. A request's context bounds the
// store's Begin; once the handler has run, its response is stored, or its
// lease released after a panic, whether or not the request's context has
// ended.
func Middleware(store dedup.Backend, opts *Options) func(http.Handler) http.Handler {
	o := opts.withDefaults()
	return func(next http.Handler) http.Handler {
		return &handler{store: store, opts: o, next: next}
	}
}

type handler struct {
	store dedup.Backend
	opts  Options
	next  http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !slices.Contains(h.opts.Methods, r.Method) {
		h.next.ServeHTTP(w, r)
		return
	}
	raw, ok := r.Header[http.CanonicalHeaderKey(h.opts.KeyHeader)]
	if !ok {
		if h.opts.Required {
			h.opts.Counters.request(badRequest)
			problem(w, http.StatusBadRequest, "Idempotency key missing", fmt.Sprintf("This request needs an %s header.", h.opts.KeyHeader))
			return
		}
		h.opts.Counters.request(noKey)
		h.next.ServeHTTP(w, r)
		return
	}
	key, err := parseKey(raw, h.opts.MaxKeyLength)
	if err != nil {
		h.opts.Counters.request(badRequest)
		problem(w, http.StatusBadRequest, "Malformed idempotency key", fmt.Sprintf("The %s header: %v.", h.opts.KeyHeader, err))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			h.opts.Counters.request(tooLarge)
			problem(w, http.StatusRequestEntityTooLarge, "Request body too large", fmt.Sprintf("An idempotent request's body may have at most %d bytes.", h.opts.MaxBodyBytes))
			return
		}
		h.opts.Counters.request(badRequest)
		problem(w, http.StatusBadRequest, "Unreadable request body", err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	fp, err := h.opts.Fingerprint(r)
	if err != nil {
		h.opts.Counters.request(badRequest)
		problem(w, http.StatusBadRequest, "Request cannot be fingerprinted", err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	// The record holds the fingerprint and the response together: refuse
	// a request whose fingerprint leaves no room for the least response,
	// its status alone, rather than run it and be unable to store that it
	// ran.
	budget := h.store.MaxValueSize() - len(fp)
	if budget < minStoredResponse {
		h.opts.Counters.request(tooLarge)
		problem(w, http.StatusRequestEntityTooLarge, "Request too large to be made idempotent", fmt.Sprintf("Its fingerprint, %d bytes, leaves no room in an idempotency record of %d bytes for the response.", len(fp), h.store.MaxValueSize()))
		return
	}

	var scope string
	if h.opts.Scope != nil {
		scope = h.opts.Scope(r)
	}
	id := StoreKey(scope, key)
	claim, err := h.store.BeginContext(r.Context(), id, fp, h.opts.Lease, h.opts.TTL)
	if ended := r.Context().Err(); err != nil && ended != nil && errors.Is(err, ended) {
		// The client has gone, or the server gave up on the request:
		// nothing was begun, and a retry with the key runs the handler.
		h.opts.Counters.request(requestEnded)
		problem(w, http.StatusServiceUnavailable, "Request not run", "The request ended before it was run; retry it with the same key.")
		return
	}
	if err != nil {
		h.opts.Counters.request(storeError)
		h.opts.Logger.Error("idempotency: store unavailable, request not run", "key", key, "err", err)
		problem(w, http.StatusInternalServerError, "Idempotency store unavailable", "The request was not run; retry it with the same key.")
		return
	}
	switch claim.Outcome {
	case dedup.Completed:
		h.replay(w, key, claim.Result)
	case dedup.InProgress:
		h.opts.Counters.request(inProgress)
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(time.Until(claim.LeaseEnds).Seconds()+0.5))))
		problem(w, http.StatusConflict, "Request in progress", "A request with this idempotency key is still being processed; retry later.")
	case dedup.Mismatch:
		h.opts.Counters.request(mismatch)
		problem(w, http.StatusUnprocessableEntity, "Idempotency key reused", "This idempotency key was used with a different request.")
	case dedup.Acquired:
		h.run(w, r, key, id, claim.Token, budget)
	}
}

// run runs the handler under the lease of token and stores its response,
// in at most budget bytes; if the handler panics, it releases the lease.
func (h *handler) run(w http.ResponseWriter, r *http.Request, key string, id []byte, token uint64, budget int) {
	rec := &recorder{ResponseWriter: w, headers: h.opts.Headers, budget: budget, maxBody: h.opts.MaxResponseBytes}
	// What the handler did must be recorded even once its client has gone.
	ctx := context.WithoutCancel(r.Context())
	defer func() {
		if p := recover(); p != nil {
			h.opts.Counters.request(releasedAfterPanic)
			if err := h.store.ReleaseContext(ctx, id, token); err != nil {
				h.opts.Logger.Error("idempotency: lease not released after a panic", "key", key, "err", err)
			}
			panic(p)
		}
	}()
	start := time.Now()
	h.next.ServeHTTP(rec, r)
	h.opts.Counters.ran(time.Since(start))
	// The handler returned: its work is done, whatever its client's state,
	// so the response is stored. If that fails the lease is kept, not
	// released: a release would let a retry do the work again at once.
	if err := h.store.CompleteContext(ctx, id, token, rec.encode()); err != nil {
		// The key stays in progress until its lease ends.
		h.opts.Counters.request(notStored)
		h.opts.Logger.Error("idempotency: the handler ran but its response was not stored", "key", key, "err", err)
		return
	}
	h.opts.Counters.request(firstRun)
}

func (h *handler) replay(w http.ResponseWriter, key string, stored []byte) {
	resp, err := decodeResponse(stored)
	if err != nil {
		h.opts.Counters.request(storeError)
		h.opts.Logger.Error("idempotency: stored response unreadable", "key", key, "err", err)
		problem(w, http.StatusInternalServerError, "Stored response unreadable", "The response stored for this idempotency key cannot be read.")
		return
	}
	for name, values := range resp.header {
		w.Header()[name] = values
	}
	w.Header().Set(ReplayedHeader, "true")
	h.opts.Counters.request(replayed)
	if !resp.kept {
		problem(w, resp.status, "Response not kept", fmt.Sprintf("The request with this idempotency key was run and answered %d, but its body, %d bytes, was too large to keep, so it cannot be replayed.", resp.status, resp.size))
		return
	}
	w.WriteHeader(resp.status)
	w.Write(resp.body)
}

// StoreKey is the store ID under which Middleware keeps a key's record:
// a prefix of its own, so that keys do not meet other IDs in the store,
// then the scope, then the key. dedupctl uses it to find a request's
// record.
func StoreKey(scope, key string) []byte {
	id := make([]byte, 0, len(keyPrefix)+len(scope)+1+len(key))
	id = append(id, keyPrefix...)
	id = append(id, scope...)
	id = append(id, 0)
	return append(id, key...)
}

// keyPrefix starts every StoreKey. Part of the stored format.
const keyPrefix = "idempotency\x00"

// parseKey checks a key header: one field, either a structured-field
// string as the draft specifies ("..." with \" and \\ escapes) or, as
// Stripe accepts, bare visible ASCII; 1 to max bytes either way.
func parseKey(values []string, maxLen int) (string, error) {
	if len(values) != 1 {
		return "", fmt.Errorf("%d fields, not one", len(values))
	}
	v := values[0]
	var key []byte
	if len(v) >= 1 && v[0] == '"' {
		for i := 1; ; i++ {
			if i >= len(v) {
				return "", errors.New("an unterminated string")
			}
			c := v[i]
			switch {
			case c == '\\':
				if i+1 >= len(v) || (v[i+1] != '"' && v[i+1] != '\\') {
					return "", errors.New("a bad escape")
				}
				i++
				key = append(key, v[i])
				continue
			case c == '"':
				if i != len(v)-1 {
					return "", errors.New("text after the string")
				}
			case c < 0x20 || c > 0x7e:
				return "", fmt.Errorf("byte 0x%02x", c)
			default:
				key = append(key, c)
				continue
			}
			break
		}
	} else {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c <= 0x20 || c > 0x7e || c == '"' {
				return "", fmt.Errorf("byte 0x%02x", c)
			}
		}
		key = []byte(v)
	}
	switch {
	case len(key) == 0:
		return "", errors.New("it is empty")
	case len(key) > maxLen:
		return "", fmt.Errorf("%d bytes, more than %d", len(key), maxLen)
	}
	return string(key), nil
}

// problem writes an RFC 9457 problem details response.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{"about:blank", title, status, detail})
}

// recorder passes a response through to the client and keeps a copy of
// it, up to a bound.
type recorder struct {
	http.ResponseWriter
	headers []string // which to keep
	budget  int      // bytes the stored response may take
	maxBody int      // Options.MaxResponseBytes

	status  int         // the final status; 0 until it is written
	header  http.Header // the kept headers, as they were when the status was written
	head    []byte      // status and header, encoded
	limit   int         // bytes of body that may be kept
	body    []byte      // the body kept
	size    int64       // bytes of body the handler wrote
	dropped bool        // the body passed limit, and is not kept
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status != 0 {
		return
	}
	// An informational status goes to the client, which may get several,
	// and the final status is still to come; 101 ends the response, as
	// net/http has it.
	if status >= 100 && status <= 199 && status != http.StatusSwitchingProtocols {
		rec.ResponseWriter.WriteHeader(status)
		return
	}
	rec.status = status
	rec.header = http.Header{}
	for _, name := range rec.headers {
		if v := rec.Header().Values(name); len(v) > 0 {
			rec.header[http.CanonicalHeaderKey(name)] = slices.Clone(v)
		}
	}
	rec.head = appendHead(nil, status, rec.header)
	rec.limit = rec.budget - 1 - len(rec.head)
	if rec.maxBody > 0 {
		rec.limit = min(rec.limit, rec.maxBody)
	}
	rec.dropped = rec.limit < 0
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(p []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	rec.size += int64(len(p))
	switch {
	case rec.dropped:
	case len(rec.body)+len(p) > rec.limit:
		rec.dropped, rec.body = true, nil
	default:
		rec.body = append(rec.body, p...)
	}
	return rec.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the client's writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// A stored response, kept whole (version 1) or without its body (version
// 2):
//
//	| version 1 (1B) | status (2B) | headers uvarint | per header: name, values uvarint, values |
//	| body |
//
//	| version 2 (1B) | status (2B) | headers uvarint | per header: name, values uvarint, values |
//	| body size uvarint |
//
// Strings are uvarint-prefixed; integers little-endian. Version 2 keeps
// only the headers that do not describe the body, or none if they do not
// fit. It is stored in the key's record. Part of the stored format.
const (
	responseKept    = 1
	responseNotKept = 2
)

// minStoredResponse is the most a version 2 response without headers
// takes: the least room a record must leave for a response.
const minStoredResponse = 1 + 2 + 1 + binary.MaxVarintLen64

// encode returns the response to store: whole if it fits the budget,
// otherwise without its body.
func (rec *recorder) encode() []byte {
	rec.WriteHeader(http.StatusOK) // a handler that wrote nothing answered 200
	if !rec.dropped {
		b := make([]byte, 0, 1+len(rec.head)+len(rec.body))
		b = append(b, responseKept)
		b = append(b, rec.head...)
		return append(b, rec.body...)
	}
	header := http.Header{}
	for name, v := range rec.header {
		if !describesBody(name) {
			header[name] = v
		}
	}
	b := append([]byte{responseNotKept}, appendHead(nil, rec.status, header)...)
	if len(b)+binary.MaxVarintLen64 > rec.budget {
		b = append([]byte{responseNotKept}, appendHead(nil, rec.status, nil)...)
	}
	return binary.AppendUvarint(b, uint64(rec.size))
}

// describesBody reports whether a header is about the body, and so does
// not belong with a response whose body was not kept.
func describesBody(name string) bool {
	return strings.HasPrefix(name, "Content-") || name == "Etag" || name == "Last-Modified"
}

func appendHead(b []byte, status int, header http.Header) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(status))
	b = binary.AppendUvarint(b, uint64(len(header)))
	for _, name := range slices.Sorted(maps.Keys(header)) {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(header[name])))
		for _, v := range header[name] {
			b = appendString(b, v)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type response struct {
	status int
	header http.Header
	kept   bool   // the body was kept
	body   []byte // if kept
	size   uint64 // the body's size, if not kept
}

var errBadResponse = errors.New("idempotency: a stored response does not decode")

func decodeResponse(b []byte) (response, error) {
	if len(b) < 3 || (b[0] != responseKept && b[0] != responseNotKept) {
		return response{}, errBadResponse
	}
	r := response{status: int(binary.LittleEndian.Uint16(b[1:])), header: http.Header{}, kept: b[0] == responseKept}
	b = b[3:]
	n, err := readUvarint(&b)
	if err != nil {
		return response{}, err
	}
	for range n {
		name, err := readString(&b)
		if err != nil {
			return response{}, err
		}
		nv, err := readUvarint(&b)
		if err != nil {
			return response{}, err
		}
		for range nv {
			v, err := readString(&b)
			if err != nil {
				return response{}, err
			}
			r.header[name] = append(r.header[name], v)
		}
	}
	if !r.kept {
		n, w := binary.Uvarint(b)
		if w <= 0 || w != len(b) {
			return response{}, errBadResponse
		}
		r.size = n
		return r, nil
	}
	r.body = b
	return r, nil
}

func readUvarint(b *[]byte) (uint64, error) {
	n, w := binary.Uvarint(*b)
	if w <= 0 || n > uint64(len(*b)) {
		return 0, errBadResponse
	}
	*b = (*b)[w:]
	return n, nil
}

func readString(b *[]byte) (string, error) {
	n, err := readUvarint(b)
	if err != nil || n > uint64(len(*b)) {
		return "", errBadResponse
	}
	s := string((*b)[:n])
	*b = (*b)[n:]
	return s, nil
}
