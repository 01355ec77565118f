package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/idempotency"
)

// TestRetriedChargeChargesOnce drives the API as a retrying client would,
// over real HTTP, across a restart of the server on the same store.
func TestRetriedChargeChargesOnce(t *testing.T) {
	dir := t.TempDir()
	store, err := dedup.Open(dir, nil)
	require.NoError(t, err)
	l := &ledger{}
	srv := httptest.NewServer(newServer(store, l, nil))

	post := func(srv *httptest.Server, key, body string) (*http.Response, string) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/charges", strings.NewReader(body))
		require.NoError(t, err)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}

	// Eight retries of one request at once, then more one by one.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := post(srv, "order-1", `{"amount":1000,"currency":"eur"}`)
			assert.Contains(t, []int{http.StatusCreated, http.StatusConflict}, resp.StatusCode)
		}()
	}
	wg.Wait()
	first, body := post(srv, "order-1", `{"amount":1000,"currency":"eur"}`)
	require.Equal(t, http.StatusCreated, first.StatusCode)
	assert.Equal(t, "true", first.Header.Get("Idempotent-Replayed"))
	assert.JSONEq(t, `{"id":"ch_1","amount":1000,"currency":"eur"}`, body)

	resp, _ := post(srv, "order-1", `{"amount":5,"currency":"eur"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, "the key reused for another charge")
	resp, _ = post(srv, "", `{"amount":5,"currency":"eur"}`)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a key is required")
	resp, _ = post(srv, "order-2", `{"amount":5,"currency":"eur"}`)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	srv.Close()
	require.NoError(t, store.Close())

	// The server restarts on the same store: the replay survives it.
	store, err = dedup.Open(dir, nil)
	require.NoError(t, err)
	defer store.Close()
	srv = httptest.NewServer(newServer(store, l, nil))
	defer srv.Close()
	resp, again := post(srv, "order-1", `{"amount":1000,"currency":"eur"}`)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, body, again)

	var charges []charge
	listResp, err := http.Get(srv.URL + "/charges")
	require.NoError(t, err)
	defer listResp.Body.Close()
	require.NoError(t, json.NewDecoder(listResp.Body).Decode(&charges))
	assert.Len(t, charges, 2, "two orders, two charges, however many retries")
}

// TestAdminListensOnLoopbackOnly checks that the example refuses to serve
// its admin handler on an address reachable from outside.
func TestAdminListensOnLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"localhost:8081": true, "127.0.0.1:8081": true, "[::1]:8081": true, "": true,
		":8081": false, "0.0.0.0:8081": false, "192.0.2.1:8081": false, "example.com:8081": false, "8081": false,
	} {
		err := checkLoopback(addr)
		assert.Equal(t, ok, err == nil, "%q: %v", addr, err)
	}
}

// TestMetricsServesTheStoreAndTheMiddleware charges once through the API
// and scrapes /metrics: the store's and the middleware's series are there.
func TestMetricsServesTheStoreAndTheMiddleware(t *testing.T) {
	store, err := dedup.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer store.Close()
	counters := idempotency.NewCounters()
	api := newServer(store, &ledger{}, counters)
	r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader(`{"amount":1000,"currency":"eur"}`))
	r.Header.Set("Idempotency-Key", "order-1")
	w := httptest.NewRecorder()
	api.ServeHTTP(w, r)
	require.Equal(t, http.StatusCreated, w.Code)

	w = httptest.NewRecorder()
	metricsHandler(store, counters).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, w.Code)
	body := w.Body.String()
	assert.Contains(t, body, `dedup_http_requests_total{outcome="first_run"} 1`)
	assert.Contains(t, body, "dedup_wal_appends_total 2", "a Begin and a Complete")
	assert.Contains(t, body, "dedup_effective_window_seconds ")
	assert.Contains(t, body, "go_goroutines ")
}
