package resilience_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// BenchmarkRecovery measures, per iteration, the time from a dead HTTP
// backend coming back to the first task served by it again, with tasks
// arriving every millisecond and a breaker delay of 500ms. The target is
// at most the breaker delay plus one probe.
//
//	go test -run '^$' -bench Recovery -benchtime 5x ./resilience/
func BenchmarkRecovery(b *testing.B) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.Copy(w, r.Body)
	}))
	defer srv.Close()
	h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "svc", URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	const delay = 500 * time.Millisecond
	var worst time.Duration
	var total time.Duration
	for b.Loop() {
		r := &resilience.Route{Targets: []resilience.Target{resilience.NewTarget("svc", h, resilience.PolicyOptions{
			Timeout: time.Second, Breaker: &resilience.BreakerOptions{FailureThreshold: 3, Delay: delay, SuccessThreshold: 1}})}}
		down.Store(true)
		for range 3 { // open the breaker
			_, _ = r.Do(context.Background(), &handlers.Request{})
		}
		if open, _ := r.Targets[0].Open(); !open {
			b.Fatal("breaker did not open")
		}
		down.Store(false)
		back := time.Now()
		for {
			_, err := r.Do(context.Background(), &handlers.Request{Payload: []byte("x")})
			if err == nil {
				break
			}
			if !errors.Is(err, handlers.ErrTransient) {
				b.Fatal(err)
			}
			time.Sleep(time.Millisecond) // the next task arrives
		}
		took := time.Since(back)
		total += took
		worst = max(worst, took)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "recovery-ns")
	b.ReportMetric(float64(worst.Nanoseconds()), "worst-ns")
}
