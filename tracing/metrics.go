package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// MetricsOptions configure NewMetrics.
type MetricsOptions struct {
	// ServiceName is the service.name resource attribute (target_info);
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it.
	ServiceName string
	// Version is the service.version resource attribute.
	Version string
}

// Metrics is a meter provider whose instruments are served in Prometheus
// text format by Handler. Call Shutdown when done.
type Metrics struct {
	reg      *prometheus.Registry
	provider *sdkmetric.MeterProvider
	meter    metric.Meter
	primed   atomic.Pointer[[]zeroSeries] // set by Prime
}

// NewMetrics builds a private Prometheus registry (with the Go runtime and
// process collectors) and an OpenTelemetry meter provider exporting to it.
func NewMetrics(o MetricsOptions) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	if err := errors.Join(
		reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("metrics: prometheus exporter: %w", err)
	}
	// Our attributes first, so that the standard environment overrides them.
	res, err := resource.New(context.Background(),
		resource.WithAttributes(semconv.ServiceName(o.ServiceName), semconv.ServiceVersion(o.Version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("metrics: resource: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	return &Metrics{
		reg:      reg,
		provider: provider,
		meter:    provider.Meter("github.com/breakwater/breakwater", metric.WithInstrumentationVersion(o.Version)),
	}, nil
}

// Meter is the meter instruments are created from.
func (m *Metrics) Meter() metric.Meter { return m.meter }

// Handler serves the metrics in Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(primedGatherer{m}, promhttp.HandlerOpts{})
}

// Shutdown stops the meter provider; Handler serves nothing new after it.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }

// WorkerStats are the counters a worker keeps on its task path.
type WorkerStats struct {
	Done, DeadLettered, Redelivered, Duplicates uint64
	InFlight                                    int64
}

// ObserveWorker registers the worker's task instruments, read from stats
// at each collection (the counts themselves are kept where tasks settle):
// breakwater.tasks by outcome (ok, dead_lettered, redelivered, duplicate)
// and breakwater.tasks.in_flight.
func ObserveWorker(m metric.Meter, stats func() WorkerStats) error {
	tasks, err := m.Int64ObservableCounter("breakwater.tasks",
		metric.WithUnit("{task}"),
		metric.WithDescription("Task deliveries settled by this worker, by outcome."))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	inFlight, err := m.Int64ObservableUpDownCounter("breakwater.tasks.in_flight",
		metric.WithUnit("{task}"),
		metric.WithDescription("Tasks being processed by this worker now."))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	outcome := func(v string) metric.ObserveOption {
		return metric.WithAttributes(outcomeKey.String(v))
	}
	ok, dead, redelivered, dup := outcome("ok"), outcome("dead_lettered"), outcome("redelivered"), outcome("duplicate")
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := stats()
		o.ObserveInt64(tasks, int64(s.Done), ok)
		o.ObserveInt64(tasks, int64(s.DeadLettered), dead)
		o.ObserveInt64(tasks, int64(s.Redelivered), redelivered)
		o.ObserveInt64(tasks, int64(s.Duplicates), dup)
		o.ObserveInt64(inFlight, s.InFlight)
		return nil
	}, tasks, inFlight)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
