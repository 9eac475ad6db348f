package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ErrInvalidEnv is wrapped by SetupTracing's error when an OTEL_* variable
// has a value it does not know (an exporter, a sampler or its argument):
// a typo stops the process at start instead of silently tracing nothing.
var ErrInvalidEnv = errors.New("invalid OTEL_* environment")

// The environment variables SetupTracing reads through TracingOptions.Getenv.
const (
	envSDKDisabled   = "OTEL_SDK_DISABLED"
	envExporter      = "OTEL_TRACES_EXPORTER"
	envSampler       = "OTEL_TRACES_SAMPLER"
	envSamplerArg    = "OTEL_TRACES_SAMPLER_ARG"
	envServiceName   = "OTEL_SERVICE_NAME"
	exporterNone     = "none"
	exporterConsole  = "console"
	exporterOTLP     = "otlp"
	defaultSamplerID = "parentbased_always_on"
)

// TracingOptions configure SetupTracing. The zero value reads the process
// environment and exports where it says.
type TracingOptions struct {
	// ServiceName and Version are the service.name and service.version
	// resource attributes; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override them.
	ServiceName, Version string
	// Getenv reads the OTEL_* variables that choose whether and how to
	// trace (exporter, sampler, service name); default os.Getenv. The OTLP
	// exporter itself (endpoint, protocol, headers) and
	// OTEL_RESOURCE_ATTRIBUTES are read from the process environment by
	// the OpenTelemetry packages.
	Getenv func(string) string
	// Exporter, when set, turns tracing on whatever the environment says
	// and receives every ended span synchronously (tests:
	// tracetest.NewInMemoryExporter); no batching.
	Exporter sdktrace.SpanExporter
	// Sampler, when set, replaces OTEL_TRACES_SAMPLER's.
	Sampler sdktrace.Sampler
	// ConsoleWriter receives the spans of OTEL_TRACES_EXPORTER=console, one
	// JSON document per span; default os.Stdout. A command whose standard
	// output is its result points it at standard error.
	ConsoleWriter io.Writer
}

// Tracing is a tracer provider set up from the standard OTEL_* environment,
// with the W3C propagator. Off (OTEL_TRACES_EXPORTER unset or none, or
// OTEL_SDK_DISABLED=true) it is the no-op provider: no exporter, no
// goroutine, and the span helpers of this package return at once.
//
// Nothing is registered globally (otel.SetTracerProvider is never called):
// pass Tracer and Propagator to what makes spans. It is safe for
// concurrent use; call Shutdown once, when done.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when off
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
}

// SetupTracing reads the environment through o.Getenv:
//
//   - OTEL_TRACES_EXPORTER: unset, empty or none: off. otlp: OTLP through
//     autoexport (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL
//     http/protobuf or grpc, OTEL_EXPORTER_OTLP_HEADERS ...). console: JSON
//     to o.ConsoleWriter.
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: always_on, always_off,
//     traceidratio, parentbased_always_on (the default),
//     parentbased_always_off, parentbased_traceidratio; the argument is a
//     ratio in [0, 1], default 1.
//   - OTEL_SERVICE_NAME, OTEL_SDK_DISABLED.
//
// Spans are exported in batches by a BatchSpanProcessor; Shutdown flushes
// them. An unknown value is an error wrapping ErrInvalidEnv.
func SetupTracing(ctx context.Context, o TracingOptions) (*Tracing, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	t := &Tracing{prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	name, err := exporterName(o.Getenv)
	if err != nil {
		return nil, err
	}
	if o.Exporter == nil && (name == "" || strings.EqualFold(strings.TrimSpace(o.Getenv(envSDKDisabled)), "true")) {
		t.provider = noop.NewTracerProvider()
		t.tracer = t.provider.Tracer(scope)
		return t, nil
	}
	sampler := o.Sampler
	if sampler == nil {
		if sampler, err = samplerFromEnv(o.Getenv); err != nil {
			return nil, err
		}
	}
	// Our attributes first: the resource detectors that follow override them.
	service := o.ServiceName
	if s := strings.TrimSpace(o.Getenv(envServiceName)); s != "" {
		service = s
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceVersion(o.Version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// Set the sampler always, so that the SDK does not read
	// OTEL_TRACES_SAMPLER from the process environment behind Getenv.
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	if o.Exporter != nil {
		opts = append(opts, sdktrace.WithSyncer(o.Exporter))
	} else {
		exp, err := newExporter(ctx, name, o.ConsoleWriter)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	t.sdk = sdktrace.NewTracerProvider(opts...)
	t.provider = t.sdk
	t.tracer = t.sdk.Tracer(scope, trace.WithInstrumentationVersion(o.Version))
	return t, nil
}

// exporterName reads OTEL_TRACES_EXPORTER: "" when tracing is off.
func exporterName(getenv func(string) string) (string, error) {
	switch n := strings.ToLower(strings.TrimSpace(getenv(envExporter))); n {
	case "", exporterNone:
		return "", nil
	case exporterOTLP, exporterConsole:
		return n, nil
	default:
		// Comma lists are refused too: autoexport cannot build them.
		return "", fmt.Errorf("tracing: %s=%q: unknown exporter (want otlp, console or none): %w", envExporter, n, ErrInvalidEnv)
	}
}

// newExporter makes the exporter called name. OTLP comes from autoexport,
// which picks HTTP or gRPC from OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL and
// the endpoint and headers from their variables. autoexport chooses by the
// process's OTEL_TRACES_EXPORTER (otlp when unset), which is Getenv's
// unless a test injects another; the console exporter is made here so that
// it can write elsewhere than stdout.
func newExporter(ctx context.Context, name string, console io.Writer) (sdktrace.SpanExporter, error) {
	if name == exporterConsole {
		if console == nil {
			console = os.Stdout
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(console))
		if err != nil {
			return nil, fmt.Errorf("tracing: console exporter: %w", err)
		}
		return exp, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: %s=otlp: %w: %w", envExporter, err, ErrInvalidEnv)
	}
	return exp, nil
}

// samplerFromEnv mirrors the SDK's reading of OTEL_TRACES_SAMPLER(_ARG)
// (which uses os.Getenv) through getenv, strictly: a bad value is an error.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(getenv(envSampler)))
	if name == "" {
		name = defaultSamplerID
	}
	ratio := 1.0
	if arg := strings.TrimSpace(getenv(envSamplerArg)); arg != "" && strings.HasSuffix(name, "traceidratio") {
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || v < 0 || v > 1 {
			return nil, fmt.Errorf("tracing: %s=%q: want a ratio between 0 and 1: %w", envSamplerArg, arg, ErrInvalidEnv)
		}
		ratio = v
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	return nil, fmt.Errorf("tracing: %s=%q: unknown sampler: %w", envSampler, name, ErrInvalidEnv)
}

// scope names the instrumentation.
const scope = "github.com/breakwater/breakwater"

// Enabled reports whether spans are recorded and exported. Callers may
// skip building what only a span would use when it is false.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// Tracer makes the spans.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Provider is the tracer provider, for libraries that take one.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Propagator reads and writes W3C traceparent, tracestate and baggage.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// Shutdown ends every span processor: pending spans are exported (within
// ctx) and the exporters closed. Spans started after it are dropped. It is
// a no-op when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}
