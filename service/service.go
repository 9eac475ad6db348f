package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/internal/version"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/schedule"
	"github.com/breakwater/breakwater/tracing"
)

// Options configure a worker run. Connect is required.
type Options struct {
	// ConfigFile is the YAML config (see package config); "" runs the
	// built-in defaults (the builtin handlers on their own routes), and
	// a reload request is logged and ignored.
	ConfigFile string
	// Connect gives the connection settings from the config file's nats
	// section; the caller applies its flags and environment over it.
	Connect func(file config.NATS) bus.ConnectOptions
	// Embedded, when set, starts an in-process NATS server with its store
	// in that directory, listening at the address Connect names.
	Embedded string
	// EmbeddedFsync is the embedded server's fsync: "always" (default,
	// every write) or "interval" (the server's default, faster).
	EmbeddedFsync string
	// HTTPAddr, when set, serves /healthz, /readyz and /metrics there.
	HTTPAddr string
	// WorkerID names the worker in DLQ entries and health events; default
	// host-pid.
	WorkerID string
	// Version is reported in heartbeats, the admin service and metrics;
	// default version.Get().
	Version *version.Info
	// Getenv reads the OTEL_* tracing settings; default os.Getenv.
	Getenv func(string) string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Reload, when set, makes the worker load ConfigFile again each time
	// it receives (SIGHUP in cmd/worker); see the package doc.
	Reload <-chan struct{}
}

// ErrInvalidOption is wrapped by Run's error when Options cannot work.
var ErrInvalidOption = errors.New("invalid service option")

// Run loads the config, starts the worker and runs it until ctx ends, then
// drains (in-flight tasks finish or are handed back) and returns nil. It
// returns an error when the worker cannot start or stops consuming; one
// caused by bad connection settings wraps bus.ErrInvalidOption, one by a
// bad config file config.ErrInvalid. Everything it starts is stopped
// before it returns.
func Run(ctx context.Context, o Options) error {
	if o.Connect == nil {
		return fmt.Errorf("%w: Connect is required", ErrInvalidOption)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Version == nil {
		v := version.Get()
		o.Version = &v
	}
	if o.WorkerID == "" {
		host, _ := os.Hostname()
		o.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	log := o.Logger
	ld, err := load(o.ConfigFile)
	if err != nil {
		return err
	}
	cfg := ld.cfg
	s := &worker{o: o, log: log, path: o.ConfigFile, running: cfg}
	s.probe.loaded.Store(ld)

	var metrics *tracing.Metrics
	if o.HTTPAddr != "" {
		metrics, err = tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-worker", Version: o.Version.String()})
		if err != nil {
			return err
		}
		defer func() { _ = metrics.Shutdown(context.Background()) }()
		if err := tracing.ObserveWorker(metrics.Meter(), s.probe.stats); err != nil {
			return err
		}
		if s.reloads, err = metrics.Meter().Int64Counter("breakwater.config.reloads", metric.WithUnit("{reload}"),
			metric.WithDescription("Config reloads (SIGHUP), by result: ok or error.")); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		stopHTTP, err := serveHTTP(o.HTTPAddr, &s.probe, metrics.Handler(), log)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}

	traces, err := tracing.SetupTracing(ctx, tracing.TracingOptions{ServiceName: "breakwater-worker", Version: o.Version.String(), Getenv: o.Getenv})
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

	conn := o.Connect(cfg.NATS)
	id := o.WorkerID
	if o.Embedded != "" {
		host, port, err := bus.HostPort(conn.URL)
		if err != nil {
			return fmt.Errorf("--embedded listens at --nats-url: %w", err)
		}
		dir, _ := filepath.Abs(o.Embedded)
		fsync := o.EmbeddedFsync
		if fsync == "" {
			fsync = "always"
		}
		srv, err := bus.StartEmbedded(bus.EmbeddedOptions{
			Host: host, Port: port, StoreDir: dir,
			NoSyncAlways: fsync == "interval",
			Logger:       log,
		})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		conn.URL = srv.ClientURL()
		log.Info("embedded nats server started", "url", conn.URL, "store", dir, "fsync", fsync)
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
	s.nc = nc

	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*cfg.Worker.Concurrency+256),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.js = js
	topo := topologyOf(cfg)
	s.topo = topo
	consumer, err := setup(ctx, js, topo, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	monitor, err := health.New(health.Options{
		JS: js, Conn: nc, Topology: topo, WorkerID: id, Version: o.Version.String(),
		Interval: cfg.Health.Interval.D(), SLATarget: cfg.Health.SLATarget,
		BreakerOpenAlertAfter: cfg.Health.BreakerOpenAlertAfter.D(),
		Probes:                probes(cfg, nc),
		WorkerStats:           s.probe.healthStats,
		Limits:                s.probe.limits,
		DLQUsage: func(ctx context.Context) (int64, int64, error) {
			return dlq.Usage(ctx, js, topo)
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	s.monitor = monitor
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
			Breakers: s.probe.breakers,
			Limits:   s.probe.allLimits,
			Cache:    s.probe.cacheStats,
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
	var fired func(typ string, periodic bool, late time.Duration) // nil without --http
	if metrics != nil {
		schedules := schedule.New(js, schedule.Options{Topology: topo})
		si, err := tracing.NewScheduleInstruments(metrics.Meter(), tracing.ScheduleOptions{
			Periodic: func(ctx context.Context) (uint64, error) { return schedules.Count(ctx, schedule.Every) },
			Delayed:  func(ctx context.Context) (uint64, error) { return schedules.Count(ctx, schedule.Once) },
		})
		if err != nil {
			return err
		}
		metrics.PrimeSchedules(si, knownLabels(cfg).Types)
		fired = func(typ string, periodic bool, late time.Duration) {
			si.Fired(context.Background(), typ, periodic, late)
		}
	}
	s.obs = observe(monitor, traces, instruments)
	bk, err := Build(cfg, nc, log, s.obs, nil)
	if err != nil {
		return err
	}
	s.bk = bk
	s.probe.targets.Store(&bk.Targets)
	// Tracked from the start, so heartbeats cover them before any call.
	if err := monitor.Reconfigure(healthSettings(cfg, nc, bk)); err != nil {
		bk.Close()
		return err
	}

	dlqWriter, err := dlq.EnsureWriter(ctx, js, dlq.WriterOptions{
		Topology: topo, Worker: id, RedactHeaders: cfg.DLQ.RedactHeaders, MaxPayload: nc.MaxPayload(),
	})
	if err != nil {
		bk.Close()
		return err
	}
	history, err := dlq.EnsureHistory(ctx, js, topo, dlq.WithHistoryRedaction(dlqWriter.Headers()))
	if err != nil {
		bk.Close()
		return err
	}
	crashLoops, err := dlq.NewCrashLoopWatcher(ctx, dlq.CrashLoopOptions{
		JS: js, Topology: topo, Consumer: bus.DefaultConsumer,
		Writer: dlqWriter, History: history, Logger: log,
	})
	if err != nil {
		bk.Close()
		return err
	}

	s.cacheSet = cacheSettingsOf(cfg)
	resultCache, err := buildCache(ctx, s.cacheSet, js, topo, log)
	if err != nil {
		bk.Close()
		return err
	}
	s.probe.cache.Store(resultCache)

	replyRules, err := pipeline.ReplyRules(topo, cfg.Worker.ReplySubjects)
	if err != nil {
		s.closeCurrent()
		return err
	}
	w, err := pipeline.New(ctx, pipeline.Options{
		Reply: replyRules,
		JS:    js, Conn: nc, Consumer: consumer, Topology: topo, Router: bk.Router,
		Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
			return setup(ctx, js, topo, cfg, log)
		},
		DLQ:           dlqWriter,
		History:       history,
		WorkerID:      id,
		Cache:         resultCache,
		CachePolicies: s.cacheSet.policies,
		Tracer:        tracerOf(traces),
		Propagator:    traces.Propagator(),
		Observe:       settledObserver(instruments),
		OnFired:       fired,
		Concurrency:   cfg.Worker.Concurrency,
		AckWait:       cfg.Worker.AckWait.D(),
		MaxDeliver:    cfg.Worker.MaxDeliver,
		MaxPayload:    int(cfg.Worker.MaxPayload),
		Logger:        log,
	})
	if err != nil {
		s.closeCurrent()
		return err
	}
	s.w = w
	// The first config's retirement, to release what a reload leaves
	// behind of it.
	s.current = newRetirement(nil)
	_ = w.SetLive(pipeline.Live{Router: bk.Router, Reply: replyRules, Cache: resultCache,
		CachePolicies: s.cacheSet.policies, Retired: s.current.retired})
	defer s.shutdown()

	s.probe.nc.Store(nc)
	s.probe.worker.Store(w)
	log.Info("worker started", "id", id, "version", o.Version.String(), "nats", bus.RedactURL(nc.ConnectedUrl()),
		"routes", len(cfg.Routes), "config", o.ConfigFile, "config_hash", ld.hash)
	if len(cfg.Routes) == 0 {
		log.Warn("the config has no routes: every task will be dead-lettered as no_route", "config", o.ConfigFile)
	}
	s.ctrl = &control{worker: w, targets: &s.probe.targets}
	if err := s.startAdmin(); err != nil {
		return err
	}
	defer s.stopAdmin()
	// Background duties run beside the pipeline and stop with it.
	bgCtx, stopBackground := context.WithCancel(ctx)
	var bg errgroup.Group
	bg.Go(func() error { return crashLoops.Run(bgCtx) })
	bg.Go(func() error { return monitor.Run(bgCtx) })
	if o.Reload != nil {
		bg.Go(func() error {
			for {
				select {
				case <-bgCtx.Done():
					return nil
				case <-o.Reload:
					if o.ConfigFile == "" {
						log.Warn("config reload ignored: the worker runs without a config file")
						continue
					}
					_ = s.Reload(bgCtx) // logged and counted there
				}
			}
		})
	}
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

// worker is a running worker: what it was started with and what a reload
// replaces.
type worker struct {
	o       Options
	log     *slog.Logger
	path    string
	nc      *nats.Conn
	js      jetstream.JetStream
	topo    bus.Topology
	monitor *health.Monitor
	w       *pipeline.Worker
	obs     Observers
	ctrl    *control
	probe   readiness
	reloads metric.Int64Counter // nil without metrics
	// running is the config the worker started with: the settings that
	// need a restart are compared with it.
	running *config.Config

	mu       sync.Mutex // serialises reloads and shutdown
	bk       *Backends
	cacheSet cacheSettings
	// current is the retirement of the config running now.
	current *retirement
	admin   adminService
}

// closeCurrent releases the backends and cache in use now.
func (s *worker) closeCurrent() {
	s.bk.Close()
	if c := s.probe.cache.Load(); c != nil {
		_ = c.Close()
	}
}

// shutdown releases everything after the pipeline stopped: the current
// backends and cache, and (waiting a little for them) the replaced ones.
func (s *worker) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev := s.current.prev; prev != nil {
		// The pipeline has stopped: the replaced configs retire now,
		// unless a backend ignoring cancellation still holds a task.
		select {
		case <-prev.done:
		case <-time.After(2 * time.Second):
			s.log.Warn("shutdown: backends of a replaced config still in use were not closed")
		}
	}
	s.closeCurrent()
}
