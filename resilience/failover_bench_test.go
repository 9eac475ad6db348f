package resilience_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// BenchmarkFailover measures task latency right after the primary of a
// failover route dies, with real HTTP backends on loopback: refused
// (server closed) and hang (server never answers; attempt timeout 200ms).
// 64 tasks run at once; p50-ns and p99-ns are per-task latencies.
//
//	go test -run '^$' -bench Failover -benchtime 2000x ./resilience/
func BenchmarkFailover(b *testing.B) {
	echo := func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) }
	for _, mode := range []string{"refused", "hang"} {
		b.Run("primary="+mode, func(b *testing.B) {
			fallbackSrv := httptest.NewServer(http.HandlerFunc(echo))
			defer fallbackSrv.Close()
			release := make(chan struct{})
			primarySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if mode == "hang" {
					select {
					case <-release:
					case <-r.Context().Done():
					}
					return
				}
				echo(w, r)
			}))
			primaryURL := primarySrv.URL
			if mode == "refused" {
				primarySrv.Close()
			} else {
				defer primarySrv.Close()
				defer close(release)
			}
			mk := func(name, url string) handlers.Backend {
				h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: name, URL: url})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = h.Close() })
				return h
			}
			r := &resilience.Route{Targets: []resilience.Target{
				resilience.NewTarget("primary", mk("primary", primaryURL), resilience.PolicyOptions{Timeout: 200 * time.Millisecond,
					Breaker: &resilience.BreakerOptions{FailureThreshold: 3, Delay: time.Minute, SuccessThreshold: 1}}),
				resilience.NewTarget("fallback", mk("fallback", fallbackSrv.URL), resilience.PolicyOptions{Timeout: time.Second}),
			}}
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			next := make(chan int)
			b.ResetTimer()
			for range 64 {
				wg.Go(func() {
					for i := range next {
						start := time.Now()
						if _, err := r.Do(context.Background(), &handlers.Request{Payload: []byte("x")}); err != nil {
							b.Error(err)
						}
						lat[i] = time.Since(start)
					}
				})
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
			b.ReportMetric(float64(lat[len(lat)-1]), "max-ns")
		})
	}
}
