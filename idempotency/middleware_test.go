package idempotency_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/internal/testutil"
	"github.com/seed42300104/dedup/internal/testutil/storetest"
)

// charge is a payment-like handler: it counts its runs and answers with a
// new charge ID, so that a replay is told from a second run.
type charge struct {
	runs   atomic.Int64
	status int
}

func (c *charge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := c.runs.Add(1)
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", fmt.Sprintf("/charges/ch_%d", n))
	w.Header().Set("Set-Cookie", "session=1")
	status := c.status
	if status == 0 {
		status = http.StatusCreated
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"id":"ch_%d","request":%q}`, n, body)
}

func serve(h http.Handler, method, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/charges", strings.NewReader(body))
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// requireProblem checks an RFC 9457 problem response.
func requireProblem(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	require.Equal(t, status, w.Code, w.Body.String())
	assert.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	assert.Equal(t, status, p.Status)
	assert.NotEmpty(t, p.Title)
	assert.NotEmpty(t, p.Detail)
}

func TestRepeatReplaysTheStoredResponse(t *testing.T) {
	for _, status := range []int{http.StatusCreated, http.StatusInternalServerError} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			c := &charge{status: status}
			h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(c)
			first := serve(h, http.MethodPost, "key-1", `{"amount":100}`)
			require.Equal(t, status, first.Code)
			assert.Empty(t, first.Header().Get(idempotency.ReplayedHeader))

			for range 3 {
				again := serve(h, http.MethodPost, "key-1", `{"amount":100}`)
				assert.Equal(t, status, again.Code, "5xx are stored and replayed too")
				assert.Equal(t, first.Body.Bytes(), again.Body.Bytes(), "the body byte for byte")
				assert.Equal(t, "application/json", again.Header().Get("Content-Type"))
				assert.Equal(t, "/charges/ch_1", again.Header().Get("Location"))
				assert.Empty(t, again.Header().Get("Set-Cookie"), "only the chosen headers are stored")
				assert.Equal(t, "true", again.Header().Get(idempotency.ReplayedHeader))
			}
			assert.Equal(t, int64(1), c.runs.Load(), "the handler ran once")

			other := serve(h, http.MethodPost, "key-2", `{"amount":100}`)
			assert.Equal(t, "/charges/ch_2", other.Header().Get("Location"), "another key runs again")
		})
	}
}

func TestBadRequests(t *testing.T) {
	c := &charge{}
	h := idempotency.Middleware(storetest.OpenMem(t, nil), &idempotency.Options{Required: true})(c)
	require.Equal(t, http.StatusCreated, serve(h, http.MethodPost, "used", `{"amount":100}`).Code)

	tests := []struct {
		name, key, body string
		status          int
	}{
		{"missing key", "", `{}`, http.StatusBadRequest},
		{"key too long", strings.Repeat("k", 256), `{}`, http.StatusBadRequest},
		{"control byte", "a\x01b", `{}`, http.StatusBadRequest},
		{"space in a bare key", "a b", `{}`, http.StatusBadRequest},
		{"unterminated string", `"abc`, `{}`, http.StatusBadRequest},
		{"text after the string", `"abc"x`, `{}`, http.StatusBadRequest},
		{"bad escape", `"a\qb"`, `{}`, http.StatusBadRequest},
		{"empty string", `""`, `{}`, http.StatusBadRequest},
		{"reused with another body", "used", `{"amount":999}`, http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireProblem(t, serve(h, http.MethodPost, tt.key, tt.body), tt.status)
		})
	}
	assert.Equal(t, int64(1), c.runs.Load(), "no bad request reached the handler")

	// A structured-field string names the same key as its bare form.
	assert.Equal(t, "true", serve(h, http.MethodPost, `"used"`, `{"amount":100}`).Header().Get(idempotency.ReplayedHeader))
	assert.Equal(t, http.StatusCreated, serve(h, http.MethodPost, strings.Repeat("k", 255), `{}`).Code, "255 bytes is allowed")
}

func TestOtherMethodsAndNoKeyPassThrough(t *testing.T) {
	c := &charge{}
	h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(c)
	for range 2 {
		w := serve(h, http.MethodGet, "key", "")
		assert.Empty(t, w.Header().Get(idempotency.ReplayedHeader))
		w = serve(h, http.MethodPost, "", "{}") // a key is not required by default
		assert.Empty(t, w.Header().Get(idempotency.ReplayedHeader))
	}
	assert.Equal(t, int64(4), c.runs.Load())
}

func TestBodyTooLarge(t *testing.T) {
	c := &charge{}
	h := idempotency.Middleware(storetest.OpenMem(t, nil), &idempotency.Options{MaxBodyBytes: 10})(c)
	requireProblem(t, serve(h, http.MethodPost, "k", strings.Repeat("x", 11)), http.StatusRequestEntityTooLarge)
	assert.Equal(t, http.StatusCreated, serve(h, http.MethodPost, "k", strings.Repeat("x", 10)).Code)
}

func TestScopeSeparatesKeys(t *testing.T) {
	c := &charge{}
	h := idempotency.Middleware(storetest.OpenMem(t, nil), &idempotency.Options{
		Scope: func(r *http.Request) string { return r.Header.Get("Account") },
	})(c)
	for _, account := range []string{"acct_1", "acct_2", "acct_1"} {
		r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader("{}"))
		r.Header.Set("Idempotency-Key", "same")
		r.Header.Set("Account", account)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	assert.Equal(t, int64(2), c.runs.Load(), "one run per account")
}

// TestConcurrentIdenticalRequests sends the same request many times at
// once: the handler runs once, the others get 409 while it runs, and every
// retry after it ends gets its response.
func TestConcurrentIdenticalRequests(t *testing.T) {
	running, finish := make(chan struct{}), make(chan struct{})
	var runs atomic.Int64
	h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			close(running)
		}
		<-finish
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "charged once")
	}))

	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- serve(h, http.MethodPost, "same", "{}") }()
	<-running
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := serve(h, http.MethodPost, "same", "{}")
			codes[i] = w.Code
			if w.Code == http.StatusConflict {
				assert.NotEmpty(t, w.Header().Get("Retry-After"))
			}
		}()
	}
	wg.Wait()
	for _, code := range codes {
		assert.Equal(t, http.StatusConflict, code, "while the first request runs")
	}
	close(finish)
	assert.Equal(t, http.StatusCreated, (<-first).Code)
	for range 4 {
		w := serve(h, http.MethodPost, "same", "{}")
		assert.Equal(t, "charged once", w.Body.String())
		assert.Equal(t, "true", w.Header().Get(idempotency.ReplayedHeader))
	}
	assert.Equal(t, int64(1), runs.Load())
}

// TestPanicReleasesTheLease checks that a handler that panics leaves the
// key free, so that a retry runs it again, whether the panic is a bug or
// http.ErrAbortHandler from a handler that gave up before doing its work.
func TestPanicReleasesTheLease(t *testing.T) {
	for _, p := range []any{"handler bug", http.ErrAbortHandler} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			var runs atomic.Int64
			h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if runs.Add(1) == 1 {
					panic(p)
				}
				io.WriteString(w, "ok")
			}))
			assert.PanicsWithValue(t, p, func() { serve(h, http.MethodPost, "p", "{}") }, "the panic goes on")
			w := serve(h, http.MethodPost, "p", "{}")
			assert.Equal(t, "ok", w.Body.String())
			assert.Empty(t, w.Header().Get(idempotency.ReplayedHeader), "the retry ran the handler")
			assert.Equal(t, int64(2), runs.Load())
		})
	}
}

// TestGoneClientGetsTheStoredResponse checks that a handler that returns
// after its client has gone away has done its work: the response is
// stored, and the client's retry gets it instead of a second run.
func TestGoneClientGetsTheStoredResponse(t *testing.T) {
	c := &charge{}
	started := make(chan struct{})
	h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.runs.Load() == 0 {
			close(started)
			<-r.Context().Done() // the charge is made as the client goes away
		}
		c.ServeHTTP(w, r)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader("{}")).WithContext(ctx)
	r.Header.Set("Idempotency-Key", "c")
	served := make(chan struct{})
	go func() {
		defer close(served)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	<-started
	cancel()
	<-served

	w := serve(h, http.MethodPost, "c", "{}")
	assert.Equal(t, http.StatusCreated, w.Code)
	assert.Equal(t, "/charges/ch_1", w.Header().Get("Location"))
	assert.Equal(t, "true", w.Header().Get(idempotency.ReplayedHeader))
	assert.Equal(t, int64(1), c.runs.Load(), "the retry did not charge again")
}

// TestRequestEndedBeforeBeginIsNotRun checks that a request whose context
// has ended before its key is begun (its client gone, or a deadline
// passed) is not run and leaves the key free: it gets 503, and the retry
// runs the handler.
func TestRequestEndedBeforeBeginIsNotRun(t *testing.T) {
	c := &charge{}
	var log testutil.Log
	counters := idempotency.NewCounters()
	h := idempotency.Middleware(storetest.OpenMem(t, nil), &idempotency.Options{Logger: log.Logger(), Counters: counters})(c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader("{}")).WithContext(ctx)
	r.Header.Set("Idempotency-Key", "e")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	requireProblem(t, w, http.StatusServiceUnavailable)
	assert.Zero(t, c.runs.Load(), "the handler did not run")
	assert.Empty(t, log.Records(), "a request that ended is not the store's failure")
	assert.Equal(t, uint64(1), counters.Snapshot().Requests["request_ended"])

	w = serve(h, http.MethodPost, "e", "{}")
	assert.Equal(t, http.StatusCreated, w.Code, "the retry runs the handler")
	assert.Empty(t, w.Header().Get(idempotency.ReplayedHeader))
	assert.Equal(t, int64(1), c.runs.Load())
}

// TestGoneClientOverRealHTTPChargesOnce is the same over a real server on
// 127.0.0.1: the client cancels its request while the handler runs, the
// handler sees its context end and still makes its charge, and the
// client's retry gets that charge's response.
func TestGoneClientOverRealHTTPChargesOnce(t *testing.T) {
	c := &charge{}
	started := make(chan struct{}, 1)
	served := make(chan struct{}, 1)
	mw := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.runs.Load() == 0 {
			started <- struct{}{}
			<-r.Context().Done() // the server saw the client go
		}
		c.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw.ServeHTTP(w, r)
		served <- struct{}{}
	}))
	defer srv.Close()
	post := func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/charges", strings.NewReader(`{"amount":5}`))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", "gone")
		return srv.Client().Do(req)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	_, err := post(ctx)
	require.ErrorIs(t, err, context.Canceled)
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not return after its client went away")
	}

	resp, err := post(context.Background())
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(idempotency.ReplayedHeader))
	assert.Contains(t, string(body), `"id":"ch_1"`)
	assert.Equal(t, int64(1), c.runs.Load(), "the retry did not charge again")
}

// big is a handler that answers 201 with a body of n bytes and counts its
// runs.
type big struct {
	runs atomic.Int64
	n    int
}

func (b *big) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.runs.Add(1)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"v1"`)
	w.Header().Set("Location", "/exports/1")
	w.WriteHeader(http.StatusCreated)
	chunk := strings.Repeat("x", 1000)
	for left := b.n; left > 0; left -= len(chunk) {
		io.WriteString(w, chunk[:min(left, len(chunk))])
	}
}

// requireNotKept checks the answer to a repeat of a request whose
// response body was not kept: the stored status, a problem body saying
// so, the headers that are not about the body, and the replay marker.
func requireNotKept(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	requireProblem(t, w, status)
	assert.Contains(t, w.Body.String(), "not kept")
	assert.Equal(t, "true", w.Header().Get(idempotency.ReplayedHeader))
	assert.Equal(t, "/exports/1", w.Header().Get("Location"))
	assert.Empty(t, w.Header().Get("ETag"), "the ETag of a body not replayed")
}

// TestLargeResponseIsNotRunAgain checks that a response too large for
// the store (MaxValueSize, 1 MiB by default) goes to the client in full,
// and that a repeat, rather than run the handler again, gets the stored
// status with a problem body saying that the response was not kept.
func TestLargeResponseIsNotRunAgain(t *testing.T) {
	b := &big{n: 2 << 20}
	h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(b)
	first := serve(h, http.MethodPost, "export", "{}")
	require.Equal(t, http.StatusCreated, first.Code)
	assert.Equal(t, 2<<20, first.Body.Len(), "the client gets the whole body")
	for range 2 {
		requireNotKept(t, serve(h, http.MethodPost, "export", "{}"), http.StatusCreated)
	}
	assert.Equal(t, int64(1), b.runs.Load(), "completed work is not run again")
}

// TestResponseIsKeptUpToItsBound checks where a body stops being kept: by
// default at the room the store's MaxValueSize leaves after the
// fingerprint and the response's status and kept headers, or at
// MaxResponseBytes, whichever is less.
func TestResponseIsKeptUpToItsBound(t *testing.T) {
	const maxValue = 4096
	// What a record holds besides the body: the default fingerprint
	// (SHA-256), and the version, status and kept headers of the response.
	head := 32 + 1 + 2 + 1 +
		1 + len("Content-Type") + 1 + 1 + len("application/octet-stream") +
		1 + len("Etag") + 1 + 1 + len(`"v1"`) +
		1 + len("Location") + 1 + 1 + len("/exports/1")
	tests := []struct {
		name     string
		maxBody  int
		body     int
		wantKept bool
	}{
		{"empty", 0, 0, true},
		{"all the room the store leaves", 0, maxValue - head, true},
		{"a byte past the store's room", 0, maxValue - head + 1, false},
		{"at MaxResponseBytes", 100, 100, true},
		{"a byte past MaxResponseBytes", 100, 101, false},
		{"MaxResponseBytes past the store's room", maxValue, maxValue - head + 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &big{n: tt.body}
			h := idempotency.Middleware(storetest.OpenMem(t, &dedup.Options{MaxValueSize: maxValue}), &idempotency.Options{MaxResponseBytes: tt.maxBody})(b)
			first := serve(h, http.MethodPost, "k", "{}")
			require.Equal(t, http.StatusCreated, first.Code)
			assert.Equal(t, tt.body, first.Body.Len(), "the client gets the whole body")
			again := serve(h, http.MethodPost, "k", "{}")
			if tt.wantKept {
				assert.Equal(t, http.StatusCreated, again.Code)
				assert.Equal(t, first.Body.String(), again.Body.String())
				assert.Equal(t, `"v1"`, again.Header().Get("ETag"))
			} else {
				requireNotKept(t, again, http.StatusCreated)
			}
			assert.Equal(t, int64(1), b.runs.Load())
		})
	}
}

// TestLargeHeadersAreNotKept checks that headers too large for the record
// are dropped with the body, and the status is still kept.
func TestLargeHeadersAreNotKept(t *testing.T) {
	var runs atomic.Int64
	h := idempotency.Middleware(storetest.OpenMem(t, &dedup.Options{MaxValueSize: 4096}), nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		w.Header().Set("Location", "/exports/"+strings.Repeat("x", 8192))
		w.WriteHeader(http.StatusAccepted)
	}))
	require.Equal(t, http.StatusAccepted, serve(h, http.MethodPost, "k", "{}").Code)
	again := serve(h, http.MethodPost, "k", "{}")
	requireProblem(t, again, http.StatusAccepted)
	assert.Equal(t, "true", again.Header().Get(idempotency.ReplayedHeader))
	assert.Empty(t, again.Header().Get("Location"))
	assert.Equal(t, int64(1), runs.Load())
}

// TestFingerprintLeavingNoRoomIsRefused checks that a request whose
// fingerprint leaves the record no room for a response is refused before
// it runs, rather than run with no way to store that it did.
func TestFingerprintLeavingNoRoomIsRefused(t *testing.T) {
	var runs atomic.Int64
	h := idempotency.Middleware(storetest.OpenMem(t, &dedup.Options{MaxValueSize: 4096}), &idempotency.Options{
		Fingerprint: func(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) },
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { runs.Add(1) }))
	requireProblem(t, serve(h, http.MethodPost, "k", strings.Repeat("x", 4096-10)), http.StatusRequestEntityTooLarge)
	assert.Equal(t, int64(0), runs.Load())
	assert.Equal(t, http.StatusOK, serve(h, http.MethodPost, "k", strings.Repeat("x", 100)).Code)
	assert.Equal(t, int64(1), runs.Load())
}

// earlyHints answers 103 Early Hints, then 201 with a body.
func earlyHints(runs *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "created")
	})
}

// TestInformationalResponseIsNotStored checks that a 1xx response is not
// taken for the final one: the repeat replays the 201 that followed it.
func TestInformationalResponseIsNotStored(t *testing.T) {
	var runs atomic.Int64
	h := idempotency.Middleware(storetest.OpenMem(t, nil), nil)(earlyHints(&runs))
	serve(h, http.MethodPost, "k", "{}")
	again := serve(h, http.MethodPost, "k", "{}")
	assert.Equal(t, http.StatusCreated, again.Code)
	assert.Equal(t, "created", again.Body.String())
	assert.Equal(t, "text/plain", again.Header().Get("Content-Type"))
	assert.Equal(t, "true", again.Header().Get(idempotency.ReplayedHeader))
	assert.Equal(t, int64(1), runs.Load())
}

// TestInformationalResponseOverRealHTTP checks on the wire that the
// client gets the 103 and then the 201, and that the replay is the 201.
func TestInformationalResponseOverRealHTTP(t *testing.T) {
	var runs atomic.Int64
	srv := httptest.NewServer(idempotency.Middleware(storetest.OpenMem(t, nil), nil)(earlyHints(&runs)))
	defer srv.Close()
	post := func() (informational []int, resp *http.Response, body string) {
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			informational = append(informational, code)
			return nil
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, srv.URL+"/charges", strings.NewReader("{}"))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", "hints")
		resp, err = srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return informational, resp, string(b)
	}
	info, first, body := post()
	assert.Equal(t, []int{http.StatusEarlyHints}, info)
	assert.Equal(t, http.StatusCreated, first.StatusCode)
	assert.Equal(t, "created", body)
	_, again, body := post()
	assert.Equal(t, http.StatusCreated, again.StatusCode)
	assert.Equal(t, "created", body)
	assert.Equal(t, "true", again.Header.Get(idempotency.ReplayedHeader))
	assert.Equal(t, int64(1), runs.Load())
}

// TestReplayOverRealHTTP runs the middleware behind a real server and
// client: the replay is the same bytes on the wire.
func TestReplayOverRealHTTP(t *testing.T) {
	srv := httptest.NewServer(idempotency.Middleware(storetest.OpenMem(t, nil), nil)(&charge{}))
	defer srv.Close()
	post := func() (*http.Response, string) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/charges", strings.NewReader(`{"amount":5}`))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}
	r1, b1 := post()
	r2, b2 := post()
	assert.Equal(t, r1.StatusCode, r2.StatusCode)
	assert.Equal(t, b1, b2)
	assert.Equal(t, "true", r2.Header.Get(idempotency.ReplayedHeader))
}

// TestCountersCountEachOutcome sends requests that end in each outcome
// and checks that each is counted once, under its name, and that only
// first runs are timed.
func TestCountersCountEachOutcome(t *testing.T) {
	counters := idempotency.NewCounters()
	store := storetest.OpenMem(t, nil)
	c := &charge{}
	h := idempotency.Middleware(store, &idempotency.Options{Counters: counters, MaxBodyBytes: 16})(c)
	required := idempotency.Middleware(store, &idempotency.Options{Counters: counters, Required: true})(c)
	panics := idempotency.Middleware(store, &idempotency.Options{Counters: counters})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	inProgress := idempotency.Middleware(store, &idempotency.Options{Counters: counters})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, http.StatusConflict, serve(h, http.MethodPost, "running", "{}").Code, "a repeat while the first runs")
		w.WriteHeader(http.StatusAccepted)
	}))

	assert.Equal(t, http.StatusCreated, serve(h, http.MethodPost, "a", "{}").Code)
	assert.Equal(t, http.StatusCreated, serve(h, http.MethodPost, "a", "{}").Code, "replayed")
	assert.Equal(t, http.StatusUnprocessableEntity, serve(h, http.MethodPost, "a", "{1}").Code)
	assert.Equal(t, http.StatusRequestEntityTooLarge, serve(h, http.MethodPost, "b", strings.Repeat("x", 17)).Code)
	assert.Equal(t, http.StatusBadRequest, serve(required, http.MethodPost, "", "{}").Code)
	assert.Equal(t, http.StatusCreated, serve(h, http.MethodPost, "", "{}").Code, "no key, none required")
	assert.Equal(t, http.StatusCreated, serve(h, http.MethodGet, "a", "").Code, "a GET is not the middleware's: not counted")
	assert.Panics(t, func() { serve(panics, http.MethodPost, "p", "{}") })
	assert.Equal(t, http.StatusAccepted, serve(inProgress, http.MethodPost, "running", "{}").Code)

	snap := counters.Snapshot()
	assert.Equal(t, map[string]uint64{
		"first_run": 2, "not_stored": 0, "replayed": 1, "in_progress": 1, "mismatch": 1, "bad_request": 1,
		"too_large": 1, "released_after_panic": 1, "request_ended": 0, "store_error": 0, "no_key": 1,
	}, snap.Requests)
	assert.Equal(t, uint64(2), snap.HandlerSeconds.Count(), "the first runs are timed")
}
