package resilience_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// counting returns targets that answer after their delay and a function
// reporting how many tasks each served.
func counting(delays map[string]time.Duration, names ...string) ([]resilience.Target, func() map[string]int) {
	var mu sync.Mutex
	served := map[string]int{}
	var targets []resilience.Target
	for _, name := range names {
		d := delays[name]
		b := handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
			if d > 0 {
				time.Sleep(d)
			}
			mu.Lock()
			served[name]++
			mu.Unlock()
			return &handlers.Response{}, nil
		})
		targets = append(targets, resilience.NewTarget(name, b, resilience.PolicyOptions{Timeout: time.Second}))
	}
	return targets, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range served {
			out[k] = v
		}
		return out
	}
}

func TestStrategies(t *testing.T) {
	tests := []struct {
		strategy string
		weights  map[string]int
		delays   map[string]time.Duration
		calls    int
		check    func(t *testing.T, got map[string]int)
	}{
		{strategy: "failover", calls: 100, check: func(t *testing.T, got map[string]int) {
			if got["a"] != 100 {
				t.Errorf("got %v, want every task on a", got)
			}
		}},
		{strategy: "round_robin", calls: 300, check: func(t *testing.T, got map[string]int) {
			for _, n := range []string{"a", "b", "c"} {
				if got[n] != 100 {
					t.Errorf("got %v, want 100 each", got)
				}
			}
		}},
		{strategy: "weighted", weights: map[string]int{"a": 3, "b": 1, "c": 0}, calls: 4000, check: func(t *testing.T, got map[string]int) {
			// Binomial(4000, 0.75): sd ≈ 27; 6 sd of margin.
			if got["a"] < 2840 || got["a"] > 3160 || got["c"] != 0 {
				t.Errorf("got %v, want a ≈ 3000, b ≈ 1000, c 0", got)
			}
		}},
		{strategy: "least_latency", delays: map[string]time.Duration{"a": 50 * time.Millisecond, "b": time.Millisecond, "c": 20 * time.Millisecond},
			calls: 600, check: func(t *testing.T, got map[string]int) {
				// The fastest wins every pair it is in (2/3 of draws); the
				// slowest only when paired with itself, which cannot happen.
				if got["b"] < 350 || got["a"] > 5 {
					t.Errorf("got %v, want most on b and (almost) none on a", got)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, err := resilience.NewStrategy(tt.strategy, tt.weights)
				if err != nil {
					t.Fatal(err)
				}
				targets, served := counting(tt.delays, "a", "b", "c")
				r := &resilience.Route{Targets: targets, Strategy: s}
				for range tt.calls {
					if err := do(r); err != nil {
						t.Fatal(err)
					}
				}
				tt.check(t, served())
			})
		})
	}
	if _, err := resilience.NewStrategy("fastest", nil); err == nil {
		t.Error("unknown strategy accepted")
	}
}
