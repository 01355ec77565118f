package admin_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/idempotency"
)

// liveStore opens a store, writes a plain mark, a binary ID, a job in
// progress and an HTTP idempotency record to it, and serves its admin
// handler. The store stays open, locked, for the whole test.
func liveStore(t *testing.T, opts *admin.Options) (*dedup.Store, *httptest.Server) {
	t.Helper()
	s, err := dedup.Open(filepath.Join(t.TempDir(), "s"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	_, err = s.CheckAndMarkBatch([][]byte{[]byte("plain"), {0xff, 0xfe}}, time.Hour)
	require.NoError(t, err)
	_, err = s.Begin([]byte("job"), []byte{0xab}, time.Hour, 2*time.Hour)
	require.NoError(t, err)
	key := idempotency.StoreKey("acct_1", "order-9")
	c, err := s.Begin(key, nil, time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete(key, c.Token, []byte("stored response")))
	srv := httptest.NewServer(admin.Handler(s, opts))
	t.Cleanup(srv.Close)
	return s, srv
}

// get asks the handler and returns the response with its body read, so
// that its trailer is there.
func get(t *testing.T, srv *httptest.Server, path string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// jsonLines decodes a JSON Lines body into values of T.
func jsonLines[T any](t *testing.T, body string) []T {
	t.Helper()
	var out []T
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var v T
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v), sc.Text())
		out = append(out, v)
	}
	return out
}

func TestStatsIsOneDocument(t *testing.T) {
	_, srv := liveStore(t, nil)
	resp, body := get(t, srv, "/stats")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var r admin.StatsReport
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	assert.Equal(t, dedup.FormatVersion, r.FormatVersion)
	assert.Equal(t, uint64(4), r.Marks)
	assert.Equal(t, 4, r.MemtableMarks, "nothing is checkpointed yet")
	assert.Positive(t, r.DiskBytes)
	assert.NotEmpty(t, r.Generations)
}

// TestStatsCarriesTheLiveStoresCounters checks that the handler's stats
// add the store's counters and its fail-stop state to the fields stats
// always had, under stable JSON names, so that a watcher can take rates.
func TestStatsCarriesTheLiveStoresCounters(t *testing.T) {
	s, srv := liveStore(t, nil)
	for _, id := range []string{"plain", "fresh-1", "fresh-2"} {
		_, err := s.CheckAndMark([]byte(id), time.Hour)
		require.NoError(t, err)
	}
	_, err := s.CheckAndMark(nil, time.Hour)
	require.ErrorIs(t, err, dedup.ErrEmptyID)

	resp, body := get(t, srv, "/stats")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &fields))
	assert.ElementsMatch(t, []string{"format_version", "marks", "effective_window_ns", "memtable_marks",
		"filter_bytes", "filter_fp_estimate", "disk_bytes", "wal_segments", "wal_bytes", "last_lsn",
		"checkpoint_lsn", "generations", "fail_stopped", "counters"}, slices.Collect(maps.Keys(fields)))
	var c map[string]any
	require.NoError(t, json.Unmarshal(fields["counters"], &c))
	assert.Contains(t, c, "wal_sync_seconds")

	var r admin.StatsReport
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	assert.False(t, r.FailStopped)
	require.NotNil(t, r.Counters)
	assert.Equal(t, uint64(2), r.Counters.SingleNew)
	assert.Equal(t, uint64(1), r.Counters.SingleDuplicates)
	assert.Equal(t, uint64(2), r.Counters.BatchNew, "liveStore's batch")
	assert.Positive(t, r.Counters.WALAppends)
	assert.Positive(t, r.Counters.WALAppendBytes)
	assert.Equal(t, uint64(1), r.Counters.Errors["invalid_argument"])
	assert.Len(t, r.Counters.Errors, len(dedup.ErrorKinds))
}

func TestGetAnswersEachID(t *testing.T) {
	_, srv := liveStore(t, nil)
	resp, body := get(t, srv, "/get?id=plain&id=%FF%FE&id=unseen")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, "application/jsonl", resp.Header.Get("Content-Type"))
	assert.Equal(t, `{"id":"plain","live":true}
{"id":"//4=","id_base64":true,"live":true}
{"id":"unseen","live":false}
`, body)
	assert.Empty(t, resp.Trailer.Get(admin.ErrorHeader))
}

func TestExplainShowsMarksAndHTTPRecords(t *testing.T) {
	_, srv := liveStore(t, nil)
	resp, body := get(t, srv, "/explain?id=plain&id=job")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	lines := jsonLines[admin.ExplainLine](t, body)
	require.Len(t, lines, 2)
	assert.Equal(t, "plain", lines[0].Text)
	assert.True(t, lines[0].Live)
	assert.Nil(t, lines[0].Record)
	require.NotNil(t, lines[0].Unflushed, "the mark is in the WAL tail")
	assert.Equal(t, "job", lines[1].Text)
	require.NotNil(t, lines[1].Record)
	assert.Equal(t, dedup.StateInProgress, lines[1].Record.State)
	assert.Equal(t, []byte{0xab}, lines[1].Record.Fingerprint)

	resp, body = get(t, srv, "/explain?http=1&scope=acct_1&id=order-9")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	lines = jsonLines[admin.ExplainLine](t, body)
	require.Len(t, lines, 1)
	assert.Equal(t, "order-9", lines[0].Text, "the line names the key as the client sent it")
	require.NotNil(t, lines[0].Record)
	assert.Equal(t, dedup.StateCompleted, lines[0].Record.State)
	assert.Equal(t, []byte("stored response"), lines[0].Record.Result)

	_, body = get(t, srv, "/explain?http=1&scope=acct_2&id=order-9")
	lines = jsonLines[admin.ExplainLine](t, body)
	require.Len(t, lines, 1)
	assert.False(t, lines[0].Live, "the key of another scope is another key")
}

func TestScanFiltersLikeDedupctl(t *testing.T) {
	s, srv := liveStore(t, nil)
	require.NoError(t, s.Forget([]byte("plain")))
	for _, tc := range []struct {
		name  string
		query string
		want  []string // "id state", sorted
	}{
		{"live marks", "", []string{"//4= live", "idempotency\x00acct_1\x00order-9 completed", "job in-progress"}},
		{"prefix", "?prefix=jo", []string{"job in-progress"}},
		{"state", "?state=completed", []string{"idempotency\x00acct_1\x00order-9 completed"}},
		{"expired includes the forgotten", "?expired=true&state=forgotten", []string{"plain forgotten"}},
		{"limit", "?prefix=job&limit=1", []string{"job in-progress"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, srv, "/scan"+tc.query)
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			var got []string
			for _, l := range jsonLines[admin.MarkLine](t, body) {
				got = append(got, l.Text+" "+l.State)
			}
			slices.Sort(got)
			assert.Equal(t, tc.want, got)
			assert.Empty(t, resp.Trailer.Get(admin.ErrorHeader))
		})
	}
	_, body := get(t, srv, "/scan?limit=2")
	assert.Len(t, jsonLines[admin.MarkLine](t, body), 2)
}

// TestScanBeyondTheHandlersLimitSaysItIsCut checks that a scan asking for
// more lines than Options.MaxScanLines gets that many and a usage problem
// in the trailer, so that no client takes a cut answer for the whole.
func TestScanBeyondTheHandlersLimitSaysItIsCut(t *testing.T) {
	_, srv := liveStore(t, &admin.Options{MaxScanLines: 2})
	for _, query := range []string{"", "?limit=3"} {
		resp, body := get(t, srv, "/scan"+query)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Len(t, jsonLines[admin.MarkLine](t, body), 2, query)
		p := trailerProblem(t, resp)
		assert.Equal(t, admin.KindUsage, p.Kind, query)
		assert.Contains(t, p.Detail, "scan stopped after 2 lines", query)
	}
	resp, body := get(t, srv, "/scan?limit=2")
	assert.Len(t, jsonLines[admin.MarkLine](t, body), 2)
	assert.Empty(t, resp.Trailer.Get(admin.ErrorHeader), "a limit within the handler's is the whole answer")
	resp, body = get(t, srv, "/scan?prefix=job")
	assert.Len(t, jsonLines[admin.MarkLine](t, body), 1)
	assert.Empty(t, resp.Trailer.Get(admin.ErrorHeader), "fewer lines than the handler's limit are the whole answer")
}

func trailerProblem(t *testing.T, resp *http.Response) admin.Problem {
	t.Helper()
	h := resp.Trailer.Get(admin.ErrorHeader)
	require.NotEmpty(t, h, "a problem in the %s trailer", admin.ErrorHeader)
	var p admin.Problem
	require.NoError(t, json.Unmarshal([]byte(h), &p))
	return p
}

func TestVerifyReportsAHealthyStore(t *testing.T) {
	_, srv := liveStore(t, nil)
	resp, body := get(t, srv, "/verify")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var r admin.VerifyReport
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	assert.True(t, r.OK)
	assert.Equal(t, uint64(4), r.WALRecords)
	assert.Equal(t, []string{}, r.Uncovered)
	assert.Empty(t, resp.Header.Get(admin.ErrorHeader))
}

// TestBadRequestsGetANamedKind checks that the handler refuses what it
// cannot answer with a problem body naming the kind, and serves nothing
// that writes.
func TestBadRequestsGetANamedKind(t *testing.T) {
	_, srv := liveStore(t, nil)
	long := url.QueryEscape(strings.Repeat("x", 1<<16))
	for _, tc := range []struct {
		name, method, path string
		status             int
		kind               string
	}{
		{"empty ID", "GET", "/get?id=", 400, admin.KindUsage},
		{"no ID", "GET", "/get", 400, admin.KindUsage},
		{"ID too long", "GET", "/explain?id=" + long, 400, admin.KindUsage},
		{"no ID to explain", "GET", "/explain?http=1", 400, admin.KindUsage},
		{"http not a bool", "GET", "/explain?id=a&http=yes", 400, admin.KindUsage},
		{"negative limit", "GET", "/scan?limit=-1", 400, admin.KindUsage},
		{"limit not a number", "GET", "/scan?limit=ten", 400, admin.KindUsage},
		{"unknown state", "GET", "/scan?state=stuck", 400, admin.KindUsage},
		{"unknown parameter", "GET", "/scan?prefx=a", 400, admin.KindUsage},
		{"parameter of another path", "GET", "/stats?id=a", 400, admin.KindUsage},
		{"bad query", "GET", "/get?id=%zz", 400, admin.KindUsage},
		{"a write", "POST", "/get?id=a", 405, admin.KindUsage},
		{"a delete", "DELETE", "/get?id=a", 405, admin.KindUsage},
		{"unknown path", "GET", "/forget?id=a", 404, admin.KindNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, admin.ProblemContentType, resp.Header.Get("Content-Type"))
			var p admin.Problem
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
			assert.Equal(t, tc.kind, p.Kind)
			assert.Equal(t, tc.status, p.Status)
			assert.NotEmpty(t, p.Detail)
		})
	}
}

// TestExplainFailingAfterItsFirstLineSaysSoInTheTrailer checks that a
// failure after a stream began is not lost: the lines before it, then
// the problem in the trailer.
func TestExplainFailingAfterItsFirstLineSaysSoInTheTrailer(t *testing.T) {
	_, srv := liveStore(t, nil)
	resp, body := get(t, srv, "/explain?id=plain&id=")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, jsonLines[admin.ExplainLine](t, body), 1)
	p := trailerProblem(t, resp)
	assert.Equal(t, admin.KindUsage, p.Kind)
	assert.Contains(t, p.Detail, dedup.ErrEmptyID.Error())
}

// TestClosedStoreIsKindClosed checks the answer of a handler whose store
// the application has closed.
func TestClosedStoreIsKindClosed(t *testing.T) {
	s, srv := liveStore(t, nil)
	require.NoError(t, s.Close())
	resp, body := get(t, srv, "/get?id=plain")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
	assert.Contains(t, body, `"kind":"closed"`)
}

// TestCorruptStoreIsKindCorrupt damages the Pebble tables of a closed
// store and serves it reopened: verify reports the damage with its
// report, and a lookup that reads a damaged block fails, both of kind
// corrupt.
func TestCorruptStoreIsKindCorrupt(t *testing.T) {
	dir := corruptStore(t)
	s, err := dedup.Open(dir, &dedup.Options{MemtableMarks: 50})
	require.NoError(t, err, "the damage is in data blocks, which Open does not read")
	t.Cleanup(func() { s.Close() })
	srv := httptest.NewServer(admin.Handler(s, nil))
	t.Cleanup(srv.Close)

	resp, body := get(t, srv, "/verify")
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	var r admin.VerifyReport
	require.NoError(t, json.Unmarshal([]byte(body), &r), "the report comes with the damage: %s", body)
	assert.False(t, r.OK)
	assert.Contains(t, r.Damage, "store corrupt")
	var p admin.Problem
	require.NoError(t, json.Unmarshal([]byte(resp.Header.Get(admin.ErrorHeader)), &p))
	assert.Equal(t, admin.KindCorrupt, p.Kind)
	assert.Equal(t, r.Damage, p.Detail)

	q := url.Values{}
	for i := range corruptMarks {
		q.Add("id", corruptID(i))
	}
	resp, body = get(t, srv, "/get?"+q.Encode())
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	assert.Equal(t, admin.ProblemContentType, resp.Header.Get("Content-Type"))
	assert.Contains(t, body, `"kind":"corrupt"`)
}

// corruptMarks is how many marks corruptStore writes.
const corruptMarks = 120

// corruptID is the ith ID corruptStore writes.
func corruptID(i int) string { return fmt.Sprintf("damage-id-%04d", i) }

// corruptStore writes corruptMarks marks to a new store, checkpointing
// every 50, closes it and damages a data block of each Pebble table.
func corruptStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := dedup.Open(dir, &dedup.Options{MemtableMarks: 50})
	require.NoError(t, err)
	for i := 0; i < corruptMarks; i += 10 {
		var batch [][]byte
		for j := i; j < i+10; j++ {
			batch = append(batch, []byte(corruptID(j)))
		}
		_, err := s.CheckAndMarkBatch(batch, time.Hour)
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	tables, err := filepath.Glob(filepath.Join(dir, "index", "db", "*.sst"))
	require.NoError(t, err)
	require.NotEmpty(t, tables)
	for _, path := range tables {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		b[64] ^= 0xff // data blocks come first in a table
		require.NoError(t, os.WriteFile(path, b, 0o644))
	}
	return dir
}
