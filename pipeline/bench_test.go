package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
)

// The benchmarks below measure tasks/s from a TASKS stream holding b.N
// tasks of 128 bytes to b.N stored results, for the worker and for the
// anchors of BENCHMARKS.md measured on the same server in the same run:
//
//	go test -run '^$' -bench . -benchtime 20000x -count 6 ./pipeline/ | tee bench.txt
//	benchstat -col /impl bench.txt

type benchEnv struct {
	*env
	results atomic.Int64
	done    chan struct{}
	n       int64
}

func newBenchEnv(b *testing.B, syncAlways bool) *benchEnv {
	b.Helper()
	base := newEnvSync(b, bus.ConsumerOptions{}, syncAlways)
	nc, js := base.nc, base.js
	e := &benchEnv{env: base, done: make(chan struct{}), n: int64(b.N)}
	// Count stored results as they are published.
	sub, err := nc.Subscribe("results.>", func(*nats.Msg) {
		if e.results.Add(1) == e.n {
			close(e.done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = sub.SetPendingLimits(-1, -1)
	// Fill TASKS before the clock starts.
	payload := bytes.Repeat([]byte("x"), 128)
	for i := range b.N {
		if _, err := js.PublishAsync("tasks.echo", payload, jetstream.WithMsgID(fmt.Sprintf("b%d", i))); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 || i == b.N-1 {
			// Bounded window: with fsync on every write the server acks
			// slower than we can publish.
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("filling TASKS timed out")
			}
		}
	}
	return e
}

func (e *benchEnv) wait(b *testing.B) {
	select {
	case <-e.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d results", e.results.Load(), e.n)
	}
}

func runWorker(b *testing.B, e *benchEnv, route *resilience.Route) {
	runWorkerWith(b, e, pipeline.Options{}, route)
}

func runWorkerWith(b *testing.B, e *benchEnv, o pipeline.Options, route *resilience.Route) {
	w := e.newWorker(b, o, route)
	b.ResetTimer()
	cancel, done := goRun(w)
	e.wait(b)
	b.StopTimer()
	cancel()
	<-done
}

// runMinimal is the ceiling: consume, publish the payload as the result,
// ack once the result's publish is acknowledged; nothing else.
func runMinimal(b *testing.B, e *benchEnv) {
	type pending struct {
		msg jetstream.Msg
		fut jetstream.PubAckFuture
	}
	acks := make(chan pending, 1024) // bounds unacknowledged results below the client's async limit
	var wg sync.WaitGroup
	wg.Go(func() {
		for p := range acks {
			select {
			case <-p.fut.Ok():
				_ = p.msg.Ack()
			case err := <-p.fut.Err():
				b.Error(err)
			}
		}
	})
	b.ResetTimer()
	cc, err := e.cons.Consume(func(msg jetstream.Msg) {
		md, _ := msg.Metadata()
		fut, err := e.js.PublishAsync(fmt.Sprintf("results.echo.%d", md.Sequence.Stream), msg.Data())
		if err != nil {
			b.Error(err)
			return
		}
		acks <- pending{msg, fut}
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		b.Fatal(err)
	}
	e.wait(b)
	b.StopTimer()
	cc.Stop()
	close(acks)
	wg.Wait()
}

func BenchmarkEcho(b *testing.B) {
	for _, fsync := range []struct {
		name   string
		always bool
	}{{"interval", false}, {"always", true}} {
		b.Run("fsync="+fsync.name+"/impl=minimal", func(b *testing.B) {
			runMinimal(b, newBenchEnv(b, fsync.always))
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
		b.Run("fsync="+fsync.name+"/impl=worker", func(b *testing.B) {
			e := newBenchEnv(b, fsync.always)
			echo, _ := handlers.Builtin("echo")
			runWorker(b, e, &resilience.Route{Name: "echo", Targets: []resilience.Target{{Name: "builtin:echo", Backend: echo}}})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
		// The same route with every task a cache hit (identical payloads,
		// the result cached beforehand): no backend call at all.
		b.Run("fsync="+fsync.name+"/impl=worker-cache-hit", func(b *testing.B) {
			e := newBenchEnv(b, fsync.always)
			var calls atomic.Int64
			c, err := cache.New(context.Background(), cache.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			pol := cache.Policy{TTL: time.Hour}
			payload := bytes.Repeat([]byte("x"), 128)
			c.Set(cache.Key("echo", payload, nil, nil), pol, payload, "builtin:echo")
			runWorkerWith(b, e, pipeline.Options{Cache: c, CachePolicies: map[string]cache.Policy{"echo": pol}}, echoRoute("echo", &calls))
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			if calls.Load() != 0 {
				b.Fatalf("%d backend calls, want 0", calls.Load())
			}
		})
		// The same route with every policy of a backend: the cost of the
		// full stack on the success path.
		b.Run("fsync="+fsync.name+"/impl=worker-policies", func(b *testing.B) {
			e := newBenchEnv(b, fsync.always)
			echo, _ := handlers.Builtin("echo")
			runWorker(b, e, &resilience.Route{Name: "echo", Targets: []resilience.Target{resilience.NewTarget("builtin:echo", echo, resilience.PolicyOptions{
				Timeout:        time.Second,
				Retry:          &resilience.RetryOptions{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second, Jitter: 0.2},
				Breaker:        &resilience.BreakerOptions{FailureThreshold: 3, Delay: 10 * time.Second, SuccessThreshold: 1},
				MaxConcurrency: 1000, RateN: 1_000_000, RatePer: time.Second,
			})}})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkHTTP compares the worker on an HTTP route with its anchor: the
// same number of POSTs made directly by 64 goroutines to the same server.
func BenchmarkHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	b.Run("impl=direct", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		payload := bytes.Repeat([]byte("x"), 128)
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for range 64 {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					resp, err := client.Post(srv.URL, "application/octet-stream", bytes.NewReader(payload))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	for _, fsync := range []struct {
		name   string
		always bool
	}{{"interval", false}, {"always", true}} {
		b.Run("fsync="+fsync.name+"/impl=worker", func(b *testing.B) {
			e := newBenchEnv(b, fsync.always)
			h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "svc", URL: srv.URL})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = h.Close() }()
			runWorker(b, e, &resilience.Route{Name: "echo", Targets: []resilience.Target{{Name: "svc", Backend: h}}})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkIdleLatency measures one task at a time, publish → stored
// result seen by a subscriber, on an otherwise idle worker; ns/op is the
// mean and p50-ns the median.
func BenchmarkIdleLatency(b *testing.B) {
	for _, fsync := range []struct {
		name   string
		always bool
	}{{"interval", false}, {"always", true}} {
		b.Run("fsync="+fsync.name, func(b *testing.B) {
			e := newEnvSync(b, bus.ConsumerOptions{}, fsync.always)
			nc, js, ctx := e.nc, e.js, context.Background()
			echo, _ := handlers.Builtin("echo")
			cancel, done := goRun(e.newWorker(b, pipeline.Options{},
				&resilience.Route{Name: "echo", Targets: []resilience.Target{{Name: "builtin:echo", Backend: echo}}}))
			defer func() { cancel(); <-done }()

			sub, err := nc.SubscribeSync("results.echo.>")
			if err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			payload := bytes.Repeat([]byte("x"), 128)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				msg := nats.NewMsg("tasks.echo")
				msg.Data = payload
				msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("l%d", i))
				if _, err := js.PublishMsg(ctx, msg); err != nil {
					b.Fatal(err)
				}
				if _, err := sub.NextMsg(10 * time.Second); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}
