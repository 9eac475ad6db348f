package pipeline_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/tracing"
)

// One trace from the publisher's span through the worker's process span,
// one sibling span per backend attempt (the failed primary, the fallback),
// the backend's received traceparent, to the stored result.
func TestOneTracePublishToResult(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("test")
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

	var mu sync.Mutex
	seen := map[string]string{} // path → traceparent received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("traceparent")
		mu.Unlock()
		if r.URL.Path == "/down" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	hook := func(ctx context.Context, backend string, n int) (context.Context, func(resilience.Attempt)) {
		ctx, span := tracing.StartAttempt(ctx, tr, backend, n, "closed")
		return ctx, func(a resilience.Attempt) { tracing.EndAttempt(span, a.Err, handlers.StatusOf(a.Err), "transient") }
	}
	target := func(name, path string) resilience.Target {
		h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: name, URL: srv.URL + path, Propagator: prop})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		return resilience.NewTarget(name, h, resilience.PolicyOptions{Hook: hook})
	}
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{target("primary", "/down"), target("fallback", "/up")}}
	e.start(t, pipeline.Options{Tracer: tr, Propagator: prop}, route)

	ctx, pub := tracing.StartPublish(context.Background(), tr, prop, "tasks.work", "tr1", nats.Header{}, 1)
	msg := nats.NewMsg("tasks.work")
	msg.Data = []byte("x")
	msg.Header.Set("Nats-Msg-Id", "tr1")
	tracing.Inject(ctx, prop, msg.Header)
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	pub.End()
	traceID := pub.SpanContext().TraceID()

	result := e.waitMsg(t, "RESULTS", "results.work.tr1")
	if got := traceOf(t, prop, result.Header); got != traceID {
		t.Errorf("result traceparent trace %s, want %s", got, traceID)
	}
	mu.Lock()
	for path, tp := range seen {
		if got := traceOf(t, prop, nats.Header{"traceparent": {tp}}); got != traceID {
			t.Errorf("backend %s saw trace %s, want %s", path, got, traceID)
		}
	}
	mu.Unlock()

	testkit.Eventually(t, 15*time.Second, "the process span ended", func() (bool, string) { return len(byName(exp.GetSpans())["process tasks.work"]) == 1, "" })
	spans := byName(exp.GetSpans())
	process := spans["process tasks.work"][0]
	if process.Parent.SpanID() != pub.SpanContext().SpanID() || process.SpanKind != trace.SpanKindConsumer {
		t.Errorf("process span parent %s kind %s, want the publish span, consumer", process.Parent.SpanID(), process.SpanKind)
	}
	for _, name := range []string{"call primary", "call fallback"} {
		got := spans[name]
		if len(got) != 1 || got[0].Parent.SpanID() != process.SpanContext.SpanID() || got[0].SpanContext.TraceID() != traceID {
			t.Errorf("%s: %d spans, want one child of the process span", name, len(got))
		}
	}
	if len(spans["publish results.work.tr1"]) != 1 {
		t.Errorf("no result publish span; spans: %v", keys(spans))
	}
}

func traceOf(t *testing.T, prop propagation.TextMapPropagator, h nats.Header) trace.TraceID {
	t.Helper()
	return trace.SpanContextFromContext(tracing.Extract(context.Background(), prop, h)).TraceID()
}

func byName(spans tracetest.SpanStubs) map[string]tracetest.SpanStubs {
	out := map[string]tracetest.SpanStubs{}
	for _, s := range spans {
		out[s.Name] = append(out[s.Name], s)
	}
	return out
}
