package pipeline_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/tracing"
)

// BenchmarkTracing runs the echo route with tracing off and on at sampling
// ratios 0.01 and 1.0, spans batched to a local OTLP/HTTP receiver:
//
//	go test -run '^$' -bench Tracing -benchtime 20000x -count 3 ./pipeline/
func BenchmarkTracing(b *testing.B) {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(receiver.Close)
	echo, _ := handlers.Builtin("echo")
	for _, tc := range []struct {
		name  string
		ratio float64 // < 0: off
	}{{"off", -1}, {"ratio=0.01", 0.01}, {"ratio=1.0", 1}} {
		b.Run("impl=tracing-"+tc.name, func(b *testing.B) {
			e := newBenchEnv(b, false)
			o := pipeline.Options{}
			var hook resilience.AttemptHook
			if tc.ratio >= 0 {
				exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(receiver.URL+"/v1/traces"))
				if err != nil {
					b.Fatal(err)
				}
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(2048), sdktrace.WithMaxQueueSize(8192)),
					sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(tc.ratio))))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				tr := tp.Tracer("bench")
				o.Tracer, o.Propagator = tr, propagation.TraceContext{}
				hook = func(ctx context.Context, backend string, n int) (context.Context, func(resilience.Attempt)) {
					ctx, span := tracing.StartAttempt(ctx, tr, backend, n, "")
					return ctx, func(a resilience.Attempt) { tracing.EndAttempt(span, a.Err, 0, "") }
				}
			}
			route := &resilience.Route{Name: "echo", Targets: []resilience.Target{
				resilience.NewTarget("builtin:echo", echo, resilience.PolicyOptions{Hook: hook})}}
			runWorkerWith(b, e, o, route)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
