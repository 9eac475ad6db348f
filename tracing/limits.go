package tracing

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/metric"
)

// BackendLimits are a backend's current bounds, read at each collection.
type BackendLimits struct {
	// Concurrency bounds its calls in flight: the adaptive limit or the
	// fixed max_concurrency; 0 when unbounded (not exported then).
	Concurrency int
	// RetryBudget is how many retries its budget allows now; negative
	// when it has no retry budget (not exported then).
	RetryBudget float64
}

// observeLimits registers the gauges of the backends' bounds:
// breakwater_backend_concurrency_limit{backend} and
// breakwater_backend_retry_budget_remaining{backend}. limits is called
// once per collection.
func observeLimits(m metric.Meter, limits func() map[string]BackendLimits) error {
	conc, err := m.Int64ObservableGauge("breakwater.backend.concurrency.limit", metric.WithUnit("{call}"),
		metric.WithDescription("Bound on a backend's calls in flight: the adaptive limit now, or max_concurrency."))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	budget, err := m.Float64ObservableGauge("breakwater.backend.retry_budget.remaining", metric.WithUnit("{retry}"),
		metric.WithDescription("Retries a backend's retry budget allows now (earned as a share of its calls)."))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
		for b, l := range limits() {
			attrs := metric.WithAttributes(backendKey.String(b))
			if l.Concurrency > 0 {
				ob.ObserveInt64(conc, int64(l.Concurrency), attrs)
			}
			if l.RetryBudget >= 0 {
				ob.ObserveFloat64(budget, l.RetryBudget, attrs)
			}
		}
		return nil
	}, conc, budget)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
