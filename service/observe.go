package service

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/tracing"
)

// control carries out the admin plane's requests on this worker, on the
// targets of the config running now.
type control struct {
	worker  *pipeline.Worker
	targets *atomic.Pointer[map[string]resilience.Target]
}

func (c *control) PauseRoute(name string) error  { return c.worker.PauseRoute(name) }
func (c *control) ResumeRoute(name string) error { return c.worker.ResumeRoute(name) }

func (c *control) breaker(backend string) (resilience.Breaker, error) {
	t, ok := (*c.targets.Load())[backend]
	if !ok {
		return nil, fmt.Errorf("no backend %q", backend)
	}
	b := t.Breaker()
	if b == nil {
		return nil, fmt.Errorf("backend %q has no breaker configured", backend)
	}
	return b, nil
}

// TripBreaker opens the backend's breaker now (for its configured delay).
func (c *control) TripBreaker(backend string) error {
	b, err := c.breaker(backend)
	if err != nil {
		return err
	}
	b.Open()
	return nil
}

// ResetBreaker closes the backend's breaker now.
func (c *control) ResetBreaker(backend string) error {
	b, err := c.breaker(backend)
	if err != nil {
		return err
	}
	b.Close()
	return nil
}

// probes are the active health checks: health_url of HTTP backends, an
// empty request (header Breakwater-Probe: 1) to NATS ones.
func probes(cfg *config.Config, nc *nats.Conn) map[string]health.ProbeFunc {
	out := map[string]health.ProbeFunc{}
	client := &http.Client{Timeout: 10 * time.Second}
	for name, b := range cfg.Backends {
		switch {
		case b.HTTP != nil && b.HTTP.HealthURL != "":
			out[name] = health.HTTPProbe(client, b.HTTP.HealthURL)
		case b.NATS != nil:
			out[name] = health.NATSProbe(nc, b.NATS.Subject)
		}
	}
	return out
}

// observe feeds every backend call and breaker change to the health
// monitor, the traces (a client span per attempt) and the metrics, and
// lets routing skip backends whose probes fail.
func observe(m *health.Monitor, traces *tracing.Tracing, in *tracing.Instruments) Observers {
	traced := traces.Enabled()
	tr := traces.Tracer()
	return Observers{
		Hook: func(ctx context.Context, backend string, n int) (context.Context, func(resilience.Attempt)) {
			m.AttemptStarted(backend)
			var span trace.Span
			if traced {
				ctx, span = tracing.StartAttempt(ctx, tr, backend, n, "")
			}
			return ctx, func(a resilience.Attempt) {
				m.AttemptDone(backend, a.Duration, a.Err)
				// The same classes as the attempt history in the DLQ.
				class := dlq.ClassOf(a.Err)
				if span != nil {
					tracing.EndAttempt(span, a.Err, handlers.StatusOf(a.Err), string(class))
				}
				if in != nil {
					in.BackendCall(ctx, backend, string(class), a.Duration, a.Waited)
				}
			}
		},
		OnBreaker: func(backend string, _, to resilience.BreakerState) {
			m.BreakerChanged(backend, health.BreakerState(to))
		},
		OnRetry: func(backend string) {
			if in != nil {
				in.Retry(context.Background(), backend)
			}
		},
		Down: func(name string, b config.Backend) func() (bool, time.Duration) {
			if (b.HTTP == nil || b.HTTP.HealthURL == "") && b.NATS == nil {
				return nil // no probe: never down by health checks
			}
			return func() (bool, time.Duration) { return m.Down(name) }
		},
		Propagator: traces.Propagator(),
	}
}

// tracerOf is the pipeline's tracer: nil when tracing is off, so that the
// task path makes no spans at all.
func tracerOf(t *tracing.Tracing) trace.Tracer {
	if !t.Enabled() {
		return nil
	}
	return t.Tracer()
}

// settledObserver records each delivery's outcome in the metrics.
func settledObserver(in *tracing.Instruments) func(pipeline.Settled) {
	if in == nil {
		return nil
	}
	return func(s pipeline.Settled) {
		ctx := context.Background()
		if s.Took > 0 {
			in.TaskDone(ctx, s.Type, string(s.Outcome), s.Took)
		}
		if s.Outcome == pipeline.OutcomeDeadLettered {
			in.DLQEntry(ctx, string(s.Reason))
		}
	}
}
