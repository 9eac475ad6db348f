package tracing

import (
	"context"
	"strconv"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Attributes of our own, beside the messaging conventions.
const (
	AttrTaskType     = attribute.Key("breakwater.task.type")
	AttrDelivery     = attribute.Key("breakwater.delivery") // delivery count, from 1
	AttrBackend      = attribute.Key("breakwater.backend")
	AttrAttempt      = attribute.Key("breakwater.attempt")
	AttrBreaker      = attribute.Key("breakwater.breaker.state")
	AttrErrorClass   = attribute.Key("breakwater.error.class")
	AttrCacheHit     = attribute.Key("breakwater.cache.hit")
	AttrDLQReason    = attribute.Key("breakwater.dlq.reason")
	AttrHTTPStatus   = attribute.Key("http.response.status_code")
	systemNATS       = "nats"
	operationPublish = "publish"
	operationProcess = "process"
)

// StartPublish starts the producer span of a message published to subject
// and writes its context into h, so that the consumer continues the trace.
func StartPublish(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, subject, msgID string, h nats.Header, bodySize int) (context.Context, trace.Span) {
	ctx, span := tr.Start(ctx, operationPublish+" "+subject, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String(systemNATS),
			semconv.MessagingDestinationName(subject),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName(operationPublish),
			semconv.MessagingMessageBodySize(bodySize),
		)
		if msgID != "" {
			span.SetAttributes(semconv.MessagingMessageID(msgID))
		}
	}
	Inject(ctx, p, h)
	return ctx, span
}

// ProcessInfo describes a delivered task for its process span.
type ProcessInfo struct {
	Subject, Type, TaskID, Consumer string
	Delivered, BodySize             int
	Header                          nats.Header
}

// StartProcess starts the consumer span of one delivery of a task, a child
// of the publisher's span when the task carries a trace context: the trace
// goes on from publish to result.
func StartProcess(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, in ProcessInfo) (context.Context, trace.Span) {
	ctx = Extract(ctx, p, in.Header)
	ctx, span := tr.Start(ctx, operationProcess+" "+in.Subject, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String(systemNATS),
			semconv.MessagingDestinationName(in.Subject),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName(operationProcess),
			semconv.MessagingMessageID(in.TaskID),
			semconv.MessagingConsumerGroupName(in.Consumer),
			semconv.MessagingMessageBodySize(in.BodySize),
			AttrTaskType.String(in.Type),
			AttrDelivery.Int(in.Delivered),
		)
	}
	return ctx, span
}

// StartAttempt starts the client span of one backend call.
func StartAttempt(ctx context.Context, tr trace.Tracer, backend string, attempt int, breaker string) (context.Context, trace.Span) {
	ctx, span := tr.Start(ctx, "call "+backend, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(AttrBackend.String(backend), AttrAttempt.Int(attempt))
		if breaker != "" {
			span.SetAttributes(AttrBreaker.String(breaker))
		}
	}
	return ctx, span
}

// EndAttempt ends an attempt span with its outcome: the error class
// (transient, permanent, invalid) and the backend's status when known.
func EndAttempt(span trace.Span, err error, status int, class string) {
	if span.IsRecording() {
		if status != 0 {
			span.SetAttributes(AttrHTTPStatus.Int(status))
		}
		if err != nil {
			span.SetAttributes(AttrErrorClass.String(class))
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// StartInternal starts an internal span (cache lookup).
func StartInternal(ctx context.Context, tr trace.Tracer, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}

// StartReplay starts the span of replaying a dead-lettered task: a new
// trace linked to the failed task's (from the DLQ copy's headers), whose
// context goes into the republished task's header out.
func StartReplay(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, failed, out nats.Header, subject string, seq uint64) (context.Context, trace.Span) {
	link := trace.LinkFromContext(Extract(context.Background(), p, failed))
	ctx, span := tr.Start(ctx, "dlq replay "+subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithNewRoot(), trace.WithLinks(link))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String(systemNATS),
			semconv.MessagingDestinationName(subject),
			semconv.MessagingOperationTypeSend,
			attribute.String("breakwater.dlq.seq", strconv.FormatUint(seq, 10)),
		)
	}
	// The replayed task carries the replay's context, not the failed one.
	for _, k := range p.Fields() {
		delete(out, k)
	}
	Inject(ctx, p, out)
	return ctx, span
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
