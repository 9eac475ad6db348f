package resilience_test

import (
	"context"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// BenchmarkPolicyStack is the cost of a backend's full policy stack
// (timeout, retry, breaker, max_concurrency, rate_limit) on the success
// path against the bare route on the same built-in echo, per route call,
// for issue 13's "full stack ≥ 0.9× the bare route" (the task-level figure
// is BenchmarkEcho/impl=worker-policies in pipeline/). The rate limit is
// set far above any rate reached here: BenchmarkPolicyOverhead's 1M/s is
// below what a tight loop calls at, so its full case measures waits for
// permits, not the stack. Calls run from 64 goroutines, as the worker's
// pool makes them.
//
//	go test -run '^$' -bench PolicyStack -benchmem -count 6 ./resilience/
func BenchmarkPolicyStack(b *testing.B) {
	echo, _ := handlers.Builtin("echo")
	full := resilience.PolicyOptions{
		Timeout:        time.Second,
		Retry:          &resilience.RetryOptions{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second, Jitter: 0.2},
		Breaker:        &resilience.BreakerOptions{FailureThreshold: 3, Delay: 10 * time.Second, SuccessThreshold: 1},
		MaxConcurrency: 1000,
		RateN:          1_000_000_000, RatePer: time.Second,
	}
	for _, c := range []struct {
		name  string
		route *resilience.Route
	}{
		// The bare route: a built-in backend with no policy but the
		// default attempt timeout, as the worker's echo route has.
		{"impl=bare", &resilience.Route{Name: "echo", Targets: []resilience.Target{{Name: "builtin:echo", Backend: echo}}}},
		{"impl=full-stack", &resilience.Route{Name: "echo", Targets: []resilience.Target{resilience.NewTarget("builtin:echo", echo, full)}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				req := &handlers.Request{Payload: []byte("x")}
				for pb.Next() {
					if _, err := c.route.Do(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
