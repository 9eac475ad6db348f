package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
)

// blockingRoute's backend counts its calls and waits for release (or its
// context) before echoing.
func blockingRoute(name string, calls *atomic.Int64, release <-chan struct{}) *resilience.Route {
	return &resilience.Route{Name: name, Targets: []resilience.Target{{Name: "b",
		Backend: handlers.BackendFunc(func(ctx context.Context, r *handlers.Request) (*handlers.Response, error) {
			calls.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, handlers.Transient(ctx.Err())
			}
			return &handlers.Response{Body: r.Payload}, nil
		})}}}
}

func (e *env) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	info, err := e.cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// On a backlog the worker takes only what it has room for: concurrency
// running plus the prefetch, never the whole backlog; the rest stays with
// the server for other workers. The prefetched tasks, waiting for a free
// goroutine, are kept alive like running ones: nothing is redelivered
// while the backend holds every goroutine for several ack waits.
func TestHoldsAtMostConcurrencyPlusPrefetch(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{AckWait: time.Second})
	var calls atomic.Int64
	release := make(chan struct{})
	e.start(t, pipeline.Options{Concurrency: 4, Prefetch: 2, AckWait: time.Second}, blockingRoute("slow", &calls, release))
	const n = 40
	for i := range n {
		e.publish(t, "slow", fmt.Sprintf("b%d", i), "x")
	}
	testkit.Eventually(t, 15*time.Second, "four backend calls running", func() (bool, string) { return calls.Load() == 4, "" })
	testkit.Eventually(t, 15*time.Second, "six tasks held (4 running + 2 prefetched)", func() (bool, string) { return e.consumerInfo(t).NumAckPending == 6, "" })
	// Three ack waits with every goroutine busy: the held tasks are kept
	// alive, and no more are taken.
	testkit.Consistently(t, 3*time.Second, "the held tasks kept, no more taken", func() (bool, string) {
		info := e.consumerInfo(t)
		if info.NumAckPending > 6 {
			return false, fmt.Sprintf("ack pending %d: the worker holds more than concurrency+prefetch", info.NumAckPending)
		}
		if info.NumRedelivered > 0 {
			return false, fmt.Sprintf("%d held tasks redelivered while waiting for a goroutine", info.NumRedelivered)
		}
		return true, ""
	})
	if got := calls.Load(); got != 4 {
		t.Fatalf("backend calls %d while blocked, want 4", got)
	}
	close(release)
	testkit.Eventually(t, 15*time.Second, "every result stored", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	if got := calls.Load(); got != n {
		t.Errorf("backend calls: got %d, want %d (one per task)", got, n)
	}
}

// A paused route's tasks are never served, not even once the parking is
// full: those it cannot hold go back to the stream for later.
func TestPausedRouteNotServedWhenParkingFull(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{MaxDeliver: 100})
	var calls atomic.Int64
	w := e.start(t, pipeline.Options{MaxParked: 2, MaxDeliver: 90}, echoRoute("echo", &calls))
	if err := w.PauseRoute("echo"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e.publish(t, "echo", fmt.Sprintf("p%d", i), "x")
	}
	testkit.Eventually(t, 15*time.Second, "two held, the rest handed back", func() (bool, string) { s := w.Stats(); return s.Parked == 2 && s.Redelivered >= 3, "" })
	if got := calls.Load(); got != 0 {
		t.Fatalf("paused route served %d tasks", got)
	}
	if err := w.ResumeRoute("echo"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "all five served after resume", func() (bool, string) { return e.count(t, "RESULTS") == 5, "" })
}

// A drain ends within its timeout (plus a short grace) even when a backend
// ignores cancellation; the task it holds is handed back, not lost.
func TestDrainBoundedWithBackendIgnoringContext(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck := &resilience.Route{Name: "stuck", Targets: []resilience.Target{{Name: "s",
		Backend: handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
			started <- struct{}{}
			<-release // ignores its context
			return nil, errors.New("released")
		})}}}
	cancel, done := goRun(e.newWorker(t, pipeline.Options{DrainTimeout: 200 * time.Millisecond}, stuck))
	e.publish(t, "stuck", "s1", "x")
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return: the drain waits for a backend that ignores cancellation")
	}
	batch, err := e.cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++
	}
	if got != 1 {
		t.Fatalf("task handed back: fetched %d, want 1", got)
	}
}

// With an async-publish window smaller than the concurrency, a task whose
// backend call succeeded waits for room to store its result instead of
// being redelivered and called again.
func TestFullPublishWindowDoesNotCallTwice(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	w := e.start(t, pipeline.Options{ResultWindow: 4, Concurrency: 64}, echoRoute("echo", &calls))
	const n = 300
	for i := range n {
		if _, err := e.js.PublishAsync("tasks.echo", []byte("x"), jetstream.WithMsgID(fmt.Sprintf("w%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	<-e.js.PublishAsyncComplete()
	testkit.Eventually(t, 15*time.Second, "all results stored", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	if got := calls.Load(); got != n {
		t.Errorf("backend calls: got %d, want %d", got, n)
	}
	if got := w.Stats().Redelivered; got != 0 {
		t.Errorf("redelivered: got %d, want 0", got)
	}
}

// A dead-letter that fails on the worker's last delivery is not
// abandoned: the consumer's limit leaves headroom, the task comes back and
// is dead-lettered (max_deliveries, no further backend call) once the DLQ
// can store it.
func TestDeadLetterOnLastDeliveryRetried(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{MaxDeliver: pipeline.ConsumerMaxDeliver(1)})
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "DLQ"); err != nil {
		t.Fatal(err)
	}
	w := e.start(t, pipeline.Options{MaxDeliver: 1}, &resilience.Route{Name: "down", Targets: []resilience.Target{
		fixed("a", handlers.Transient(errors.New("503"))),
	}})
	e.publish(t, "down", "last", "x")
	testkit.Eventually(t, 15*time.Second, "a failed dead-letter on the last delivery", func() (bool, string) { return w.Stats().Redelivered >= 1, "" })
	if err := bus.EnsureStreams(ctx, e.js, e.topo); err != nil {
		t.Fatal(err)
	}
	m := e.waitMsg(t, "DLQ", "dlq.down")
	// Back beyond max_deliver, without another backend call: the earlier
	// delivery ended without an outcome stored.
	if got := m.Header.Get("Dlq-Reason"); got != "max_deliveries" {
		t.Errorf("Dlq-Reason: got %q, want max_deliveries", got)
	}
	testkit.Eventually(t, 15*time.Second, "task removed after its DLQ copy", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
}

// A poison task with an allowed Task-Reply-To tells its caller at once;
// one whose Task-Reply-To is refused is dead-lettered as poison and no
// reply is published there.
func TestReplyToRules(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	rules, err := pipeline.ReplyRules(e.topo, nil)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	e.start(t, pipeline.Options{Reply: rules}, echoRoute("echo", &calls), echoRoute("upper", &calls))

	inbox := nats.NewInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, "echo", "", "x", "Task-Id", "bad.id", "Task-Reply-To", inbox)
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no error reply for a poison task: %v", err)
	}
	if m.Header.Get("Task-Status") != "error" || m.Header.Get("Dlq-Reason") != "poison" {
		t.Errorf("reply headers %v", m.Header)
	}

	pause, err := e.nc.SubscribeSync("breakwater.all.route.pause")
	if err != nil {
		t.Fatal(err)
	}
	for i, to := range []string{"$JS.API.STREAM.DELETE.DLQ", "$JS.API.STREAM.PURGE.RESULTS", "breakwater.all.route.pause", "results.echo.x"} {
		e.publish(t, "upper", fmt.Sprintf("refused%d", i), `{"route":"upper"}`, "Task-Reply-To", to)
	}
	testkit.Eventually(t, 15*time.Second, "the refused tasks dead-lettered", func() (bool, string) { return e.count(t, "DLQ") == 5, "" })
	s, err := e.js.Stream(context.Background(), "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(2); seq <= 5; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Dlq-Reason") != "poison" || !contains(m.Header.Get("Dlq-Error"), "Task-Reply-To") {
			t.Errorf("entry %d: reason %q, error %q", seq, m.Header.Get("Dlq-Reason"), m.Header.Get("Dlq-Error"))
		}
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("backend calls: got %d, want 0", got)
	}
	if _, err := pause.NextMsg(200 * time.Millisecond); err == nil {
		t.Error("a reply was published on the admin plane")
	}
	if n := e.count(t, "RESULTS"); n != 0 {
		t.Errorf("RESULTS: got %d messages, want 0", n)
	}
	if _, err := e.js.Stream(context.Background(), "DLQ"); err != nil {
		t.Errorf("DLQ stream: %v", err)
	}
}

// A running task can be found by type and id and cancelled: its backend
// call's context ends and the task is dead-lettered as cancelled, without
// waiting for the backend. The goroutine that ran it (the only one here)
// runs the next task with a live context: the cancel reached one task.
func TestCancelRunningTask(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls, echoCalls atomic.Int64
	w := e.start(t, pipeline.Options{Concurrency: 1}, blockingRoute("slow", &calls, make(chan struct{})), echoRoute("echo", &echoCalls))
	e.publish(t, "slow", "c1", "x")
	testkit.Eventually(t, 15*time.Second, "the task running", func() (bool, string) { _, ok := w.Running("slow", "c1"); return ok, "" })
	if _, ok := w.Running("slow", "other"); ok {
		t.Error("Running reports a task that is not running")
	}
	if !w.Cancel("slow", "c1") {
		t.Fatal("Cancel: task not found")
	}
	m := e.waitMsg(t, "DLQ", "dlq.slow")
	if got := m.Header.Get("Dlq-Reason"); got != "cancelled" {
		t.Errorf("Dlq-Reason: got %q, want cancelled", got)
	}
	testkit.Eventually(t, 15*time.Second, "no longer running", func() (bool, string) { _, ok := w.Running("slow", "c1"); return !ok, "" })
	testkit.Eventually(t, 15*time.Second, "task removed from TASKS", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
	if w.Cancel("slow", "c1") {
		t.Error("Cancel of a finished task reports it running")
	}
	e.publish(t, "echo", "after", "y")
	if m := e.waitMsg(t, "RESULTS", "results.echo.after"); m.Header.Get("Task-Status") != "ok" {
		t.Errorf("next task on the same goroutine: Task-Status %q, want ok", m.Header.Get("Task-Status"))
	}
}

// A task cancelled before this worker starts it (fetched already, or
// fetched soon after) is dead-lettered as cancelled, never run.
func TestCancelBeforeStart(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	w := e.start(t, pipeline.Options{}, echoRoute("echo", &calls))
	if w.Cancel("echo", "early") {
		t.Fatal("Cancel reports a task that is not running")
	}
	e.publish(t, "echo", "early", "x")
	m := e.waitMsg(t, "DLQ", "dlq.echo")
	if got := m.Header.Get("Dlq-Reason"); got != "cancelled" {
		t.Errorf("Dlq-Reason: got %q, want cancelled", got)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("backend calls: got %d, want 0", n)
	}
	e.publish(t, "echo", "other", "y")
	e.waitMsg(t, "RESULTS", "results.echo.other")
}
