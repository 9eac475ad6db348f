// Package tracing is Breakwater's observability plumbing, built on
// OpenTelemetry and holding no global state (otel.SetTracerProvider and
// otel.SetMeterProvider are never called; callers pass what they need):
//
//   - Traces: SetupTracing reads the standard OTEL_* environment (off unless
//     OTEL_TRACES_EXPORTER is otlp or console) and returns the tracer and
//     the W3C propagator. HeaderCarrier, Inject and Extract carry the trace
//     context in NATS headers with lowercase keys (traceparent), and the
//     Start* helpers make spans after the OpenTelemetry messaging
//     conventions: publish (producer) → process (consumer, continuing the
//     publisher's trace) → call attempts (client), cache lookup, result and
//     DLQ publish; a DLQ replay is a new trace linked to the failed one.
//     With tracing off the helpers return at once without allocating.
//   - Metrics: NewMetrics is a meter provider served in Prometheus format;
//     ObserveWorker and NewInstruments register the worker's instruments
//     (names breakwater.*, Prometheus breakwater_*; low-cardinality
//     attributes only, never task ids); Metrics.Prime exports them from
//     the first scrape, at zero, with the label values known at start.
//   - Logs: NewLogHandler adds trace_id and span_id to log/slog records
//     logged with a context that carries a span.
package tracing
