package testutil

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Log is a sink for a Logf option: it keeps every line for assertions.
// The zero Log only keeps them; one from NewLog also passes each line to
// its test's Logf while that test runs. It is safe for concurrent use.
type Log struct {
	mu    sync.Mutex
	t     testing.TB // nil, or the test lines are passed to until it ends
	lines []string
}

// NewLog returns a Log that passes lines to t.Logf until t's cleanup, and
// afterwards only keeps them: a store that outlives its test, as one left
// open by a panic does, may log after the test has ended, and testing
// panics on a Logf then.
func NewLog(t testing.TB) *Log {
	l := &Log{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.t = nil
	})
	return l
}

// Logf keeps the line that format and args make.
func (l *Log) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if l.t != nil {
		l.t.Helper()
		l.t.Logf("%s", line)
	}
}

// Lines returns the lines kept so far, oldest first.
func (l *Log) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// Contains reports whether a line kept so far holds s.
func (l *Log) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

// Discard is a Logf that drops every line, for stores whose logging would
// only be noise, such as the thousands a crash sweep opens.
func Discard(string, ...any) {}
