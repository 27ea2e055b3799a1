package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpHandler serves /healthz (the lock engine answers), /metrics
// (Prometheus) and /locks (live locks as JSON).
func httpHandler(m *lock.Manager, met *metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := m.IsLocked(ctx, "joblock-healthz"); err != nil {
			http.Error(w, "lock engine: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /locks", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		held := []lock.Record{}
		err := m.Locker().Scan(ctx, func(rec lock.Record) bool {
			if rec.State == lock.Held {
				held = append(held, rec)
			}
			return true
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(held)
	})
	return mux
}
