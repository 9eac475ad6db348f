package tracing

import (
	"context"
	"net/textproto"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// natsCarrier adapts nats.Header to the propagation API. NATS headers are
// case-sensitive and nats.Header.Set canonicalises names, so the carrier
// writes keys exactly as given (traceparent stays lowercase, as other
// OpenTelemetry NATS clients read it) and reads them in any case.
type natsCarrier nats.Header

// HeaderCarrier returns a carrier over h.
func HeaderCarrier(h nats.Header) propagation.TextMapCarrier { return natsCarrier(h) }

func (c natsCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	if v := c[textproto.CanonicalMIMEHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func (c natsCarrier) Set(key, value string) {
	// Drop any other spelling first, so that one value remains.
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

func (c natsCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// Inject writes ctx's trace context into h.
func Inject(ctx context.Context, p propagation.TextMapPropagator, h nats.Header) {
	p.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the trace context of h as its remote parent.
func Extract(ctx context.Context, p propagation.TextMapPropagator, h nats.Header) context.Context {
	return p.Extract(ctx, HeaderCarrier(h))
}
