package resilience_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// recorder is a backend that answers from a script and records when it
// was called.
type recorder struct {
	mu     sync.Mutex
	calls  []time.Time
	answer func(n int) error // n counts calls from 1
}

func (r *recorder) Call(_ context.Context, req *handlers.Request) (*handlers.Response, error) {
	r.mu.Lock()
	r.calls = append(r.calls, time.Now())
	n := len(r.calls)
	r.mu.Unlock()
	if err := r.answer(n); err != nil {
		return nil, err
	}
	return &handlers.Response{Body: req.Payload}, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recorder) gaps() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(r.calls); i++ {
		out = append(out, r.calls[i].Sub(r.calls[i-1]))
	}
	return out
}

var errDown = handlers.Transient(errors.New("503"))

func do(r *resilience.Route) error {
	_, err := r.Do(context.Background(), &handlers.Request{TaskID: "t"})
	return err
}

func TestBreakerOpensAtThresholdAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		healthy := atomic.Bool{}
		b := &recorder{answer: func(int) error {
			if healthy.Load() {
				return nil
			}
			return errDown
		}}
		var transitions []string
		var mu sync.Mutex
		target := resilience.NewTarget("a", b, resilience.PolicyOptions{
			Timeout: time.Second,
			Breaker: &resilience.BreakerOptions{FailureThreshold: 3, Delay: 10 * time.Second, SuccessThreshold: 2},
			OnBreakerStateChanged: func(_ string, from, to resilience.BreakerState) {
				mu.Lock()
				transitions = append(transitions, from.String()+">"+to.String())
				mu.Unlock()
			},
		})
		r := &resilience.Route{Name: "x", Targets: []resilience.Target{target}}
		for i := range 3 {
			if err := do(r); err == nil {
				t.Fatalf("call %d succeeded", i)
			}
		}
		if open, _ := r.Targets[0].Open(); !open {
			t.Fatal("breaker not open after 3 failures")
		}
		// Open: no call reaches the backend, and the failure says when to retry.
		err := do(r)
		if got := b.count(); got != 3 {
			t.Errorf("calls while open: got %d, want 3", got)
		}
		if got := resilience.RetryAfter(err); got <= 0 || got > 10*time.Second {
			t.Errorf("RetryAfter while open: got %v, want (0, 10s]", got)
		}
		time.Sleep(10 * time.Second)
		healthy.Store(true)
		// Half-open: probes go through; closed after 2 successes.
		for i := range 2 {
			if err := do(r); err != nil {
				t.Fatalf("probe %d: %v", i, err)
			}
		}
		if r.Targets[0].Breaker().State() != resilience.BreakerClosed {
			t.Errorf("breaker state after 2 successes: %v, want closed", r.Targets[0].Breaker().State())
		}
		mu.Lock()
		defer mu.Unlock()
		want := []string{"closed>open", "open>half-open", "half-open>closed"}
		if len(transitions) != len(want) {
			t.Fatalf("transitions: got %v, want %v", transitions, want)
		}
		for i := range want {
			if transitions[i] != want[i] {
				t.Errorf("transition %d: got %s, want %s", i, transitions[i], want[i])
			}
		}
	})
}

func TestRetryBackoffAndCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &recorder{answer: func(int) error { return errDown }}
		r := &resilience.Route{Targets: []resilience.Target{resilience.NewTarget("a", b, resilience.PolicyOptions{
			Timeout: time.Second,
			Retry:   &resilience.RetryOptions{MaxAttempts: 5, Backoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond},
		})}}
		err := do(r)
		if err == nil {
			t.Fatal("got success")
		}
		want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
		got := b.gaps()
		if len(got) != len(want) {
			t.Fatalf("gaps: got %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("gap %d: got %v, want %v", i, got[i], want[i])
			}
		}
		if n := len(resilience.AttemptsOf(err)); n != 5 {
			t.Errorf("attempts recorded: got %d, want 5", n)
		}
	})
}

func TestRetryHonoursRetryAfterAndSkipsPermanent(t *testing.T) {
	tests := []struct {
		name      string
		answer    func(n int) error
		wantCalls int
		wantGap   time.Duration
		wantErr   bool
	}{
		{"retry-after", func(n int) error {
			if n == 1 {
				return &handlers.Error{Class: handlers.ErrTransient, Status: 429, RetryAfter: 3 * time.Second}
			}
			return nil
		}, 2, 3 * time.Second, false},
		{"4xx not retried", func(int) error { return handlers.Permanent(errors.New("400")) }, 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &recorder{answer: tt.answer}
				r := &resilience.Route{Targets: []resilience.Target{resilience.NewTarget("a", b, resilience.PolicyOptions{
					Timeout: time.Second,
					Retry:   &resilience.RetryOptions{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second},
				})}}
				err := do(r)
				if (err != nil) != tt.wantErr {
					t.Fatalf("err: got %v, want error %v", err, tt.wantErr)
				}
				if got := b.count(); got != tt.wantCalls {
					t.Errorf("calls: got %d, want %d", got, tt.wantCalls)
				}
				if tt.wantGap > 0 && b.gaps()[0] != tt.wantGap {
					t.Errorf("gap: got %v, want %v", b.gaps()[0], tt.wantGap)
				}
			})
		})
	}
}

func TestOpenBackendSkippedForFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		primary := &recorder{answer: func(int) error { return errDown }}
		fallback := &recorder{answer: func(int) error { return nil }}
		r := &resilience.Route{Targets: []resilience.Target{
			resilience.NewTarget("primary", primary, resilience.PolicyOptions{Timeout: time.Second,
				Breaker: &resilience.BreakerOptions{FailureThreshold: 3, Delay: time.Minute, SuccessThreshold: 1}}),
			resilience.NewTarget("fallback", fallback, resilience.PolicyOptions{Timeout: time.Second}),
		}}
		for i := range 50 {
			ans, err := r.Do(context.Background(), &handlers.Request{})
			if err != nil || ans.Backend != "fallback" {
				t.Fatalf("task %d: got %v, %v; want an answer from fallback", i, ans, err)
			}
		}
		if got := primary.count(); got != 3 {
			t.Errorf("primary calls: got %d, want 3 (the breaker's threshold)", got)
		}
	})
}

func TestBulkheadAndRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cur, peak atomic.Int64
		slow := handlers.BackendFunc(func(ctx context.Context, r *handlers.Request) (*handlers.Response, error) {
			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
			cur.Add(-1)
			return &handlers.Response{}, nil
		})
		r := &resilience.Route{Targets: []resilience.Target{resilience.NewTarget("a", slow, resilience.PolicyOptions{
			Timeout: 10 * time.Second, MaxConcurrency: 2, RateN: 10, RatePer: time.Second,
		})}}
		start := time.Now()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if err := do(r); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if p := peak.Load(); p > 2 {
			t.Errorf("peak concurrency: got %d, want ≤ 2", p)
		}
		// 20 calls at 10/s, evenly spaced: the last starts ≥ 1.9 s in.
		if took := time.Since(start); took < 1900*time.Millisecond {
			t.Errorf("20 calls at 10/s took %v, want ≥ 1.9s", took)
		}
	})
}

// The route's deadline stops retries and fallbacks: a hanging primary with
// retries and a healthy fallback, and a deadline shorter than the retries.
func TestRouteDeadlineStopsRetriesAndFallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := handlers.BackendFunc(func(ctx context.Context, _ *handlers.Request) (*handlers.Response, error) {
			<-ctx.Done()
			return nil, handlers.Transient(ctx.Err())
		})
		fallback := &recorder{answer: func(int) error { return nil }}
		r := &resilience.Route{Deadline: 2500 * time.Millisecond, Targets: []resilience.Target{
			resilience.NewTarget("slow", hang, resilience.PolicyOptions{Timeout: time.Second,
				Retry: &resilience.RetryOptions{MaxAttempts: 5, Backoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}}),
			resilience.NewTarget("fallback", fallback, resilience.PolicyOptions{Timeout: time.Second}),
		}}
		start := time.Now()
		err := do(r)
		if err == nil {
			t.Fatal("got an answer after the deadline")
		}
		if took := time.Since(start); took > 2500*time.Millisecond {
			t.Errorf("Do took %v, want ≤ the 2.5s deadline", took)
		}
		if n := fallback.count(); n != 0 {
			t.Errorf("fallback calls after the deadline: got %d, want 0", n)
		}
	})
}

func TestHalfOpenLetsMaxCallsThrough(t *testing.T) {
	for _, tc := range []struct {
		name             string
		success, maxCall int
		wantProbes       int
	}{
		{"default is the success threshold", 2, 0, 2},
		{"half_open_max_calls widens it", 1, 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				failing := atomic.Bool{}
				failing.Store(true)
				b := &recorder{answer: func(int) error {
					if failing.Load() {
						return errDown
					}
					<-release // probes hang until released, so they overlap
					return nil
				}}
				target := resilience.NewTarget("a", b, resilience.PolicyOptions{
					Timeout: time.Minute,
					Breaker: &resilience.BreakerOptions{FailureThreshold: 1, Delay: time.Second,
						SuccessThreshold: tc.success, HalfOpenMaxCalls: tc.maxCall},
				})
				r := &resilience.Route{Name: "x", Targets: []resilience.Target{target}}
				if err := do(r); err == nil {
					t.Fatal("first call should fail and open the breaker")
				}
				if down, wait := r.Unavailable(); !down || wait != time.Second {
					t.Fatalf("Unavailable = %v, %v; want true, 1s", down, wait)
				}
				if err := do(r); !errors.Is(err, resilience.ErrUnavailable) || !errors.Is(err, handlers.ErrTransient) {
					t.Fatalf("call while open: %v; want ErrUnavailable and transient", err)
				}
				time.Sleep(time.Second) // synctest: fake clock
				if down, _ := r.Unavailable(); down {
					t.Fatal("route still unavailable after the breaker delay")
				}
				failing.Store(false)
				errs := make(chan error, 10)
				for range 10 {
					go func() { errs <- do(r) }()
				}
				synctest.Wait() // every caller is either in a probe or refused
				refused := 0
				for len(errs) > 0 {
					if err := <-errs; errors.Is(err, resilience.ErrUnavailable) {
						refused++
					}
				}
				if probes := b.count() - 1; probes != tc.wantProbes || refused != 10-tc.wantProbes {
					t.Fatalf("half-open let %d calls through and refused %d; want %d and %d", probes, refused, tc.wantProbes, 10-tc.wantProbes)
				}
				close(release)
				synctest.Wait()
			})
		})
	}
}
