package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
)

// env is a real embedded server with the streams and consumer in place.
type env struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	topo bus.Topology
	cons jetstream.Consumer
}

func newEnv(t testing.TB, co bus.ConsumerOptions) *env { return newEnvSync(t, co, false) }

// newEnvSync starts a server that fsyncs every write when syncAlways.
func newEnvSync(t testing.TB, co bus.ConsumerOptions, syncAlways bool) *env {
	t.Helper()
	var opts []testkit.Option
	if syncAlways {
		opts = append(opts, testkit.SyncAlways())
	}
	nc, js := testkit.StartServer(t, opts...).JetStream(t)
	ctx := context.Background()
	topo := bus.Topology{}
	if err := bus.EnsureStreams(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, js, topo, co)
	if err != nil {
		t.Fatal(err)
	}
	return &env{nc: nc, js: js, topo: topo, cons: cons}
}

// newWorker makes a worker on e's server over routes; o supplies the rest.
func (e *env) newWorker(t testing.TB, o pipeline.Options, routes ...*resilience.Route) *pipeline.Worker {
	t.Helper()
	if o.JS == nil {
		o.JS = e.js
	}
	o.Conn, o.Consumer, o.Topology = e.nc, e.cons, e.topo
	o.Router = resilience.NewRouter(routes)
	o.DLQ = dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1"})
	o.Logger = slog.New(slog.DiscardHandler)
	w, err := pipeline.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// goRun runs w until cancel is called; done yields Run's result.
func goRun(w *pipeline.Worker) (cancel func(), done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- w.Run(ctx) }()
	return cancel, ch
}

// start runs a worker over routes until the test ends.
func (e *env) start(t *testing.T, o pipeline.Options, routes ...*resilience.Route) *pipeline.Worker {
	t.Helper()
	w := e.newWorker(t, o, routes...)
	cancel, done := goRun(w)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

func (e *env) publish(t *testing.T, typ, id string, data string, kv ...string) {
	t.Helper()
	msg := nats.NewMsg(e.topo.TaskSubject(typ))
	msg.Data = []byte(data)
	if id != "" {
		msg.Header.Set(task.HeaderMsgID, id)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		msg.Header.Set(kv[i], kv[i+1])
	}
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// waitMsg polls stream for the last message on subject until deadline.
func (e *env) waitMsg(t *testing.T, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var m *jetstream.RawStreamMsg
	testkit.Eventually(t, 10*time.Second, "a message on "+subject+" in "+stream, func() (bool, string) {
		m, err = s.GetLastMsgForSubject(context.Background(), subject)
		return err == nil, ""
	})
	return m
}

func (e *env) count(t *testing.T, stream string) uint64 { return testkit.Msgs(t, e.js, stream) }

func echoRoute(name string, calls *atomic.Int64) *resilience.Route {
	return &resilience.Route{Name: name, Targets: []resilience.Target{{
		Name: "echoer",
		Backend: handlers.BackendFunc(func(_ context.Context, r *handlers.Request) (*handlers.Response, error) {
			if calls != nil {
				calls.Add(1)
			}
			return &handlers.Response{Body: r.Payload}, nil
		}),
	}}}
}

func fixed(name string, err error) resilience.Target {
	return resilience.Target{Name: name, Backend: handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
		return nil, err
	})}
}

// A result carries the contract's headers and the task's trace context.
// Result messages are reused from task to task: the next result, made
// with the same message, carries its own values and none of the first's.
func TestResultStoredWithHeaders(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	e.start(t, pipeline.Options{Concurrency: 1}, echoRoute("code.generate", nil))
	e.publish(t, "code.generate", "t1", "hello", "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")

	m := e.waitMsg(t, "RESULTS", "results.code.generate.t1")
	if string(m.Data) != "hello" {
		t.Errorf("body: got %q, want %q", m.Data, "hello")
	}
	want := map[string]string{
		"Task-Id": "t1", "Task-Type": "code.generate", "Task-Status": "ok", "Task-Backend": "echoer",
		"Task-Attempts": "1", "Task-Cache": "miss",
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("header %s: got %q, want %q", k, got, v)
		}
	}
	if _, err := time.ParseDuration(m.Header.Get("Task-Duration")); err != nil {
		t.Errorf("Task-Duration %q: %v", m.Header.Get("Task-Duration"), err)
	}
	testkit.Eventually(t, 15*time.Second, "task acked and removed from TASKS", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })

	for i, id := range []string{"t2", "t3"} {
		e.publish(t, "code.generate", id, "next"+id)
		m = e.waitMsg(t, "RESULTS", "results.code.generate."+id)
		if string(m.Data) != "next"+id || m.Header.Get("Task-Id") != id {
			t.Errorf("result %d: body %q, Task-Id %q; want %q, %q", i+2, m.Data, m.Header.Get("Task-Id"), "next"+id, id)
		}
		if got := m.Header.Get("traceparent"); got != "" {
			t.Errorf("result %d: traceparent %q from an earlier task, want none", i+2, got)
		}
		ours := 0 // the server's own Nats-* headers aside
		for k := range m.Header {
			if !strings.HasPrefix(k, "Nats-") {
				ours++
			}
		}
		if ours != 7 {
			t.Errorf("result %d: %d headers, want 7: %v", i+2, ours, m.Header)
		}
	}
}

func TestReplyTo(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	e.start(t, pipeline.Options{}, echoRoute("echo", nil), &resilience.Route{Name: "fail", Targets: []resilience.Target{fixed("f", handlers.Permanent(errors.New("bad input")))}})
	for _, tc := range []struct{ typ, wantStatus, wantBody, wantReason string }{
		{"echo", "ok", "ping", ""},
		{"fail", "error", "", "rejected"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			inbox := nats.NewInbox()
			sub, err := e.nc.SubscribeSync(inbox)
			if err != nil {
				t.Fatal(err)
			}
			e.publish(t, tc.typ, "r-"+tc.typ, "ping", "Task-Reply-To", inbox)
			m, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get("Task-Status"); got != tc.wantStatus {
				t.Errorf("status: got %q, want %q", got, tc.wantStatus)
			}
			if string(m.Data) != tc.wantBody {
				t.Errorf("body: got %q, want %q", m.Data, tc.wantBody)
			}
			if got := m.Header.Get("Dlq-Reason"); got != tc.wantReason {
				t.Errorf("Dlq-Reason: got %q, want %q", got, tc.wantReason)
			}
		})
	}
}

func TestDeadLetterReasons(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{MaxDeliver: 2})
	e.start(t, pipeline.Options{MaxDeliver: 2, MaxPayload: 100},
		echoRoute("echo", nil),
		&resilience.Route{Name: "reject", Targets: []resilience.Target{fixed("a", handlers.Permanent(errors.New("400 bad request")))}},
		&resilience.Route{Name: "down", Targets: []resilience.Target{
			fixed("a", handlers.Transient(errors.New("dial http://user:s3cret@host: refused"))),
			fixed("b", handlers.Transient(errors.New("503"))),
		}},
	)
	tests := []struct {
		typ, id, data string
		kv            []string
		wantReason    string
		wantAttempts  string
		wantBackends  string
	}{
		{typ: "echo", id: "bad.id", data: "x", wantReason: "poison", wantAttempts: "0"},
		{typ: "echo", id: "big", data: string(make([]byte, 101)), wantReason: "poison", wantAttempts: "0"},
		{typ: "echo", id: "late", data: "x", kv: []string{"Task-Deadline", "2020-01-01T00:00:00Z"}, wantReason: "expired", wantAttempts: "0"},
		{typ: "nowhere", id: "nr", data: "x", wantReason: "no_route", wantAttempts: "0"},
		{typ: "reject", id: "rj", data: "x", wantReason: "rejected", wantAttempts: "1", wantBackends: "a"},
		{typ: "down", id: "dn", data: "x", wantReason: "exhausted", wantAttempts: "3", wantBackends: "a,b"},
	}
	for _, tt := range tests {
		e.publish(t, tt.typ, tt.id, tt.data, tt.kv...)
	}
	s, err := e.js.Stream(context.Background(), "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "all tasks dead-lettered", func() (bool, string) { return e.count(t, "DLQ") == uint64(len(tests)), "" })
	byID := map[string]*jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= uint64(len(tests)); seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get("Task-Id")
		if id == "" {
			id = m.Header.Get("Nats-Msg-Id")
		}
		byID[id] = m
	}
	for _, tt := range tests {
		t.Run(tt.wantReason, func(t *testing.T) {
			id := tt.id
			if id == "bad.id" {
				id = "1" // an invalid id falls back to the stream sequence
			}
			m := byID[id]
			if m == nil {
				t.Fatalf("no DLQ entry for %s (have %v)", id, keys(byID))
			}
			if m.Subject != "dlq."+tt.typ {
				t.Errorf("subject: got %q, want dlq.%s", m.Subject, tt.typ)
			}
			if string(m.Data) != tt.data {
				t.Errorf("payload changed")
			}
			for k, want := range map[string]string{
				"Dlq-Reason": tt.wantReason, "Dlq-Attempts": tt.wantAttempts, "Dlq-Backends": tt.wantBackends,
				"Dlq-Original-Subject": "tasks." + tt.typ, "Dlq-Worker": "w1", "Dlq-Replays": "0",
			} {
				if got := m.Header.Get(k); got != want {
					t.Errorf("%s: got %q, want %q", k, got, want)
				}
			}
			if _, err := time.Parse(time.RFC3339, m.Header.Get("Dlq-Failed-At")); err != nil {
				t.Errorf("Dlq-Failed-At: %v", err)
			}
			if m.Header.Get("Dlq-Error") == "" {
				t.Error("Dlq-Error is empty")
			}
		})
	}
	if got := byID["dn"].Header.Get("Dlq-Error"); got == "" || contains(got, "s3cret") {
		t.Errorf("Dlq-Error leaks or is empty: %q", got)
	}
	if n := e.count(t, "TASKS"); n != 0 {
		t.Errorf("TASKS: got %d messages, want 0", n)
	}
	if n := e.count(t, "RESULTS"); n != 0 {
		t.Errorf("RESULTS: got %d messages, want 0", n)
	}
}

// A redelivered task whose result is already stored is acked without a
// second backend call.
func TestRedeliveredWithStoredResult(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{AckWait: time.Second})
	e.publish(t, "echo", "dup", "x")
	// First delivery: taken and never acked, as by a worker killed after
	// storing the result.
	batch, err := e.cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	if _, err := e.js.Publish(context.Background(), "results.echo.dup", []byte("stored")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	w := e.start(t, pipeline.Options{AckWait: time.Second}, echoRoute("echo", &calls))
	testkit.Eventually(t, 15*time.Second, "redelivered task acked", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
	if n := calls.Load(); n != 0 {
		t.Errorf("backend calls: got %d, want 0", n)
	}
	if got := w.Stats().Duplicates; got != 1 {
		t.Errorf("duplicates: got %d, want 1", got)
	}
}

func TestDrainFinishesInFlight(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := &resilience.Route{Name: "slow", Targets: []resilience.Target{{Name: "s",
		Backend: handlers.BackendFunc(func(_ context.Context, r *handlers.Request) (*handlers.Response, error) {
			started <- struct{}{}
			<-release
			return &handlers.Response{Body: r.Payload}, nil
		})}}}
	w := e.newWorker(t, pipeline.Options{}, slow)
	cancel, done := goRun(w)
	e.publish(t, "slow", "s1", "x")
	<-started
	cancel()
	testkit.Eventually(t, 15*time.Second, "worker not ready while draining", func() (bool, string) { return !w.Ready(), "" })
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before the in-flight task finished", err)
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.waitMsg(t, "RESULTS", "results.slow.s1")
}

func TestDrainTimeoutHandsBack(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	started := make(chan struct{}, 1)
	stuck := &resilience.Route{Name: "stuck", Targets: []resilience.Target{{Name: "s",
		Backend: handlers.BackendFunc(func(ctx context.Context, _ *handlers.Request) (*handlers.Response, error) {
			started <- struct{}{}
			<-ctx.Done()
			return nil, handlers.Transient(ctx.Err())
		})}}}
	cancel, done := goRun(e.newWorker(t, pipeline.Options{DrainTimeout: 100 * time.Millisecond}, stuck))
	e.publish(t, "stuck", "s1", "x")
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Handed back, not dead-lettered: still in TASKS, nothing in DLQ, and
	// the consumer can deliver it again at once.
	if n := e.count(t, "DLQ"); n != 0 {
		t.Errorf("DLQ: got %d, want 0", n)
	}
	batch, err := e.cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		md, _ := m.Metadata()
		if md.NumDelivered != 2 {
			t.Errorf("deliveries: got %d, want 2", md.NumDelivered)
		}
	}
	if got != 1 {
		t.Errorf("redelivered after hand-back: got %d messages, want 1", got)
	}
}

func TestManyTasksConcurrently(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	e.start(t, pipeline.Options{Concurrency: 16}, echoRoute("echo", &calls))
	const n = 2000
	for i := range n {
		if _, err := e.js.PublishAsync("tasks.echo", []byte(strconv.Itoa(i)), jetstream.WithMsgID(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	<-e.js.PublishAsyncComplete()
	testkit.Eventually(t, 15*time.Second, "all results stored", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	testkit.Eventually(t, 15*time.Second, "all tasks acked", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
	if got := calls.Load(); got != n {
		t.Errorf("backend calls: got %d, want %d", got, n)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// A task that runs longer than the ack wait is kept alive with InProgress
// and is neither redelivered nor called twice.
func TestLongTaskNotRedelivered(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{AckWait: time.Second})
	var calls atomic.Int64
	slow := &resilience.Route{Name: "slow", Targets: []resilience.Target{{Name: "s",
		Backend: handlers.BackendFunc(func(ctx context.Context, r *handlers.Request) (*handlers.Response, error) {
			calls.Add(1)
			select {
			case <-time.After(3500 * time.Millisecond): // the work itself, several ack waits long
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &handlers.Response{Body: r.Payload}, nil
		})}}}
	e.start(t, pipeline.Options{AckWait: time.Second, Concurrency: 4}, slow)
	e.publish(t, "slow", "long", "x")
	e.waitMsg(t, "RESULTS", "results.slow.long")
	testkit.Eventually(t, 15*time.Second, "task acked", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
	if n := calls.Load(); n != 1 {
		t.Errorf("backend calls: got %d, want 1 (the task was redelivered while running)", n)
	}
}

// A consumer deleted under a running worker is made again and consuming
// goes on; tasks published meanwhile are not lost.
func TestRecreatesDeletedConsumer(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var recreated atomic.Int64
	w := e.start(t, pipeline.Options{Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
		recreated.Add(1)
		return bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{})
	}}, echoRoute("echo", nil))
	e.publish(t, "echo", "before", "x")
	e.waitMsg(t, "RESULTS", "results.echo.before")

	if err := e.js.DeleteConsumer(context.Background(), "TASKS", "workers"); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "echo", "after", "y")
	e.waitMsg(t, "RESULTS", "results.echo.after")
	if recreated.Load() == 0 {
		t.Error("Recreate was never called")
	}
	testkit.Eventually(t, 15*time.Second, "worker ready again", func() (bool, string) { return w.Ready(), "" })
}

// A backend that ignores its context holds a task past the route's budget:
// the worker stops keeping it alive and the server redelivers it.
func TestStuckTaskNotKeptAlive(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{AckWait: time.Second})
	var calls atomic.Int64
	release := make(chan struct{})
	stuck := &resilience.Route{Name: "stuck", Targets: []resilience.Target{{Name: "s", Timeout: 100 * time.Millisecond,
		Backend: handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
			calls.Add(1)
			<-release // ignores its context
			return nil, errors.New("released")
		})}}}
	e.start(t, pipeline.Options{AckWait: time.Second, DrainTimeout: 100 * time.Millisecond}, stuck)
	// Cleanups run last-first: the backends return before the drain waits.
	t.Cleanup(func() { close(release) })
	e.publish(t, "stuck", "s1", "x")
	// Budget 100ms + one ack wait, then an ack wait unrefreshed: redelivered.
	testkit.Eventually(t, 10*time.Second, "the stuck task redelivered", func() (bool, string) { return calls.Load() >= 2, "" })
}

// With the DLQ unable to store (its stream removed), a task that must be
// dead-lettered stays in TASKS and is dead-lettered once the DLQ is back.
func TestDeadLetterWaitsForDLQ(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "DLQ"); err != nil {
		t.Fatal(err)
	}
	w := e.start(t, pipeline.Options{}, echoRoute("echo", nil))
	e.publish(t, "nowhere", "kept", "x")
	testkit.Eventually(t, 15*time.Second, "a failed dead-letter attempt handed back", func() (bool, string) { return w.Stats().Redelivered >= 1, "" })
	if got := e.count(t, "TASKS"); got != 1 {
		t.Fatalf("TASKS holds %d, want the task kept", got)
	}
	if err := bus.EnsureStreams(ctx, e.js, e.topo); err != nil {
		t.Fatal(err)
	}
	m := e.waitMsg(t, "DLQ", "dlq.nowhere")
	if m.Header.Get("Dlq-Reason") != "no_route" || m.Header.Get("Task-Id") != "kept" {
		t.Fatalf("DLQ copy %v", m.Header)
	}
	testkit.Eventually(t, 15*time.Second, "task removed after its DLQ copy", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
}
