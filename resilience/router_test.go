package resilience_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

func ok(body string) handlers.Backend {
	return handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
		return &handlers.Response{Body: []byte(body)}, nil
	})
}

func failing(err error) handlers.Backend {
	return handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
		return nil, err
	})
}

// hang blocks until its attempt's context ends.
var hang = handlers.BackendFunc(func(ctx context.Context, _ *handlers.Request) (*handlers.Response, error) {
	<-ctx.Done()
	return nil, ctx.Err()
})

func TestRouteDo(t *testing.T) {
	transient := handlers.Transient(errors.New("503"))
	permanent := handlers.Permanent(errors.New("400"))
	tests := []struct {
		name          string
		give          []resilience.Target
		wantBackend   string // "" when the route must fail
		wantAttempts  int
		wantPermanent bool
	}{
		{"first answers", []resilience.Target{{Name: "a", Backend: ok("A")}, {Name: "b", Backend: ok("B")}}, "a", 1, false},
		{"failover on transient", []resilience.Target{{Name: "a", Backend: failing(transient)}, {Name: "b", Backend: ok("B")}}, "b", 2, false},
		{"unclassified is transient", []resilience.Target{{Name: "a", Backend: failing(errors.New("eof"))}, {Name: "b", Backend: ok("B")}}, "b", 2, false},
		{"permanent stops", []resilience.Target{{Name: "a", Backend: failing(permanent)}, {Name: "b", Backend: ok("B")}}, "", 1, true},
		{"all transient", []resilience.Target{{Name: "a", Backend: failing(transient)}, {Name: "b", Backend: failing(transient)}}, "", 2, false},
		{"attempt timeout then failover", []resilience.Target{{Name: "a", Backend: hang, Timeout: 20 * time.Millisecond}, {Name: "b", Backend: ok("B")}}, "b", 2, false},
		{"nil response is a failure", []resilience.Target{{Name: "a", Backend: handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) { return nil, nil })}}, "", 1, false},
		{"no backends", nil, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &resilience.Route{Name: "x", Targets: tt.give}
			ans, err := r.Do(context.Background(), &handlers.Request{TaskID: "t"})
			if tt.wantBackend != "" {
				if err != nil {
					t.Fatalf("got error %v, want an answer from %s", err, tt.wantBackend)
				}
				if ans.Backend != tt.wantBackend || len(ans.Attempts) != tt.wantAttempts {
					t.Errorf("got backend %s after %d attempts, want %s after %d", ans.Backend, len(ans.Attempts), tt.wantBackend, tt.wantAttempts)
				}
				return
			}
			if err == nil {
				t.Fatalf("got answer from %s, want an error", ans.Backend)
			}
			if got := len(resilience.AttemptsOf(err)); got != tt.wantAttempts {
				t.Errorf("attempts: got %d, want %d", got, tt.wantAttempts)
			}
			if got := handlers.IsPermanent(err); got != tt.wantPermanent {
				t.Errorf("permanent: got %v, want %v (err %v)", got, tt.wantPermanent, err)
			}
		})
	}
}

func TestRouteDoStopsWhenTaskContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	called := 0
	first := handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
		called++
		cancel()
		return nil, handlers.Transient(errors.New("503"))
	})
	r := &resilience.Route{Targets: []resilience.Target{{Name: "a", Backend: first}, {Name: "b", Backend: ok("B")}}}
	if _, err := r.Do(ctx, &handlers.Request{}); err == nil {
		t.Fatal("got an answer after the task's context ended")
	}
	if called != 1 {
		t.Errorf("calls: got %d, want 1", called)
	}
}

func TestRouter(t *testing.T) {
	r := resilience.NewRouter([]*resilience.Route{{Name: "code.generate"}})
	if _, err := r.Route("code.generate"); err != nil {
		t.Errorf("Route(code.generate): %v", err)
	}
	if _, err := r.Route("code"); !errors.Is(err, resilience.ErrNoRoute) {
		t.Errorf("Route(code): got %v, want ErrNoRoute", err)
	}
}

type hookKey struct{}

// The hook sees every call, numbered, with the context it returned
// reaching the backend; a backend health checks call down is skipped.
func TestAttemptHookAndDown(t *testing.T) {
	type seen struct {
		backend string
		n       int
		failed  bool
	}
	var calls []seen
	hook := func(ctx context.Context, backend string, n int) (context.Context, func(resilience.Attempt)) {
		return context.WithValue(ctx, hookKey{}, n), func(a resilience.Attempt) {
			calls = append(calls, seen{backend, n, a.Err != nil})
		}
	}
	marked := handlers.BackendFunc(func(ctx context.Context, req *handlers.Request) (*handlers.Response, error) {
		if ctx.Value(hookKey{}) != req.Attempt {
			t.Errorf("backend context lacks the hook's value for attempt %d", req.Attempt)
		}
		return &handlers.Response{Body: []byte("ok")}, nil
	})
	down := func() (bool, time.Duration) { return true, time.Second }
	r := &resilience.Route{Name: "x", Targets: []resilience.Target{
		resilience.NewTarget("sick", ok("never"), resilience.PolicyOptions{Hook: hook, Down: down}),
		resilience.NewTarget("flaky", failing(handlers.Transient(errors.New("503"))), resilience.PolicyOptions{
			Hook: hook, Retry: &resilience.RetryOptions{MaxAttempts: 2}}),
		resilience.NewTarget("good", marked, resilience.PolicyOptions{Hook: hook}),
	}}
	ans, err := r.Do(context.Background(), &handlers.Request{TaskID: "t"})
	if err != nil || ans.Backend != "good" {
		t.Fatalf("Do = %v, %v; want an answer from good", ans, err)
	}
	want := []seen{{"flaky", 1, true}, {"flaky", 2, true}, {"good", 3, false}}
	if len(calls) != len(want) {
		t.Fatalf("hook saw %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("hook saw %v, want %v", calls, want)
		}
	}
	only := &resilience.Route{Name: "y", Targets: r.Targets[:1]}
	if down, wait := only.Unavailable(); !down || wait != time.Second {
		t.Fatalf("route of a down backend: Unavailable = %v, %v; want true, 1s", down, wait)
	}
}

// A failure reads as its deciding error: no count of this delivery's calls
// beside a DLQ entry's Dlq-Attempts, which counts every delivery's.
func TestFailureErrorIsTheCause(t *testing.T) {
	f := &resilience.Failure{Attempts: make([]resilience.Attempt, 1), Err: errors.New("svc: 503 unavailable")}
	if got := f.Error(); got != "svc: 503 unavailable" {
		t.Errorf("got %q", got)
	}
}
