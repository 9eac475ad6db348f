package pipeline_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
)

func newCache(t *testing.T, kv jetstream.KeyValue) *cache.Cache {
	t.Helper()
	c, err := cache.New(context.Background(), cache.Options{KV: kv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestCacheHitMissAndNoCache(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	c := newCache(t, nil)
	pol := map[string]cache.Policy{"work": {TTL: time.Minute, KeyHeaders: []string{"X-Model"}}}
	e.start(t, pipeline.Options{Cache: c, CachePolicies: pol}, echoRoute("work", &calls), echoRoute("plain", &calls))

	tests := []struct {
		id, data    string
		kv          []string
		wantCache   string
		wantBackend string
		wantCalls   int64
	}{
		{"c1", "same", nil, "miss", "echoer", 1},
		{"c2", "same", nil, "hit", "cache", 1},
		{"c3", "same", []string{"X-Model", "other"}, "miss", "echoer", 2},          // key header counts
		{"c4", "same", []string{"Cache-Control", "no-cache"}, "miss", "echoer", 3}, // read skipped
		{"c5", "different", nil, "miss", "echoer", 4},                              // payload counts
		{"c6", "different", []string{"X-Unrelated", "1"}, "hit", "cache", 4},       // other headers do not
	}
	for _, tc := range tests {
		e.publish(t, "work", tc.id, tc.data, tc.kv...)
		m := e.waitMsg(t, "RESULTS", "results.work."+tc.id)
		if got := m.Header.Get("Task-Cache"); got != tc.wantCache {
			t.Errorf("%s: Task-Cache %q, want %q", tc.id, got, tc.wantCache)
		}
		if got := m.Header.Get("Task-Backend"); got != tc.wantBackend {
			t.Errorf("%s: Task-Backend %q, want %q", tc.id, got, tc.wantBackend)
		}
		if string(m.Data) != tc.data {
			t.Errorf("%s: body %q, want %q", tc.id, m.Data, tc.data)
		}
		if got := calls.Load(); got != tc.wantCalls {
			t.Errorf("%s: %d backend calls so far, want %d", tc.id, got, tc.wantCalls)
		}
	}
	// A route without a cache policy always calls.
	e.publish(t, "plain", "p1", "same")
	e.publish(t, "plain", "p2", "same")
	testkit.Eventually(t, 15*time.Second, "uncached route called each time", func() (bool, string) { return calls.Load() == 6, "" })
}

// Errors are not cached: the next identical task calls again.
func TestCacheKeepsNoErrors(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{{Name: "picky",
		Backend: handlers.BackendFunc(func(_ context.Context, r *handlers.Request) (*handlers.Response, error) {
			if calls.Add(1) == 1 {
				return nil, handlers.Permanent(fmt.Errorf("400"))
			}
			return &handlers.Response{Body: r.Payload}, nil
		})}}}
	e.start(t, pipeline.Options{Cache: newCache(t, nil), CachePolicies: map[string]cache.Policy{"work": {TTL: time.Minute}}}, route)
	e.publish(t, "work", "e1", "x")
	e.waitMsg(t, "DLQ", "dlq.work")
	e.publish(t, "work", "e2", "x")
	if m := e.waitMsg(t, "RESULTS", "results.work.e2"); m.Header.Get("Task-Cache") != "miss" || calls.Load() != 2 {
		t.Fatalf("after an error: Task-Cache %q, %d calls; want miss, 2", m.Header.Get("Task-Cache"), calls.Load())
	}
}

// 50 identical tasks at once: one backend call, 50 results.
func TestIdenticalTasksOneCall(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	release := make(chan struct{})
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{{Name: "slow",
		Backend: handlers.BackendFunc(func(ctx context.Context, r *handlers.Request) (*handlers.Response, error) {
			calls.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &handlers.Response{Body: r.Payload}, nil
		})}}}
	w := e.start(t, pipeline.Options{Concurrency: 64, Cache: newCache(t, nil),
		CachePolicies: map[string]cache.Policy{"work": {TTL: time.Minute}}}, route)
	const n = 50
	for i := range n {
		e.publish(t, "work", fmt.Sprintf("s%d", i), "identical")
	}
	// All 50 are in the worker: one in the backend, 49 waiting for it.
	testkit.Eventually(t, 15*time.Second, "every task in flight", func() (bool, string) { return w.Stats().InFlight == n, "" })
	close(release)
	testkit.Eventually(t, 15*time.Second, "50 results", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	if got := calls.Load(); got != 1 {
		t.Fatalf("backend calls %d, want 1", got)
	}
}

// With shared: true, a result computed by one worker is a hit on another.
func TestSharedCacheAcrossWorkers(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	kv, err := cache.EnsureBucket(context.Background(), e.js, e.topo, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pol := map[string]cache.Policy{"work": {TTL: time.Minute, Shared: true}}
	var calls atomic.Int64
	first := e.newWorker(t, pipeline.Options{Cache: newCache(t, kv), CachePolicies: pol}, echoRoute("work", &calls))
	cancel, done := goRun(first)
	e.publish(t, "work", "w1", "shared")
	e.waitMsg(t, "RESULTS", "results.work.w1")
	// The L2 write is asynchronous: wait until the bucket has it.
	testkit.Eventually(t, 15*time.Second, "the result in the shared bucket", func() (bool, string) {
		st, err := kv.Status(context.Background())
		return err == nil && st.Values() == 1, ""
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Another worker, its own L1 empty.
	e.start(t, pipeline.Options{Cache: newCache(t, kv), CachePolicies: pol}, echoRoute("work", &calls))
	e.publish(t, "work", "w2", "shared")
	m := e.waitMsg(t, "RESULTS", "results.work.w2")
	if m.Header.Get("Task-Cache") != "hit" || calls.Load() != 1 {
		t.Fatalf("second worker: Task-Cache %q, %d calls; want hit, 1", m.Header.Get("Task-Cache"), calls.Load())
	}
}
