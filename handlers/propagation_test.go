package handlers_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/handlers"
)

// The attempt's span context, not the task's, reaches the backend.
func TestPropagatorInjectsCallContext(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	const want = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"
	// The task arrived with another parent; the attempt span replaces it.
	taskHeader := nats.Header{"traceparent": {"00-0102030405060708090a0b0c0d0e0f10-ffffffffffffffff-01"}}

	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
	}))
	t.Cleanup(srv.Close)
	h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "h", URL: srv.URL, Propagator: propagation.TraceContext{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })

	_, nc := startNATS(t)
	sub, err := nc.Subscribe("svc.trace", func(m *nats.Msg) {
		got <- m.Header.Get("traceparent")
		_ = m.Respond([]byte("ok"))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	n, err := handlers.NewNATS(handlers.NATSOptions{Name: "n", Conn: nc, Subject: "svc.trace", Propagator: propagation.TraceContext{}})
	if err != nil {
		t.Fatal(err)
	}

	for _, be := range []handlers.Backend{h, n} {
		if _, err := be.Call(ctx, &handlers.Request{TaskID: "t1", Payload: []byte("x"), Header: taskHeader}); err != nil {
			t.Fatal(err)
		}
		if tp := <-got; tp != want {
			t.Errorf("%T: backend saw traceparent %q, want %q", be, tp, want)
		}
	}
}
