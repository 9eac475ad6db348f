package resilience_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// slowFor answers after d, or fails when its call is cancelled first.
func slowFor(d time.Duration, body string, cancelled *atomic.Int64) handlers.Backend {
	return handlers.BackendFunc(func(ctx context.Context, _ *handlers.Request) (*handlers.Response, error) {
		select {
		case <-time.After(d):
			return &handlers.Response{Body: []byte(body)}, nil
		case <-ctx.Done():
			cancelled.Add(1)
			return nil, handlers.Transient(ctx.Err())
		}
	})
}

func TestHedging(t *testing.T) {
	tests := []struct {
		name         string
		first, other time.Duration
		wantBackend  string
		wantTook     time.Duration
		wantCalls    int
	}{
		// The first answers before the hedge: no second request.
		{"fast first", 50 * time.Millisecond, 10 * time.Millisecond, "first", 50 * time.Millisecond, 1},
		// The first is slow: the hedge at 100ms answers at 120ms and wins;
		// the first is cancelled.
		{"slow first", 5 * time.Second, 20 * time.Millisecond, "second", 120 * time.Millisecond, 2},
		// Both slow: the first still answers first and is kept.
		{"first still wins", 300 * time.Millisecond, time.Second, "first", 300 * time.Millisecond, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var cancelled atomic.Int64
				r := &resilience.Route{HedgeAfter: 100 * time.Millisecond, Targets: []resilience.Target{
					resilience.NewTarget("first", slowFor(tt.first, "1", &cancelled), resilience.PolicyOptions{Timeout: 10 * time.Second}),
					resilience.NewTarget("second", slowFor(tt.other, "2", &cancelled), resilience.PolicyOptions{Timeout: 10 * time.Second}),
				}}
				start := time.Now()
				ans, err := r.Do(context.Background(), &handlers.Request{})
				if err != nil {
					t.Fatal(err)
				}
				if ans.Backend != tt.wantBackend {
					t.Errorf("backend: got %s, want %s", ans.Backend, tt.wantBackend)
				}
				if took := time.Since(start); took != tt.wantTook {
					t.Errorf("took %v, want %v", took, tt.wantTook)
				}
				if got := len(ans.Attempts); got != tt.wantCalls {
					t.Errorf("calls: got %d, want %d", got, tt.wantCalls)
				}
				if tt.wantCalls == 2 && cancelled.Load() != 1 {
					t.Errorf("the losing request was not cancelled")
				}
			})
		})
	}
}

// A first backend failing before the hedge delay fails over at once.
func TestHedgingFailoverBeforeDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cancelled atomic.Int64
		r := &resilience.Route{HedgeAfter: time.Second, Targets: []resilience.Target{
			resilience.NewTarget("first", handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
				return nil, errDown
			}), resilience.PolicyOptions{Timeout: time.Second}),
			resilience.NewTarget("second", slowFor(10*time.Millisecond, "2", &cancelled), resilience.PolicyOptions{Timeout: time.Second}),
		}}
		start := time.Now()
		ans, err := r.Do(context.Background(), &handlers.Request{})
		if err != nil || ans.Backend != "second" {
			t.Fatalf("got %v, %v; want an answer from second", ans, err)
		}
		if took := time.Since(start); took != 10*time.Millisecond {
			t.Errorf("took %v, want 10ms (no wait for the hedge delay)", took)
		}
	})
}
