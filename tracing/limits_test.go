package tracing_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/breakwater/breakwater/tracing"
)

func TestLimitsScraped(t *testing.T) {
	m, err := tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	var mu sync.Mutex
	limits := map[string]tracing.BackendLimits{
		"model": {Concurrency: 17, RetryBudget: 2.5},
		"fixed": {Concurrency: 8, RetryBudget: -1},
		"free":  {RetryBudget: -1},
	}
	if _, err := tracing.NewInstruments(m.Meter(), tracing.InstrumentsOptions{Limits: func() map[string]tracing.BackendLimits {
		mu.Lock()
		defer mu.Unlock()
		return limits
	}}); err != nil {
		t.Fatal(err)
	}
	scrape := scraper(t, m)
	body := scrape()
	wantLines(t, body,
		`breakwater_backend_concurrency_limit{backend="model"} 17`,
		`breakwater_backend_concurrency_limit{backend="fixed"} 8`,
		`breakwater_backend_retry_budget_remaining{backend="model"} 2.5`,
	)
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, `backend="free"`) || (strings.Contains(l, "retry_budget") && strings.Contains(l, `backend="fixed"`)) {
			t.Errorf("a bound that is not set is exported: %q", l)
		}
	}
	mu.Lock()
	limits = map[string]tracing.BackendLimits{"model": {Concurrency: 5, RetryBudget: 0}}
	mu.Unlock()
	wantLines(t, scrape(),
		`breakwater_backend_concurrency_limit{backend="model"} 5`,
		`breakwater_backend_retry_budget_remaining{backend="model"} 0`,
	)
}
