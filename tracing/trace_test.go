package tracing_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/breakwater/breakwater/tracing"
)

// env is a Getenv over a map, so that tests never read the process's.
func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestSetupTracingFromEnv(t *testing.T) {
	tests := []struct {
		name        string
		give        map[string]string
		wantEnabled bool
		wantErr     error
		wantSampled bool // with a fresh root span
	}{
		{name: "unset is off"},
		{name: "none is off", give: map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{name: "sdk disabled", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}},
		{name: "console", give: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, wantEnabled: true, wantSampled: true},
		{name: "console upper case", give: map[string]string{"OTEL_TRACES_EXPORTER": " Console "}, wantEnabled: true, wantSampled: true},
		{name: "always_off", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_off"}, wantEnabled: true},
		{name: "ratio 0", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, wantEnabled: true},
		{name: "ratio 1", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}, wantEnabled: true, wantSampled: true},
		{name: "unknown exporter", give: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: tracing.ErrInvalidEnv},
		{name: "exporter list", give: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, wantErr: tracing.ErrInvalidEnv},
		{name: "unknown sampler", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: tracing.ErrInvalidEnv},
		{name: "ratio above 1", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: tracing.ErrInvalidEnv},
		{name: "ratio not a number", give: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, wantErr: tracing.ErrInvalidEnv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tr, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{ServiceName: "svc", Getenv: env(tt.give), ConsoleWriter: &out})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if tr.Enabled() != tt.wantEnabled {
				t.Errorf("Enabled() = %v, want %v", tr.Enabled(), tt.wantEnabled)
			}
			_, span := tr.Tracer().Start(t.Context(), "probe")
			if got := span.SpanContext().IsSampled(); got != tt.wantSampled {
				t.Errorf("root span sampled = %v, want %v", got, tt.wantSampled)
			}
			span.End()
			if err := tr.Shutdown(t.Context()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		})
	}
}

// The console exporter writes to ConsoleWriter (not the process's stdout),
// with the service name of OTEL_SERVICE_NAME, once Shutdown flushes the batch.
func TestSetupTracingConsoleFlushedOnShutdown(t *testing.T) {
	var out bytes.Buffer
	tr, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{
		ServiceName: "breakwater-test", Version: "v1",
		Getenv:        env(map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "from-env"}),
		ConsoleWriter: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Tracer().Start(context.Background(), "flushed-span")
	span.End()
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{`"Name":"flushed-span"`, `"Value":"from-env"`, span.SpanContext().TraceID().String()} {
		if !strings.Contains(got, want) {
			t.Errorf("console output lacks %s:\n%s", want, got)
		}
	}
}

// Off, Shutdown has nothing to do and the propagator still works (a worker
// with tracing off may pass a caller's context on).
func TestSetupTracingOffIsNoop(t *testing.T) {
	tr, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("enabled without OTEL_TRACES_EXPORTER")
	}
	_, span := tr.Tracer().Start(t.Context(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Errorf("span off: recording %v, valid %v; want neither", span.IsRecording(), span.SpanContext().IsValid())
	}
	if got := tr.Propagator().Fields(); len(got) != 3 {
		t.Errorf("propagator fields %v, want traceparent, tracestate, baggage", got)
	}
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// otlp exports over OTLP/HTTP (autoexport's default protocol) to the
// endpoint of the process environment, batched: the span arrives when
// Shutdown flushes. An unknown protocol is refused at setup.
func TestSetupTracingOTLP(t *testing.T) {
	var posts atomic.Int32
	var path atomic.Value
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.URL.Path)
		posts.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")

	tr, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{ServiceName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("otlp not enabled")
	}
	_, span := tr.Tracer().Start(t.Context(), "exported")
	span.End()
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, p := posts.Load(), path.Load(); n != 1 || p != "/v1/traces" {
		t.Errorf("collector got %d posts (last path %v), want 1 to /v1/traces", n, p)
	}

	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
	if _, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{}); !errors.Is(err, tracing.ErrInvalidEnv) {
		t.Errorf("protocol thrift: err = %v, want ErrInvalidEnv", err)
	}
}
