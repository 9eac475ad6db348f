package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/tracing"
)

// readiness holds what /readyz, the metrics and the heartbeats report on;
// it fills in as the worker starts and follows reloads.
type readiness struct {
	nc      atomic.Pointer[nats.Conn]
	worker  atomic.Pointer[pipeline.Worker]
	cache   atomic.Pointer[cache.Cache]
	targets atomic.Pointer[map[string]resilience.Target]
	loaded  atomic.Pointer[loaded]
}

// breakers reads each backend's breaker state for the metrics.
func (r *readiness) breakers() map[string]string {
	out := map[string]string{}
	if ts := r.targets.Load(); ts != nil {
		for name, t := range *ts {
			if b := t.Breaker(); b != nil {
				out[name] = string(b.State())
			}
		}
	}
	return out
}

// limits reads a backend's concurrency limit and retry budget left for
// its health events.
func (r *readiness) limits(backend string) (int, float64) {
	if ts := r.targets.Load(); ts != nil {
		if t, ok := (*ts)[backend]; ok {
			l := t.Limits()
			return l.Concurrency, l.RetryBudget
		}
	}
	return 0, -1
}

// allLimits reads every backend's bounds for the metrics.
func (r *readiness) allLimits() map[string]tracing.BackendLimits {
	out := map[string]tracing.BackendLimits{}
	if ts := r.targets.Load(); ts != nil {
		for name, t := range *ts {
			l := t.Limits()
			out[name] = tracing.BackendLimits{Concurrency: l.Concurrency, RetryBudget: l.RetryBudget}
		}
	}
	return out
}

// cacheStats reads the result cache's counters for the metrics.
func (r *readiness) cacheStats() tracing.CacheStats {
	c := r.cache.Load()
	if c == nil {
		return tracing.CacheStats{}
	}
	s := c.Stats()
	return tracing.CacheStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions, Bytes: int64(s.Bytes), Entries: int64(s.Entries)}
}

// healthStats feeds worker heartbeats.
func (r *readiness) healthStats() health.WorkerStats {
	var st health.WorkerStats
	if w := r.worker.Load(); w != nil {
		s := w.Stats()
		st = health.WorkerStats{Done: s.Done, Failed: s.Failed, DeadLettered: s.DeadLettered, InFlight: s.InFlight,
			PausedRoutes: w.PausedRoutes()}
	}
	if c := r.cache.Load(); c != nil {
		cs := c.Stats()
		st.CacheHits, st.CacheMisses = cs.Hits, cs.Misses
	}
	if l := r.loaded.Load(); l != nil {
		st.ConfigHash, st.ConfigLoadedAt = l.hash, l.at
	}
	return st
}

// stats reads the worker's counters, zero before it exists.
func (r *readiness) stats() tracing.WorkerStats {
	w := r.worker.Load()
	if w == nil {
		return tracing.WorkerStats{}
	}
	s := w.Stats()
	return tracing.WorkerStats{Done: s.Done, DeadLettered: s.DeadLettered, Redelivered: s.Redelivered,
		Duplicates: s.Duplicates, InFlight: s.InFlight}
}

// serveHTTP serves the metrics, liveness and readiness endpoints until the returned
// stop is called. It starts before the connection so that an orchestrator
// sees a live but unready worker while NATS is unreachable.
func serveHTTP(addr string, probe *readiness, metrics http.Handler, log *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		nc, w := probe.nc.Load(), probe.worker.Load()
		switch {
		case nc == nil || !nc.IsConnected():
			http.Error(rw, "not connected to nats", http.StatusServiceUnavailable)
		case w == nil || !w.Ready():
			http.Error(rw, "not consuming (starting or draining)", http.StatusServiceUnavailable)
		default:
			st := w.Stats()
			_, _ = io.WriteString(rw, "ready in_flight="+strconv.FormatInt(st.InFlight, 10)+"\n")
		}
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("http listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
