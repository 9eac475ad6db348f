package pipeline_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
)

// SetLive serves new routes to tasks that start after it, lets a task in
// flight finish on the backend it began with, and retires the old routes
// only once that task is done.
func TestSetLiveSwapsRoutesForNewTasks(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var oldCalls, newCalls atomic.Int64
	release := make(chan struct{})
	w := e.start(t, pipeline.Options{}, blockingRoute("a", &oldCalls, release))

	e.publish(t, "a", "a-1", "first")
	testkit.Eventually(t, 10*time.Second, "a-1 calling its backend", func() (bool, string) { return oldCalls.Load() == 1, "" })

	if _, err := w.CurrentLive().Router.Route("b"); err == nil {
		t.Fatal("route b exists before the reload")
	}
	var retired atomic.Bool
	newA := echoRoute("a", &newCalls)
	newB := echoRoute("b", &newCalls)
	if err := w.SetLive(pipeline.Live{Router: resilience.NewRouter([]*resilience.Route{newA, newB}),
		Retired: func() { retired.Store(true) }}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "b", "b-1", "second")
	if got := e.waitMsg(t, "RESULTS", e.topo.ResultSubject("b", "b-1")); string(got.Data) != "second" {
		t.Errorf("b-1 result %q, want %q", got.Data, "second")
	}

	close(release)
	got := e.waitMsg(t, "RESULTS", e.topo.ResultSubject("a", "a-1"))
	if b := got.Header.Get(task.HeaderBackend); b != "b" {
		t.Errorf("a-1 answered by %q, want the backend it started with (b)", b)
	}
	e.publish(t, "a", "a-2", "third")
	got = e.waitMsg(t, "RESULTS", e.topo.ResultSubject("a", "a-2"))
	if b := got.Header.Get(task.HeaderBackend); b != "echoer" {
		t.Errorf("a-2 answered by %q, want the new route's backend (echoer)", b)
	}
	if oldCalls.Load() != 1 {
		t.Errorf("old backend called %d times, want 1", oldCalls.Load())
	}

	// The second Live is retired once replaced: nothing runs on it.
	if err := w.SetLive(pipeline.Live{Router: resilience.NewRouter([]*resilience.Route{newA})}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the replaced Live retired", func() (bool, string) { return retired.Load(), "" })
	if err := w.SetLive(pipeline.Live{}); err == nil {
		t.Error("SetLive without a Router: got nil error")
	}
}

// The routes replaced while a task is in flight are retired only after it.
func TestSetLiveRetiresAfterInFlight(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	release := make(chan struct{})
	w := e.start(t, pipeline.Options{}, echoRoute("x", nil))
	var retired atomic.Bool
	if err := w.SetLive(pipeline.Live{Router: resilience.NewRouter([]*resilience.Route{blockingRoute("a", &calls, release)}),
		Retired: func() { retired.Store(true) }}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "a", "a-1", "x")
	testkit.Eventually(t, 10*time.Second, "a-1 calling its backend", func() (bool, string) { return calls.Load() == 1, "" })
	if err := w.SetLive(pipeline.Live{Router: resilience.NewRouter([]*resilience.Route{echoRoute("a", nil)})}); err != nil {
		t.Fatal(err)
	}
	// Still in flight: a wrong retire would already be visible by the
	// time a task on the new routes is done.
	e.publish(t, "a", "a-2", "y")
	e.waitMsg(t, "RESULTS", e.topo.ResultSubject("a", "a-2"))
	if retired.Load() {
		t.Fatal("routes retired while a task that started on them is in flight")
	}
	close(release)
	e.waitMsg(t, "RESULTS", e.topo.ResultSubject("a", "a-1"))
	testkit.Eventually(t, 10*time.Second, "routes retired after the in-flight task", func() (bool, string) { return retired.Load(), "" })
}
