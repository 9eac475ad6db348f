// Package handlertest is a conformance suite for handlers.Backend
// implementations, in the manner of Watermill's TestPubSub: every kind of
// backend (built-in, HTTP, NATS request-reply, and any added later) runs the
// same cases through Run, with Features switching off what a kind cannot do.
//
// A Factory builds a backend in front of a fake service that behaves as a
// Behavior says; the suite then checks what the caller sees: bodies round
// trip unchanged, only the allowed task headers reach the service
// (forward_headers is an allow-list), failures carry the right
// class, status and Retry-After hint, deadlines and cancellation are
// honoured, and concurrent calls are safe (run the suite with -race).
package handlertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/nats-io/nats.go"
)

// Kind is what the fake service behind a backend does with each request.
type Kind int

const (
	// Echo answers with the request body unchanged.
	Echo Kind = iota
	// EchoHeaders answers with the request headers the service received,
	// encoded with EncodeHeaders. Needed only when Features.HeadersPassed.
	EchoHeaders
	// FailTransient refuses the request as temporarily unavailable (HTTP
	// 503 or service error code "503" where statuses exist).
	FailTransient
	// FailPermanent rejects the request itself (HTTP 400 or service error
	// code "400" where statuses exist).
	FailPermanent
	// Slow waits Behavior.Delay, or until the caller gives up or the test
	// ends, whichever is first, then echoes. Fakes must not outlive the
	// test: stop waiting in t.Cleanup.
	Slow
	// RetryAfter fails transiently with status 503 and a Retry-After hint
	// of Behavior.Delay (whole seconds). Needed only when Features.RetryAfter.
	RetryAfter
)

// String returns the constant's name, for test names and messages.
func (k Kind) String() string {
	switch k {
	case Echo:
		return "Echo"
	case EchoHeaders:
		return "EchoHeaders"
	case FailTransient:
		return "FailTransient"
	case FailPermanent:
		return "FailPermanent"
	case Slow:
		return "Slow"
	case RetryAfter:
		return "RetryAfter"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Behavior describes the fake service for one test case.
type Behavior struct {
	Kind Kind
	// Delay is the wait of Slow and the hint of RetryAfter.
	Delay time.Duration
	// OnRequest, when not nil, is called by the fake service as soon as a
	// request reaches it (before it answers or starts waiting), so the
	// suite can act while a call is in flight. It may be called from many
	// goroutines.
	OnRequest func()
	// ForwardHeaders is the forward_headers the factory must give the
	// backend it builds (HTTPOptions.ForwardHeaders and the like); nil for
	// none.
	ForwardHeaders []string
}

// Features says what a kind of backend supports; unsupported cases skip.
type Features struct {
	// HeadersPassed: Task-Id, Task-Type and Task-Attempt (from the request),
	// the trace context, Content-Type and the task headers matching
	// Behavior.ForwardHeaders reach the service; no other task header does
	// (not Cookie, X-Api-Key or an unlisted X- header), and Authorization
	// and Nats-* never, even when a pattern matches them.
	HeadersPassed bool
	// RetryAfter: a service's Retry-After hint comes back as
	// handlers.RetryAfter(err).
	RetryAfter bool
	// Status: failures carry the service's status (handlers.StatusOf).
	Status bool
}

// Factory returns a backend in front of a fresh fake service behaving as b.
// It registers the cleanup of both with t.Cleanup.
type Factory func(t *testing.T, b Behavior) handlers.Backend

// EncodeHeaders is how an EchoHeaders fake encodes the headers it received
// (JSON of the header map). Key case is not significant to the suite.
func EncodeHeaders(h map[string][]string) []byte {
	b, err := json.Marshal(h)
	if err != nil {
		panic(err) // a map of string slices always marshals
	}
	return b
}

// Timing margins: how much later than its deadline (or cancellation) a
// call may return. Generous for -race on a loaded machine, far below the
// Slow delay so a backend that ignores ctx fails.
const (
	slowDelay   = 30 * time.Second
	returnSlack = 2 * time.Second
	arriveLimit = 10 * time.Second
)

// Run runs the conformance suite against the backends f makes.
func Run(t *testing.T, f Factory, feat Features) {
	t.Helper()
	t.Run("EchoRoundTrip", func(t *testing.T) { t.Parallel(); testEcho(t, f) })
	t.Run("HeadersPassed", func(t *testing.T) {
		if !feat.HeadersPassed {
			t.Skip("backend does not pass headers")
		}
		t.Parallel()
		testHeaders(t, f)
	})
	t.Run("FailTransient", func(t *testing.T) { t.Parallel(); testFailTransient(t, f, feat) })
	t.Run("FailPermanent", func(t *testing.T) { t.Parallel(); testFailPermanent(t, f, feat) })
	t.Run("DeadlineHonoured", func(t *testing.T) { t.Parallel(); testDeadline(t, f) })
	t.Run("CancelHonoured", func(t *testing.T) { t.Parallel(); testCancel(t, f) })
	t.Run("Concurrent", func(t *testing.T) { t.Parallel(); testConcurrent(t, f) })
	t.Run("RetryAfter", func(t *testing.T) {
		if !feat.RetryAfter {
			t.Skip("backend does not carry Retry-After hints")
		}
		t.Parallel()
		testRetryAfter(t, f)
	})
}

func request(payload []byte) *handlers.Request {
	return &handlers.Request{TaskID: "t-1", Type: "conformance", Payload: payload, Attempt: 1}
}

func callTimeout(t *testing.T, be handlers.Backend, req *handlers.Request) (*handlers.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return be.Call(ctx, req)
}

func testEcho(t *testing.T, f Factory) {
	be := f(t, Behavior{Kind: Echo})
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for _, tc := range []struct {
		name string
		give []byte
	}{
		{"json", []byte(`{"hello":"world"}`)},
		{"empty", nil},
		{"binary", binary},
		{"1MiB", large},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := callTimeout(t, be, request(tc.give))
			if err != nil {
				t.Fatalf("Call: got error %v, want nil", err)
			}
			if resp == nil {
				t.Fatal("Call: got nil response and nil error")
			}
			if !bytes.Equal(resp.Body, tc.give) {
				t.Fatalf("body: got %d bytes %.32q, want %d bytes %.32q", len(resp.Body), resp.Body, len(tc.give), tc.give)
			}
		})
	}
}

func testHeaders(t *testing.T, f Factory) {
	be := f(t, Behavior{Kind: EchoHeaders, ForwardHeaders: []string{"X-Custom", "X-Request-*", "*Authorization"}})
	req := request([]byte("x"))
	req.TaskID, req.Type, req.Attempt = "task-42", "code.generate", 3
	req.Header = nats.Header{
		"X-Custom":        {"a", "b"},
		"X-Request-Id":    {"r-1"},
		"X-Unlisted":      {"u"},
		"Cookie":          {"session=s"},
		"X-Api-Key":       {"k"},
		"traceparent":     {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"tracestate":      {"congo=t61rcWkgMzE"},
		"baggage":         {"userId=alice"},
		"Content-Type":    {"application/json"},
		"Nats-Msg-Id":     {"dedupe-1"},
		"Task-Id":         {"spoofed"},
		"Authorization":   {"Bearer injected-by-publisher"},
		"X-Authorization": {"allowed-by-pattern"},
	}
	resp, err := callTimeout(t, be, req)
	if err != nil {
		t.Fatalf("Call: got error %v, want nil", err)
	}
	var got map[string][]string
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatalf("EchoHeaders body %q: %v", resp.Body, err)
	}
	get := func(k string) []string {
		var out []string
		for gk, v := range got {
			if strings.EqualFold(gk, k) {
				out = append(out, v...)
			}
		}
		return out
	}
	for _, tc := range []struct {
		key  string
		want []string
	}{
		{"Task-Id", []string{"task-42"}},
		{"Task-Type", []string{"code.generate"}},
		{"Task-Attempt", []string{"3"}},
		{"X-Custom", []string{"a", "b"}},
		{"X-Request-Id", []string{"r-1"}},
		{"X-Authorization", []string{"allowed-by-pattern"}},
		{"traceparent", req.Header["traceparent"]},
		{"tracestate", req.Header["tracestate"]},
		{"baggage", req.Header["baggage"]},
		{"Content-Type", req.Header["Content-Type"]},
		{"X-Unlisted", nil},
		{"Cookie", nil},
		{"X-Api-Key", nil},
		{"Nats-Msg-Id", nil},
	} {
		if g := get(tc.key); !equalStrings(g, tc.want) {
			t.Errorf("service saw %s = %q, want %q", tc.key, g, tc.want)
		}
	}
	for _, v := range get("Authorization") {
		if strings.Contains(v, "injected-by-publisher") {
			t.Errorf("service saw the publisher's Authorization %q, want it dropped", v)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testFailTransient(t *testing.T, f Factory, feat Features) {
	be := f(t, Behavior{Kind: FailTransient})
	resp, err := callTimeout(t, be, request([]byte("x")))
	checkClass(t, resp, err, handlers.ErrTransient)
	if feat.Status && handlers.StatusOf(err) != 503 {
		t.Errorf("StatusOf: got %d, want 503", handlers.StatusOf(err))
	}
}

func testFailPermanent(t *testing.T, f Factory, feat Features) {
	be := f(t, Behavior{Kind: FailPermanent})
	resp, err := callTimeout(t, be, request([]byte("x")))
	checkClass(t, resp, err, handlers.ErrPermanent)
	if feat.Status && handlers.StatusOf(err) != 400 {
		t.Errorf("StatusOf: got %d, want 400", handlers.StatusOf(err))
	}
}

// checkClass checks that err is of class want and only of it.
func checkClass(t *testing.T, resp *handlers.Response, err error, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("Call: got response %v and nil error, want %v", resp, want)
	}
	other := handlers.ErrPermanent
	if want == handlers.ErrPermanent {
		other = handlers.ErrTransient
	}
	if !errors.Is(err, want) {
		t.Errorf("errors.Is(%v, %v) = false, want true", err, want)
	}
	if errors.Is(err, other) {
		t.Errorf("errors.Is(%v, %v) = true, want false", err, other)
	}
	if got := handlers.IsPermanent(err); got != (want == handlers.ErrPermanent) {
		t.Errorf("IsPermanent(%v) = %v, want %v", err, got, !got)
	}
}

// arrivals returns an OnRequest hook and a channel closed at the first call.
func arrivals() (func(), <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }, ch
}

func testDeadline(t *testing.T, f Factory) {
	be := f(t, Behavior{Kind: Slow, Delay: slowDelay})
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	resp, err := be.Call(ctx, request([]byte("slow")))
	elapsed := time.Since(start)
	checkClass(t, resp, err, handlers.ErrTransient)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false, want true", err)
	}
	if elapsed > timeout+returnSlack {
		t.Errorf("Call returned after %v, want within %v of its %v deadline", elapsed, returnSlack, timeout)
	}
}

func testCancel(t *testing.T, f Factory) {
	onReq, arrived := arrivals()
	be := f(t, Behavior{Kind: Slow, Delay: slowDelay, OnRequest: onReq})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		resp *handlers.Response
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		resp, err := be.Call(ctx, request([]byte("slow")))
		done <- result{resp, err, time.Now()}
	}()
	select {
	case <-arrived:
	case r := <-done:
		t.Fatalf("Call returned before cancel: %v, %v", r.resp, r.err)
	case <-time.After(arriveLimit):
		t.Fatalf("request did not reach the service within %v", arriveLimit)
	}
	cancelled := time.Now()
	cancel()
	select {
	case r := <-done:
		checkClass(t, r.resp, r.err, handlers.ErrTransient)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("errors.Is(%v, context.Canceled) = false, want true", r.err)
		}
		if d := r.at.Sub(cancelled); d > returnSlack {
			t.Errorf("Call returned %v after cancel, want within %v", d, returnSlack)
		}
	case <-time.After(returnSlack):
		t.Fatalf("Call still running %v after cancel", returnSlack)
	}
}

func testConcurrent(t *testing.T, f Factory) {
	be := f(t, Behavior{Kind: Echo})
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Appendf(nil, "payload-%d", i)
			resp, err := callTimeout(t, be, request(want))
			switch {
			case err != nil:
				errs <- fmt.Errorf("call %d: %w", i, err)
			case !bytes.Equal(resp.Body, want):
				errs <- fmt.Errorf("call %d: got body %q, want %q", i, resp.Body, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testRetryAfter(t *testing.T, f Factory) {
	const hint = 7 * time.Second
	be := f(t, Behavior{Kind: RetryAfter, Delay: hint})
	resp, err := callTimeout(t, be, request([]byte("x")))
	checkClass(t, resp, err, handlers.ErrTransient)
	if got := handlers.RetryAfter(err); got != hint {
		t.Errorf("RetryAfter(%v): got %v, want %v", err, got, hint)
	}
}
