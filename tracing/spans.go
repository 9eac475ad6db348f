package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Attributes beside the messaging conventions (semconv v1.43). The
// conventions have no generic delivery count, stream or sequence: those
// follow the per-system pattern of messaging.servicebus.message.delivery_count
// under messaging.nats.
const (
	AttrTaskType   = attribute.Key("breakwater.task.type")
	AttrDelivery   = attribute.Key("messaging.nats.message.delivery_count") // from 1
	AttrStream     = attribute.Key("messaging.nats.stream.name")
	AttrSequence   = attribute.Key("messaging.nats.message.sequence") // stream sequence
	AttrBackend    = attribute.Key("breakwater.backend")
	AttrAttempt    = attribute.Key("breakwater.attempt") // from 1
	AttrBreaker    = attribute.Key("breakwater.breaker.state")
	AttrErrorClass = attribute.Key("breakwater.error.class")
	AttrCacheHit   = attribute.Key("breakwater.cache.hit")
	AttrDLQReason  = attribute.Key("breakwater.dlq.reason")
	AttrDLQSeq     = attribute.Key("breakwater.dlq.seq")
	AttrHTTPStatus = attribute.Key("http.response.status_code")
)

const (
	systemNATS       = "nats"
	operationPublish = "publish" // messaging.operation.name; its type is "send"
	operationProcess = "process"
)

// off reports whether tr is the no-op tracer of a Tracing that is off, so
// that the helpers can return before building options and attributes.
func off(tr trace.Tracer) bool {
	_, ok := tr.(noop.Tracer)
	return ok
}

// noopSpan is returned by the helpers when tracing is off. A package-level
// value, never written: converting noop.Span to trace.Span on each call
// would allocate.
var noopSpan trace.Span = noop.Span{}

// StartPublish starts the producer span of a message published to subject
// and writes its context into h, so that the consumer continues the trace.
// The span is named "publish <subject>": give a subject without task ids
// (StartResultPublish names result subjects by their template). With
// tracing off it returns ctx, a no-op span, and leaves h alone.
func StartPublish(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, subject, msgID string, h nats.Header, bodySize int) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	return startProducer(ctx, tr, p, operationPublish+" "+subject, subject, msgID, h, bodySize)
}

func startProducer(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, name, subject, msgID string, h nats.Header, bodySize int, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx, span := tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer))
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
		span.SetAttributes(attrs...)
	}
	// Injected even when not sampled: the flags tell the consumer so, and
	// it keeps the parent's decision.
	if h != nil {
		Inject(ctx, p, h)
	}
	return ctx, span
}

// StartResultPublish starts the producer span of a task's result published
// to subject (results.<type>.<id>), named by the subject's template
// ("publish results.<type>.{task_id}") so that span names stay few; the
// full subject is the destination attribute. Its context goes into h.
func StartResultPublish(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, subject, taskID string, h nats.Header, bodySize int) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	template := subject
	if base, ok := strings.CutSuffix(subject, "."+taskID); ok && taskID != "" {
		template = base + ".{task_id}"
	}
	return startProducer(ctx, tr, p, operationPublish+" "+template, subject, taskID, h, bodySize,
		semconv.MessagingDestinationTemplate(template))
}

// StartDLQPublish starts the producer span of dead-lettering a task to
// subject (dlq.<type>) for reason; its context goes into h.
func StartDLQPublish(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, subject, taskID, reason string, h nats.Header, bodySize int) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	return startProducer(ctx, tr, p, operationPublish+" "+subject, subject, taskID, h, bodySize, AttrDLQReason.String(reason))
}

// ProcessInfo describes one delivery of a task for its process span.
type ProcessInfo struct {
	// Subject is the task's subject (tasks.<type>); Type its task type.
	Subject, Type string
	// TaskID is the task's id, the span's messaging.message.id.
	TaskID string
	// Stream and Consumer are the stream and durable consumer delivering.
	Stream, Consumer string
	// Seq is the task's stream sequence.
	Seq uint64
	// Delivered counts deliveries, from 1.
	Delivered int
	// BodySize is the payload's length in bytes.
	BodySize int
	// Header is the task's; its traceparent, when there is one, is the
	// parent of the span.
	Header nats.Header
}

// StartProcess starts the consumer span of one delivery of a task, a child
// of the publisher's span when the task carries a trace context: one trace
// from publish to result. With tracing off it returns ctx and a no-op span
// at once, without reading the headers.
func StartProcess(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, in ProcessInfo) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	if in.Header != nil {
		ctx = Extract(ctx, p, in.Header)
	}
	ctx, span := tr.Start(ctx, operationProcess+" "+in.Subject, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		// One SetAttributes call: the span grows its attribute slice once.
		as := append(make([]attribute.KeyValue, 0, 11),
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
		if in.Stream != "" {
			as = append(as, AttrStream.String(in.Stream))
		}
		if in.Seq != 0 {
			as = append(as, AttrSequence.Int64(int64(in.Seq)))
		}
		span.SetAttributes(as...)
	}
	return ctx, span
}

// StartAttempt starts the client span of one backend call (attempt from
// 1), with the backend's breaker state when known. End it with EndAttempt.
func StartAttempt(ctx context.Context, tr trace.Tracer, backend string, attempt int, breaker string) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	ctx, span := tr.Start(ctx, "call "+backend, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(AttrBackend.String(backend), AttrAttempt.Int(attempt))
		if breaker != "" {
			span.SetAttributes(AttrBreaker.String(breaker))
		}
	}
	return ctx, span
}

// EndAttempt ends an attempt span with its outcome: the backend's status
// when known (HTTP status, or a service error code) and, on failure, the
// error class (transient, permanent, invalid) and an error status.
func EndAttempt(span trace.Span, err error, status int, class string) {
	if span.IsRecording() {
		if status != 0 {
			span.SetAttributes(AttrHTTPStatus.Int(status))
		}
		if err != nil {
			if class != "" {
				span.SetAttributes(AttrErrorClass.String(class))
			}
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// StartCache starts the internal span of a result cache lookup for a task
// of type typ. End it with EndCache.
func StartCache(ctx context.Context, tr trace.Tracer, typ string) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	ctx, span := tr.Start(ctx, "cache lookup", trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		span.SetAttributes(AttrTaskType.String(typ))
	}
	return ctx, span
}

// EndCache ends a cache span with whether the lookup hit.
func EndCache(span trace.Span, hit bool, err error) {
	if span.IsRecording() {
		span.SetAttributes(AttrCacheHit.Bool(hit))
	}
	End(span, err)
}

// StartInternal starts an internal span.
func StartInternal(ctx context.Context, tr trace.Tracer, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	return tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}

// StartReplay starts the producer span of republishing a dead-lettered
// task to subject. It is the root of a new trace LINKED to the failed
// task's (read from failed, the DLQ entry's headers), not its child: a
// replay hours later is its own unit of work. The replay's context
// replaces any trace context in out, the republished task's headers.
func StartReplay(ctx context.Context, tr trace.Tracer, p propagation.TextMapPropagator, failed, out nats.Header, subject string, seq uint64) (context.Context, trace.Span) {
	if off(tr) {
		return ctx, noopSpan
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithNewRoot()}
	if link := trace.LinkFromContext(Extract(context.Background(), p, failed)); link.SpanContext.IsValid() {
		opts = append(opts, trace.WithLinks(link))
	}
	ctx, span := tr.Start(ctx, "dlq replay "+subject, opts...)
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String(systemNATS),
			semconv.MessagingDestinationName(subject),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName(operationPublish),
			AttrDLQSeq.Int64(int64(seq)),
		)
	}
	if out != nil {
		// The replayed task carries the replay's context, not the failed one.
		for _, k := range p.Fields() {
			HeaderCarrier(out).Set(k, "")
			delete(out, k)
		}
		Inject(ctx, p, out)
	}
	return ctx, span
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
