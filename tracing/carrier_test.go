package tracing_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

const (
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tracestate  = "vendor=opaque"
)

func w3c() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

func TestHeaderCarrierGet(t *testing.T) {
	tests := []struct {
		name string
		give nats.Header
		key  string
		want string
	}{
		{"lowercase", nats.Header{"traceparent": {"a"}}, "traceparent", "a"},
		{"canonical", nats.Header{"Traceparent": {"b"}}, "traceparent", "b"},
		{"upper", nats.Header{"TRACEPARENT": {"c"}}, "traceparent", "c"},
		{"exact wins", nats.Header{"Traceparent": {"x"}, "traceparent": {"d"}}, "traceparent", "d"},
		{"first value", nats.Header{"tracestate": {"e", "f"}}, "tracestate", "e"},
		{"missing", nats.Header{"Task-Id": {"1"}}, "traceparent", ""},
		{"empty values", nats.Header{"traceparent": {}}, "traceparent", ""},
		{"nil header", nil, "traceparent", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tracing.HeaderCarrier(tt.give).Get(tt.key); got != tt.want {
				t.Errorf("Get(%q) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestHeaderCarrierSetKeepsLowercase(t *testing.T) {
	h := nats.Header{"Traceparent": {"old"}, "TRACEPARENT": {"older"}, "Task-Id": {"t1"}}
	c := tracing.HeaderCarrier(h)
	c.Set("traceparent", "new")
	want := nats.Header{"traceparent": {"new"}, "Task-Id": {"t1"}}
	if len(h) != len(want) || h["traceparent"][0] != "new" || h["Task-Id"][0] != "t1" {
		t.Errorf("header after Set: %v, want %v", h, want)
	}
	keys := c.Keys()
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"Task-Id", "traceparent"}) {
		t.Errorf("Keys() = %v, want [Task-Id traceparent]", keys)
	}
}

// Inject writes the W3C keys exactly (lowercase, as other OpenTelemetry
// NATS clients read them), the NATS wire keeps them so, and Extract reads
// back the same span context on the other side.
func TestInjectExtractThroughNATS(t *testing.T) {
	nc := testkit.StartServer(t, testkit.NoJetStream()).Connect(t)
	sub, err := nc.SubscribeSync("carrier.test")
	if err != nil {
		t.Fatal(err)
	}

	prop := w3c()
	parent := tracing.Extract(context.Background(), prop, nats.Header{"traceparent": {traceparent}, "tracestate": {tracestate}})
	sent := trace.SpanContextFromContext(parent)
	if !sent.IsValid() || !sent.IsRemote() {
		t.Fatalf("extracted %v from a valid traceparent", sent)
	}
	msg := nats.NewMsg("carrier.test")
	msg.Header.Set("Task-Id", "t1")
	tracing.Inject(parent, prop, msg.Header)
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	got, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"traceparent": traceparent, "tracestate": tracestate, "Task-Id": "t1"} {
		if v := got.Header[k]; len(v) != 1 || v[0] != want {
			t.Errorf("received header[%q] = %q, want [%q] (all: %v)", k, v, want, got.Header)
		}
	}
	back := trace.SpanContextFromContext(tracing.Extract(context.Background(), prop, got.Header))
	if !back.Equal(sent.WithRemote(true)) {
		t.Errorf("round trip: got %v, want %v", back, sent)
	}
}
