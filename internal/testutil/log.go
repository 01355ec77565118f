package testutil

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Log records what a *slog.Logger logs, for assertions on messages and
// attributes. The zero Log only records; one from NewLog also passes each
// record to its test's Logf while that test runs. It is safe for
// concurrent use.
type Log struct {
	mu      sync.Mutex
	t       testing.TB // nil, or the test records are passed to until it ends
	records []Record
}

// Record is one logged record: its attributes by key, a group's keys
// prefixed with the group's name and a dot, each value resolved
// (slog.Value.Any: an int is an int64, a duration a time.Duration, an
// error the error).
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]any
	keys    []string // in the order logged
}

// String renders r as a line: the level, the message, then key=value
// pairs in the order logged.
func (r Record) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, k := range r.keys {
		fmt.Fprintf(&b, " %s=%v", k, r.Attrs[k])
	}
	return b.String()
}

// NewLog returns a Log that passes records to t.Logf until t's cleanup,
// and afterwards only keeps them: a store that outlives its test, as one
// left open by a panic does, may log after the test has ended, and
// testing panics on a Logf then.
func NewLog(t testing.TB) *Log {
	l := &Log{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.t = nil
	})
	return l
}

// Logger returns a logger that records into l, at every level.
func (l *Log) Logger() *slog.Logger { return slog.New(recorder{log: l}) }

// Records returns the records kept so far, oldest first.
func (l *Log) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.records)
}

// Find returns the records with message msg, oldest first.
func (l *Log) Find(msg string) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []Record
	for _, r := range l.records {
		if r.Message == msg {
			found = append(found, r)
		}
	}
	return found
}

// Contains reports whether a record kept so far, rendered as String
// does, holds s: for an error's text, wherever the error was put.
func (l *Log) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.records, func(r Record) bool { return strings.Contains(r.String(), s) })
}

func (l *Log) add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	if l.t != nil {
		l.t.Helper()
		l.t.Logf("%s", r)
	}
}

// Discard is a logger that drops everything, for stores whose logging
// would only be noise, such as the thousands a crash sweep opens.
var Discard = slog.New(slog.DiscardHandler)

// recorder is the slog.Handler of a Log: attrs are those of WithAttrs,
// already prefixed, and group the prefix of the attributes to come.
type recorder struct {
	log   *Log
	attrs []slog.Attr
	group string
}

func (recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h recorder) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Message: r.Message, Attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.put("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.put(h.group, a)
		return true
	})
	h.log.add(rec)
	return nil
}

func (rec *Record) put(prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			rec.put(p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	k := prefix + a.Key
	if _, ok := rec.Attrs[k]; !ok {
		rec.keys = append(rec.keys, k)
	}
	rec.Attrs[k] = v.Any()
}

func (h recorder) WithAttrs(as []slog.Attr) slog.Handler {
	h.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		a.Key = h.group + a.Key
		h.attrs = append(h.attrs, a)
	}
	return h
}

func (h recorder) WithGroup(name string) slog.Handler {
	if name != "" {
		h.group += name + "."
	}
	return h
}
