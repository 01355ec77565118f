// Command payments is a payment-style HTTP API made idempotent with
// dedup's middleware: a client that retries POST /charges with the same
// Idempotency-Key charges once and gets the first response back.
//
//	go run ./examples/payments -dir /tmp/payments -addr localhost:8080
//	curl -i -X POST localhost:8080/charges -H 'Idempotency-Key: order-1' -d '{"amount":1000,"currency":"eur"}'
//
// Run the curl twice: the second answer is the first, byte for byte, with
// "Idempotent-Replayed: true". The same key with another body gets 422.
//
// The store is locked while the API runs, so operators inspect it through
// its admin handler, served on a second listener that -admin-addr keeps
// on the loopback interface (it reveals keys and stored responses):
//
//	dedupctl --addr http://localhost:8081 explain --http order-1
//	dedupctl --addr http://localhost:8081 scan --state in-progress
//
// Prometheus scrapes the store's and the middleware's series from a third
// listener, -metrics-addr:
//
//	curl -s localhost:8082/metrics | grep '^dedup_'
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/seed42300104/dedup"
	"github.com/seed42300104/dedup/admin"
	"github.com/seed42300104/dedup/idempotency"
	"github.com/seed42300104/dedup/metrics"
)

func main() {
	dir := flag.String("dir", "payments-store", "the dedup store's directory")
	addr := flag.String("addr", "localhost:8080", "where to listen")
	adminAddr := flag.String("admin-addr", "localhost:8081", "where the admin handler listens, on loopback only (empty: not at all)")
	metricsAddr := flag.String("metrics-addr", "localhost:8082", "where Prometheus scrapes /metrics (empty: not at all)")
	flag.Parse()
	if err := checkLoopback(*adminAddr); err != nil {
		log.Fatal(err)
	}
	store, err := dedup.Open(*dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if *adminAddr != "" {
		log.Printf("admin handler on http://%s, for dedupctl --addr", *adminAddr)
		go func() { log.Fatal(http.ListenAndServe(*adminAddr, admin.Handler(store, nil))) }()
	}
	counters := idempotency.NewCounters()
	if *metricsAddr != "" {
		log.Printf("Prometheus metrics on http://%s/metrics", *metricsAddr)
		go func() { log.Fatal(http.ListenAndServe(*metricsAddr, metricsHandler(store, counters))) }()
	}
	log.Printf("listening on %s, store in %s", *addr, *dir)
	log.Fatal(http.ListenAndServe(*addr, newServer(store, &ledger{}, counters)))
}

// metricsHandler serves /metrics: the store's series, the middleware's
// (counted into counters), and the Go runtime's and the process's.
func metricsHandler(store *dedup.Store, counters *idempotency.Counters) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		metrics.NewCollector(store, nil),
		metrics.NewIdempotencyCollector(counters, nil),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// checkLoopback refuses an admin address that is not on the loopback
// interface: the admin handler must not be reachable from outside.
func checkLoopback(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-admin-addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-admin-addr %q: the admin handler reveals keys and stored responses; serve it on localhost, 127.0.0.1 or ::1 only", addr)
	}
	return nil
}

// newServer returns the API: POST /charges, idempotent by key (required),
// and GET /charges to list what was charged. It needs only the Backend
// API, so a fleet of servers could share one store. The middleware counts
// into counters.
func newServer(store dedup.Backend, l *ledger, counters *idempotency.Counters) http.Handler {
	mux := http.NewServeMux()
	idem := idempotency.Middleware(store, &idempotency.Options{Required: true, Counters: counters})
	mux.Handle("POST /charges", idem(http.HandlerFunc(l.charge)))
	mux.HandleFunc("GET /charges", l.list)
	return mux
}

// ledger stands in for the payment processor: every charge it makes is
// money moved, so a retried request must not make a second one.
type ledger struct {
	mu      sync.Mutex
	charges []charge
}

type charge struct {
	ID       string `json:"id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

func (l *ledger) charge(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Amount <= 0 || req.Currency == "" {
		http.Error(w, `{"error":"amount and currency are required"}`, http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	c := charge{ID: fmt.Sprintf("ch_%d", len(l.charges)+1), Amount: req.Amount, Currency: req.Currency}
	l.charges = append(l.charges, c)
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/charges/"+c.ID)
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(c)
}

func (l *ledger) list(w http.ResponseWriter, _ *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(l.charges)
}
