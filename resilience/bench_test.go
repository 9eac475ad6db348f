package resilience_test

import (
	"context"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// BenchmarkPolicyOverhead measures a route call on the success path: the
// bare backend call as anchor, a target with its timeout only, and the
// full stack (retry, breaker, rate limiter, bulkhead, timeout).
//
//	go test -run '^$' -bench PolicyOverhead -benchmem -count 6 ./resilience/
func BenchmarkPolicyOverhead(b *testing.B) {
	echo, _ := handlers.Builtin("echo")
	req := &handlers.Request{Payload: []byte("x")}
	full := resilience.PolicyOptions{
		Timeout:        time.Second,
		Retry:          &resilience.RetryOptions{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second, Jitter: 0.2},
		Breaker:        &resilience.BreakerOptions{FailureThreshold: 3, Delay: 10 * time.Second, SuccessThreshold: 1},
		MaxConcurrency: 1 << 20,
		RateN:          1_000_000, RatePer: time.Second,
	}
	cases := []struct {
		name string
		call func() error
	}{
		{"impl=bare", func() error { _, err := echo.Call(context.Background(), req); return err }},
		{"impl=timeout", routeCall(resilience.NewTarget("a", echo, resilience.PolicyOptions{Timeout: time.Second}), req)},
		{"impl=full", routeCall(resilience.NewTarget("a", echo, full), req)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.call(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func routeCall(t resilience.Target, req *handlers.Request) func() error {
	r := &resilience.Route{Targets: []resilience.Target{t}}
	return func() error {
		_, err := r.Do(context.Background(), req)
		return err
	}
}
