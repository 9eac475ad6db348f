package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/tracing"
)

// serve runs the worker until ctx ends, then drains and returns nil; any
// error before or while running is returned for run to print.
func serve(ctx context.Context, f *flags, getenv func(string) string, stderr io.Writer) error {
	log := newLogger(f, stderr)

	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return err
		}
	}
	var probe readiness
	var metrics *tracing.Metrics
	if f.httpAddr != "" {
		var err error
		metrics, err = tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-worker", Version: version})
		if err != nil {
			return err
		}
		defer func() { _ = metrics.Shutdown(context.Background()) }()
		if err := tracing.ObserveWorker(metrics.Meter(), probe.stats); err != nil {
			return err
		}
		stopHTTP, err := serveHTTP(f.httpAddr, &probe, metrics.Handler(), log)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}

	traces, err := tracing.SetupTracing(ctx, tracing.TracingOptions{ServiceName: "breakwater-worker", Version: version, Getenv: getenv})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := traces.Shutdown(sctx); err != nil {
			log.Warn("flush traces", "err", err)
		}
	}()

	conn := connectOptions(f, getenv, cfg.NATS)
	id := f.id
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}

	if f.embedded != "" {
		host, port, err := bus.HostPort(conn.URL)
		if err != nil {
			return fmt.Errorf("--embedded listens at --nats-url: %w", err)
		}
		dir, _ := filepath.Abs(f.embedded)
		srv, err := bus.StartEmbedded(bus.EmbeddedOptions{
			Host: host, Port: port, StoreDir: dir,
			NoSyncAlways: f.embeddedSync == "interval",
			Logger:       log,
		})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		conn.URL = srv.ClientURL()
		log.Info("embedded nats server started", "url", conn.URL, "store", dir, "fsync", f.embeddedSync)
	}

	conn.Name = "breakwater-worker " + id
	conn.Logger = log
	// Deliveries and API answers that clients may not read.
	conn.InboxPrefix = bus.WorkerInboxPrefix
	// A worker may start before its server (systemd, Kubernetes).
	conn.RetryOnFailedConnect = true
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it ever connected
		}
		return err
	}
	defer nc.Close()

	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*cfg.Worker.Concurrency+256),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	topo := bus.Topology{
		Prefix:        cfg.Prefix,
		Replicas:      cfg.Streams.Replicas,
		ResultsMaxAge: cfg.Streams.ResultsMaxAge.D(),
		DLQMaxBytes:   int64(cfg.Streams.DLQMaxBytes),
	}
	consumer, err := setup(ctx, js, topo, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	monitor, err := health.New(health.Options{
		JS: js, Conn: nc, Topology: topo, WorkerID: id, Version: version,
		Backends: slices.Sorted(maps.Keys(cfg.Backends)),
		Interval: cfg.Health.Interval.D(), SLATarget: cfg.Health.SLATarget,
		BreakerOpenAlertAfter: cfg.Health.BreakerOpenAlertAfter.D(),
		Probes:                probes(cfg, nc),
		WorkerStats:           probe.healthStats,
		DLQUsage: func(ctx context.Context) (int64, int64, error) {
			return dlq.Usage(ctx, js, topo)
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	var instruments *tracing.Instruments // nil without --http
	if metrics != nil {
		if instruments, err = tracing.NewInstruments(metrics.Meter(), tracing.InstrumentsOptions{
			InFlight: func() map[string]int {
				out := map[string]int{}
				for _, b := range monitor.Snapshot() {
					out[b.Backend] = b.InFlight
				}
				return out
			},
			Breakers: probe.breakers,
			Cache:    probe.cacheStats,
			Pending: func(ctx context.Context) (uint64, error) {
				c, err := js.Consumer(ctx, topo.TasksStream(), bus.DefaultConsumer)
				if err != nil {
					return 0, err
				}
				info, err := c.Info(ctx)
				if err != nil {
					return 0, err
				}
				return info.NumPending, nil
			},
		}); err != nil {
			return err
		}
		metrics.Prime(instruments, knownLabels(cfg))
	}
	bk, err := buildRouter(cfg, nc, log, observe(monitor, cfg, traces, instruments))
	if err != nil {
		return err
	}
	probe.targets.Store(&bk.targets)
	if err != nil {
		return err
	}
	defer bk.close()

	dlqWriter, err := dlq.EnsureWriter(ctx, js, dlq.WriterOptions{
		Topology: topo, Worker: id, RedactHeaders: cfg.DLQ.RedactHeaders, MaxPayload: nc.MaxPayload(),
	})
	if err != nil {
		return err
	}
	history, err := dlq.EnsureHistory(ctx, js, topo, dlq.WithHistoryRedaction(dlqWriter.Headers()))
	if err != nil {
		return err
	}
	crashLoops, err := dlq.NewCrashLoopWatcher(ctx, dlq.CrashLoopOptions{
		JS: js, Topology: topo, Consumer: bus.DefaultConsumer,
		Writer: dlqWriter, History: history, Logger: log,
	})
	if err != nil {
		return err
	}

	resultCache, cachePolicies, err := buildCache(ctx, cfg, js, topo, log)
	if err != nil {
		return err
	}
	if resultCache != nil {
		defer func() { _ = resultCache.Close() }()
		probe.cache.Store(resultCache)
	}

	replyRules, err := pipeline.ReplyRules(topo, cfg.Worker.ReplySubjects)
	if err != nil {
		return err
	}
	w, err := pipeline.New(ctx, pipeline.Options{
		Reply: replyRules,
		JS:    js, Conn: nc, Consumer: consumer, Topology: topo, Router: bk.router,
		Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
			return setup(ctx, js, topo, cfg, log)
		},
		DLQ:           dlqWriter,
		History:       history,
		WorkerID:      id,
		Cache:         resultCache,
		CachePolicies: cachePolicies,
		Tracer:        tracerOf(traces),
		Propagator:    traces.Propagator(),
		Observe:       settledObserver(instruments),
		Concurrency:   cfg.Worker.Concurrency,
		AckWait:       cfg.Worker.AckWait.D(),
		MaxDeliver:    cfg.Worker.MaxDeliver,
		MaxPayload:    int(cfg.Worker.MaxPayload),
		Logger:        log,
	})
	if err != nil {
		return err
	}

	probe.nc.Store(nc)
	probe.worker.Store(w)
	log.Info("worker started", "id", id, "nats", bus.RedactURL(nc.ConnectedUrl()), "routes", len(cfg.Routes))
	if len(cfg.Routes) == 0 {
		log.Warn("the config has no routes: every task will be dead-lettered as no_route", "config", f.config)
	}
	// Background duties run beside the pipeline and stop with it.
	bgCtx, stopBackground := context.WithCancel(ctx)
	var bg errgroup.Group
	bg.Go(func() error { return crashLoops.Run(bgCtx) })
	bg.Go(func() error { return monitor.Run(bgCtx) })
	admin, err := health.StartAdmin(health.AdminOptions{
		Conn: nc, Monitor: monitor, WorkerID: id, Version: version,
		Control: &control{worker: w, targets: bk.targets}, Tasks: w, Subject: adminSubject(topo),
	})
	if err != nil {
		stopBackground()
		_ = bg.Wait()
		return err
	}
	defer func() { _ = admin.Stop() }()
	runErr := w.Run(ctx)
	stopBackground()
	if err := bg.Wait(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return runErr
	}
	// Results and acks are async: flush them before closing.
	if err := nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("flush on shutdown", "err", err)
	}
	log.Info("worker stopped", "stats", fmt.Sprintf("%+v", w.Stats()))
	return nil
}

// setup creates or updates the streams and the shared consumer, retrying
// while the server has no JetStream leader yet (a cluster starting up).
func setup(ctx context.Context, js jetstream.JetStream, topo bus.Topology, cfg *config.Config, log *slog.Logger) (jetstream.Consumer, error) {
	var lastErr error
	for attempt := 0; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := bus.EnsureStreams(sctx, js, topo)
		var c jetstream.Consumer
		if err == nil {
			c, err = bus.EnsureConsumer(sctx, js, topo, bus.ConsumerOptions{
				AckWait: cfg.Worker.AckWait.D(), MaxDeliver: pipeline.ConsumerMaxDeliver(cfg.Worker.MaxDeliver),
			})
		}
		cancel()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, bus.ErrStreamMismatch) || errors.Is(err, ctx.Err()) && ctx.Err() != nil || refused(err) {
			return nil, err
		}
		if lastErr == nil || lastErr.Error() != err.Error() {
			log.Warn("streams not ready; retrying", "err", err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(time.Duration(attempt+1)*250*time.Millisecond, 5*time.Second)):
		}
	}
}

// refused reports a request the server refused as malformed (a bad stream
// name, a bad setting): trying again cannot help. Races between workers
// starting at once (a stream or consumer made meanwhile) are retried.
func refused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 400 {
		return false
	}
	switch apiErr.ErrorCode {
	case 10058, 10013, 10148, 10149: // stream/consumer name exists, consumer exists / does not exist
		return false
	}
	return true
}

// readiness holds what /readyz reports on; it fills in as the worker starts.
type readiness struct {
	nc      atomic.Pointer[nats.Conn]
	worker  atomic.Pointer[pipeline.Worker]
	cache   atomic.Pointer[cache.Cache]
	targets atomic.Pointer[map[string]resilience.Target]
}

// breakers reads each backend's breaker state for the metrics.
func (r *readiness) breakers() map[string]string {
	out := map[string]string{}
	if ts := r.targets.Load(); ts != nil {
		for name, t := range *ts {
			if b := t.Breaker(); b != nil {
				out[name] = b.State().String()
			}
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

func newLogger(f *flags, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(f.logLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	// Lines logged with a task's context carry its trace and span ids.
	if f.logFormat == "text" {
		return slog.New(tracing.NewLogHandler(slog.NewTextHandler(w, opts)))
	}
	return slog.New(tracing.NewLogHandler(slog.NewJSONHandler(w, opts)))
}
