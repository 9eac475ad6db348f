package tracing

import "go.opentelemetry.io/otel/attribute"

// outcomeKey is the attribute of a task's outcome.
const outcomeKey = attribute.Key("outcome")
