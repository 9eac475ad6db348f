package tracing_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

// recorder sets up tracing with an in-memory exporter, as a test would
// from a caller's side.
func recorder(t testing.TB) (*tracing.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.SetupTracing(context.Background(), tracing.TracingOptions{ServiceName: "test", Getenv: env(nil), Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

func spanNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var names []string
		for _, s := range exp.GetSpans() {
			names = append(names, s.Name)
		}
		t.Fatalf("%d spans named %q, want 1; spans: %q", len(found), name, names)
	}
	return found[0]
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// wantAttrs checks some attributes of s, by their string form.
func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]string) {
	t.Helper()
	got := attrs(s)
	for k, v := range want {
		if g, ok := got[attribute.Key(k)]; !ok || g.String() != v {
			t.Errorf("span %q: %s = %q (present %v), want %q", s.Name, k, g.String(), ok, v)
		}
	}
}

// A publish span and the process span of the delivered message share one
// trace id through a real JetStream stream: the process span is the
// publish span's child (not a new root).
func TestPublishAndProcessShareOneTrace(t *testing.T) {
	_, js := testkit.StartServer(t).JetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	topo := bus.Topology{}
	if err := bus.EnsureStreams(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	tr, exp := recorder(t)

	// Publisher side.
	msg := nats.NewMsg(topo.TaskSubject("echo"))
	msg.Data = []byte("hello")
	msg.Header.Set("Nats-Msg-Id", "task-1")
	pctx, pub := tracing.StartPublish(ctx, tr.Tracer(), tr.Propagator(), msg.Subject, "task-1", msg.Header, len(msg.Data))
	if _, err := js.PublishMsg(pctx, msg); err != nil {
		t.Fatal(err)
	}
	pub.End()

	// Worker side.
	cons, err := js.CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Headers()["traceparent"]; len(got) != 1 {
		t.Fatalf("stored task headers %v, want one lowercase traceparent", m.Headers())
	}
	md, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	_, proc := tracing.StartProcess(ctx, tr.Tracer(), tr.Propagator(), tracing.ProcessInfo{
		Subject: m.Subject(), Type: "echo", TaskID: "task-1", Stream: md.Stream, Consumer: md.Consumer,
		Seq: md.Sequence.Stream, Delivered: int(md.NumDelivered), Header: m.Headers(), BodySize: len(m.Data()),
	})
	proc.End()
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}

	ps, cs := spanNamed(t, exp, "publish tasks.echo"), spanNamed(t, exp, "process tasks.echo")
	if cs.SpanContext.TraceID() != ps.SpanContext.TraceID() {
		t.Errorf("process trace %s, want the publish trace %s", cs.SpanContext.TraceID(), ps.SpanContext.TraceID())
	}
	if cs.Parent.SpanID() != ps.SpanContext.SpanID() || !cs.Parent.IsRemote() {
		t.Errorf("process parent %s (remote %v), want the publish span %s, remote", cs.Parent.SpanID(), cs.Parent.IsRemote(), ps.SpanContext.SpanID())
	}
	if ps.SpanKind != trace.SpanKindProducer || cs.SpanKind != trace.SpanKindConsumer {
		t.Errorf("kinds %s, %s; want producer, consumer", ps.SpanKind, cs.SpanKind)
	}
	wantAttrs(t, ps, map[string]string{
		"messaging.system": "nats", "messaging.destination.name": "tasks.echo", "messaging.operation.type": "send",
		"messaging.operation.name": "publish", "messaging.message.id": "task-1", "messaging.message.body.size": "5",
	})
	wantAttrs(t, cs, map[string]string{
		"messaging.system": "nats", "messaging.destination.name": "tasks.echo", "messaging.operation.type": "process",
		"messaging.operation.name": "process", "messaging.message.id": "task-1", "messaging.consumer.group.name": "workers",
		"messaging.message.body.size": "5", "messaging.nats.message.delivery_count": "1",
		"messaging.nats.stream.name": "TASKS", "messaging.nats.message.sequence": "1", "breakwater.task.type": "echo",
	})
}

// A replay is a new root linked to the failed task's trace, and the
// republished task carries the replay's context instead of the old one.
func TestReplayIsLinkedNotParented(t *testing.T) {
	tr, exp := recorder(t)
	failed := nats.Header{"Traceparent": {traceparent}, "Task-Id": {"t1"}}
	out := nats.Header{"Traceparent": {traceparent}, "Task-Id": {"t1"}}
	_, span := tracing.StartReplay(t.Context(), tr.Tracer(), tr.Propagator(), failed, out, "tasks.echo", 42)
	span.End()

	s := spanNamed(t, exp, "dlq replay tasks.echo")
	old := trace.SpanContextFromContext(tracing.Extract(context.Background(), tr.Propagator(), failed))
	if s.Parent.IsValid() {
		t.Errorf("replay has parent %s, want a new root", s.Parent.SpanID())
	}
	if s.SpanContext.TraceID() == old.TraceID() {
		t.Error("replay continues the failed trace, want a new one")
	}
	if len(s.Links) != 1 || s.Links[0].SpanContext.TraceID() != old.TraceID() || s.Links[0].SpanContext.SpanID() != old.SpanID() {
		t.Errorf("links %+v, want one to the failed task's span %s", s.Links, old.SpanID())
	}
	wantAttrs(t, s, map[string]string{"breakwater.dlq.seq": "42", "messaging.destination.name": "tasks.echo"})
	if _, stale := out["Traceparent"]; stale {
		t.Errorf("republished headers keep the failed task's Traceparent: %v", out)
	}
	if got := trace.SpanContextFromContext(tracing.Extract(context.Background(), tr.Propagator(), out)); got.SpanID() != s.SpanContext.SpanID() {
		t.Errorf("republished task's parent %s, want the replay span %s", got.SpanID(), s.SpanContext.SpanID())
	}
}

// A DLQ entry without trace context still replays, with no link.
func TestReplayWithoutTraceContext(t *testing.T) {
	tr, exp := recorder(t)
	_, span := tracing.StartReplay(t.Context(), tr.Tracer(), tr.Propagator(), nats.Header{}, nats.Header{}, "tasks.echo", 1)
	span.End()
	if s := spanNamed(t, exp, "dlq replay tasks.echo"); len(s.Links) != 0 {
		t.Errorf("links %+v, want none", s.Links)
	}
}

func TestWorkerSpans(t *testing.T) {
	tr, exp := recorder(t)
	ctx, proc := tracing.StartProcess(t.Context(), tr.Tracer(), tr.Propagator(), tracing.ProcessInfo{Subject: "tasks.echo", Type: "echo", TaskID: "t9"})

	_, cache := tracing.StartCache(ctx, tr.Tracer(), "echo")
	tracing.EndCache(cache, false, nil)
	_, a1 := tracing.StartAttempt(ctx, tr.Tracer(), "flow", 1, "closed")
	tracing.EndAttempt(a1, errors.New("503 Service Unavailable"), 503, "transient")
	_, a2 := tracing.StartAttempt(ctx, tr.Tracer(), "coder", 2, "")
	tracing.EndAttempt(a2, nil, 200, "")
	h := nats.Header{}
	_, res := tracing.StartResultPublish(ctx, tr.Tracer(), tr.Propagator(), "results.echo.t9", "t9", h, 3)
	tracing.End(res, nil)
	dh := nats.Header{}
	_, dlq := tracing.StartDLQPublish(ctx, tr.Tracer(), tr.Propagator(), "dlq.echo", "t9", "exhausted", dh, 3)
	tracing.End(dlq, errors.New("no ack"))
	proc.End()

	process := spanNamed(t, exp, "process tasks.echo")
	tests := []struct {
		name       string
		wantKind   trace.SpanKind
		wantStatus codes.Code
		wantAttrs  map[string]string
	}{
		{"cache lookup", trace.SpanKindInternal, codes.Unset, map[string]string{"breakwater.cache.hit": "false", "breakwater.task.type": "echo"}},
		{"call flow", trace.SpanKindClient, codes.Error, map[string]string{"breakwater.backend": "flow", "breakwater.attempt": "1",
			"breakwater.breaker.state": "closed", "http.response.status_code": "503", "breakwater.error.class": "transient"}},
		{"call coder", trace.SpanKindClient, codes.Unset, map[string]string{"breakwater.attempt": "2", "http.response.status_code": "200"}},
		{"publish results.echo.{task_id}", trace.SpanKindProducer, codes.Unset, map[string]string{
			"messaging.destination.name": "results.echo.t9", "messaging.destination.template": "results.echo.{task_id}", "messaging.message.id": "t9"}},
		{"publish dlq.echo", trace.SpanKindProducer, codes.Error, map[string]string{"breakwater.dlq.reason": "exhausted", "messaging.destination.name": "dlq.echo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spanNamed(t, exp, tt.name)
			if s.Parent.SpanID() != process.SpanContext.SpanID() {
				t.Errorf("parent %s, want the process span %s", s.Parent.SpanID(), process.SpanContext.SpanID())
			}
			if s.SpanKind != tt.wantKind || s.Status.Code != tt.wantStatus {
				t.Errorf("kind %s status %s, want %s %s", s.SpanKind, s.Status.Code, tt.wantKind, tt.wantStatus)
			}
			wantAttrs(t, s, tt.wantAttrs)
		})
	}
	if _, ok := attrs(spanNamed(t, exp, "call coder"))["breakwater.breaker.state"]; ok {
		t.Error("call coder has a breaker state, none was given")
	}
	for name, hdr := range map[string]nats.Header{"result": h, "dlq": dh} {
		if len(hdr["traceparent"]) != 1 {
			t.Errorf("%s headers %v, want a traceparent", name, hdr)
		}
	}
}

// A sampled-out publish still writes the context (flags 00), so the
// worker keeps the publisher's decision instead of sampling anew.
func TestPublishUnsampledStillPropagates(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{Getenv: env(nil), Exporter: exp, Sampler: sdktrace.NeverSample()})
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	_, span := tracing.StartPublish(t.Context(), tr.Tracer(), tr.Propagator(), "tasks.echo", "", h, 0)
	span.End()
	if tp := h.Get("traceparent"); len(tp) != 55 || tp[53:] != "00" {
		t.Errorf("traceparent %q, want one with flags 00", tp)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans exported, want 0", n)
	}
}

// Off, the helpers neither allocate nor touch headers.
func TestHelpersOffAllocateNothing(t *testing.T) {
	tr, err := tracing.SetupTracing(t.Context(), tracing.TracingOptions{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, tracer, prop := context.Background(), tr.Tracer(), tr.Propagator()
	h := nats.Header{"traceparent": {traceparent}}
	out := nats.Header{}
	info := tracing.ProcessInfo{Subject: "tasks.echo", Type: "echo", TaskID: "t1", Header: h, Delivered: 1}
	allocs := testing.AllocsPerRun(100, func() {
		c, s := tracing.StartProcess(ctx, tracer, prop, info)
		_, a := tracing.StartAttempt(c, tracer, "flow", 1, "closed")
		tracing.EndAttempt(a, nil, 200, "")
		_, p := tracing.StartPublish(c, tracer, prop, "results.echo.t1", "t1", out, 10)
		p.End()
		_, r := tracing.StartReplay(c, tracer, prop, h, out, "tasks.echo", 1)
		r.End()
		s.End()
		if c != ctx || s.IsRecording() {
			t.Fatal("off: a new context or a recording span")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per task with tracing off, want 0", allocs)
	}
	if len(out) != 0 {
		t.Errorf("off: headers written: %v", out)
	}
}

// BenchmarkStartProcess is the per-delivery cost of a process span and
// its end: off (no-op tracer), and on with every span sampled and handed
// synchronously to an exporter that drops it (the span's own cost, without
// an exporter's encoding or network).
func BenchmarkStartProcess(b *testing.B) {
	h := nats.Header{"traceparent": {traceparent}, "Task-Id": {"t1"}}
	info := tracing.ProcessInfo{Subject: "tasks.echo", Type: "echo", TaskID: "t1", Stream: "TASKS", Consumer: "workers",
		Seq: 7, Delivered: 1, Header: h, BodySize: 128}
	for _, bc := range []struct {
		name string
		opts tracing.TracingOptions
	}{
		{"off", tracing.TracingOptions{Getenv: env(nil)}},
		{"on_ratio_1", tracing.TracingOptions{Getenv: env(map[string]string{
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}), Exporter: discard{}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr, err := tracing.SetupTracing(context.Background(), bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = tr.Shutdown(context.Background()) }()
			ctx, tracer, prop := context.Background(), tr.Tracer(), tr.Propagator()
			b.ReportAllocs()
			for b.Loop() {
				_, s := tracing.StartProcess(ctx, tracer, prop, info)
				s.End()
			}
		})
	}
}

// discard is an exporter that drops every span.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }
