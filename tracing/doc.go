// Package tracing holds Breakwater's observability plumbing: an
// OpenTelemetry meter provider exported in Prometheus format on the
// worker's /metrics, and the worker's instruments. Nothing here is global:
// each Metrics owns its registry and provider.
package tracing
