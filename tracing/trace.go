package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracingOptions configure SetupTracing.
type TracingOptions struct {
	// ServiceName and Version are resource attributes; OTEL_SERVICE_NAME
	// and OTEL_RESOURCE_ATTRIBUTES override them.
	ServiceName, Version string
	// Getenv reads the environment; default os.Getenv.
	Getenv func(string) string
	// Exporter, when set, is used instead of the one the environment
	// names (tests: tracetest.NewInMemoryExporter), synchronously.
	Exporter sdktrace.SpanExporter
	// Sampler, when set, replaces OTEL_TRACES_SAMPLER's.
	Sampler sdktrace.Sampler
}

// Tracing is the process's tracer provider, set up from the standard
// OTEL_* environment. Off (OTEL_TRACES_EXPORTER unset or none) it is a
// no-op provider: spans cost next to nothing and nothing is exported.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when off
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
}

// SetupTracing reads OTEL_TRACES_EXPORTER (otlp, console, none; the OTLP
// endpoint, protocol and headers from their OTEL_EXPORTER_OTLP_* variables),
// OTEL_TRACES_SAMPLER/_ARG and OTEL_SERVICE_NAME, and returns the provider.
// Spans are batched; Shutdown flushes them.
func SetupTracing(ctx context.Context, o TracingOptions) (*Tracing, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	t := &Tracing{prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	name := strings.TrimSpace(o.Getenv("OTEL_TRACES_EXPORTER"))
	if o.Exporter == nil && (name == "" || name == "none") {
		t.provider = noop.NewTracerProvider()
		t.tracer = t.provider.Tracer(scope)
		return t, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(o.ServiceName), semconv.ServiceVersion(o.Version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if o.Sampler != nil {
		opts = append(opts, sdktrace.WithSampler(o.Sampler))
	}
	if o.Exporter != nil {
		opts = append(opts, sdktrace.WithSyncer(o.Exporter))
	} else {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%s: %w", name, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	t.sdk = sdktrace.NewTracerProvider(opts...)
	t.provider = t.sdk
	t.tracer = t.sdk.Tracer(scope, trace.WithInstrumentationVersion(o.Version))
	return t, nil
}

// scope names the instrumentation.
const scope = "github.com/breakwater/breakwater"

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// Tracer makes the spans.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Provider is the tracer provider.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Propagator reads and writes W3C traceparent, tracestate and baggage.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// Shutdown flushes pending spans and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}
