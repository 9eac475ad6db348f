package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/task"
)

// newClient starts an installation of topo for the test and a client on
// it with opts.
func newClient(t *testing.T, topo bus.Topology, opts ...client.Option) (*installation, *client.Client) {
	t.Helper()
	in, err := start(topo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.stop)
	c, err := client.New(in.nc, append([]client.Option{client.WithTopology(topo)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return in, c
}

// idleClient is a client of another installation on in's server, with
// its streams but no worker: its tasks stay in TASKS.
func idleClient(t *testing.T, in *installation, opts ...client.Option) (*client.Client, bus.Topology) {
	t.Helper()
	topo := bus.Topology{Prefix: "idle"}
	if err := bus.EnsureStreams(t.Context(), in.js, topo); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(in.nc, append([]client.Option{client.WithTopology(topo)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c, topo
}

// tasksStored is the number of messages TASKS holds.
func tasksStored(t *testing.T, in *installation, topo bus.Topology) uint64 {
	return testkit.Msgs(t, in.js, topo.TasksStream())
}

func TestNewRefusesBadOptions(t *testing.T) {
	nc := &nats.Conn{}
	tests := []struct {
		name string
		give client.Option
	}{
		{"prefix with a dot", client.WithPrefix("a.b")},
		{"zero request timeout", client.WithRequestTimeout(0)},
		{"negative result timeout", client.WithResultTimeout(-time.Second)},
		{"empty window", client.WithAsyncWindow(0)},
		{"tracing without a tracer", client.WithTracing(nil, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := client.New(nc, tt.give); !errors.Is(err, client.ErrInvalidOption) {
				t.Errorf("New: %v, want an error wrapping ErrInvalidOption", err)
			}
		})
	}
	if _, err := client.New(nil); !errors.Is(err, client.ErrInvalidOption) {
		t.Errorf("New(nil): %v, want an error wrapping ErrInvalidOption", err)
	}
}

// Bad input is refused before anything is sent.
func TestPublishRefusesBadInput(t *testing.T) {
	in, c := newClient(t, bus.Topology{})
	tests := []struct {
		name string
		typ  string
		opts []client.PublishOption
		want string
	}{
		{"empty type", "", nil, "empty task type"},
		{"wildcard type", "a.*", nil, "wildcards"},
		{"empty token", "a..b", nil, "empty token"},
		{"bad id", "echo", []client.PublishOption{client.WithID("a b")}, "task id"},
		{"header with a colon", "echo", []client.PublishOption{client.WithHeader("a:b", "v")}, "has ':'"},
		{"header value with a line break", "echo", []client.PublishOption{client.WithHeader("K", "a\r\nb")}, "line break"},
		{"task id header", "echo", []client.PublishOption{client.WithHeader(task.HeaderID, "x")}, "set by the publisher"},
		{"time in the past", "echo", []client.PublishOption{client.WithAt(time.Now().Add(-time.Minute))}, "not in the future"},
		{"negative delay", "echo", []client.PublishOption{client.WithIn(-time.Second)}, "must be positive"},
		{"delay and time", "echo", []client.PublishOption{client.WithIn(time.Minute), client.WithAt(time.Now().Add(time.Hour))}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Publish(t.Context(), tt.typ, []byte("x"), tt.opts...)
			if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Publish: %v, want an error wrapping ErrInvalid saying %q", err, tt.want)
			}
		})
	}
	if n := tasksStored(t, in, in.topo); n != 0 {
		t.Errorf("TASKS holds %d messages, want none", n)
	}
}

// A duplicate's reply went to the first publisher: PublishAndWait finds
// the result in RESULTS instead; with no result at all it says it was a
// duplicate.
func TestPublishAndWaitDuplicate(t *testing.T) {
	in, c := newClient(t, bus.Topology{})
	first, err := c.PublishAndWait(t.Context(), "echo", []byte("once"), client.WithID("dup-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.PublishAndWait(t.Context(), "echo", []byte("twice"), client.WithID("dup-1"))
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Body) != "once" || string(first.Body) != "once" || again.Seq == 0 {
		t.Errorf("bodies %q then %q (seq %d), want the first task's result twice, the second from RESULTS", first.Body, again.Body, again.Seq)
	}

	// No worker serves the idle installation: the first wait times out,
	// the duplicate's too.
	idle, _ := idleClient(t, in)
	for i, wantDup := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		_, err := idle.PublishAndWait(ctx, "echo", nil, client.WithID("idle-1"))
		cancel()
		if !errors.Is(err, client.ErrNoResult) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrDuplicate) != wantDup {
			t.Errorf("wait %d: %v, want ErrNoResult and DeadlineExceeded, ErrDuplicate %v", i, err, wantDup)
		}
	}
}

// A delayed task is not run before it is due; PublishAndWait waits for it.
func TestPublishAndWaitDelayed(t *testing.T) {
	_, c := newClient(t, bus.Topology{Prefix: "acme"})
	start := time.Now()
	res, err := c.PublishAndWait(t.Context(), "echo", []byte("later"), client.WithIn(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second || string(res.Body) != "later" {
		t.Errorf("result %q after %s, want %q after at least 1s", res.Body, took, "later")
	}
	if !strings.HasPrefix(res.Subject, "_INBOX.") {
		t.Errorf("result came on %q, want the reply inbox", res.Subject)
	}
}

// A batch larger than the async window is published whole: the window
// makes it wait for acks, never drop.
func TestPublishBatchBackpressure(t *testing.T) {
	in, _ := newClient(t, bus.Topology{})
	c, topo := idleClient(t, in, client.WithAsyncWindow(4))
	const n = 300
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"type":"idle","data":%d,"id":"bp-%d"}`+"\n", i, i)
	}
	b.WriteString(`{"type":"idle","id":"bp-0"}` + "\n") // a duplicate
	var failures []string
	sum, err := c.PublishBatch(t.Context(), strings.NewReader(b.String()),
		client.WithBatchHeader("X-Batch", "1"),
		client.WithOnFailure(func(line int, err error) { failures = append(failures, fmt.Sprint(line, err)) }))
	if err != nil || sum != (client.BatchSummary{Tasks: n + 1, Stored: n, Duplicates: 1}) || len(failures) != 0 {
		t.Fatalf("summary %+v, %v, failures %q; want %d stored and 1 duplicate", sum, err, failures, n)
	}
	if got := tasksStored(t, in, topo); got != n {
		t.Errorf("TASKS holds %d, want %d", got, n)
	}

	// The same from Go values: a bad task is reported by its position.
	tasks := func(yield func(client.Task) bool) {
		for i := range n {
			if !yield(client.Task{Type: "idle", ID: fmt.Sprintf("go-%d", i), Header: nats.Header{"X-I": {fmt.Sprint(i)}}}) {
				return
			}
		}
		yield(client.Task{Type: "idle", ID: "bad id"})
	}
	failures = nil
	sum, err = c.PublishTasks(t.Context(), tasks, client.WithOnFailure(func(n int, err error) { failures = append(failures, fmt.Sprint(n)) }))
	if err != nil || sum != (client.BatchSummary{Tasks: n + 1, Stored: n, Failed: 1}) || len(failures) != 1 || failures[0] != fmt.Sprint(n+1) {
		t.Fatalf("PublishTasks: summary %+v, %v, failures at %q; want %d stored and task %d failed", sum, err, failures, n, n+1)
	}
	if got := tasksStored(t, in, topo); got != 2*n {
		t.Errorf("TASKS holds %d, want %d", got, 2*n)
	}

	if _, err := c.PublishBatch(t.Context(), strings.NewReader(""), client.WithBatchHeader(task.HeaderReplyTo, "x")); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("a shared Task-Reply-To: %v, want ErrInvalid", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.PublishBatch(ctx, strings.NewReader(b.String())); !errors.Is(err, context.Canceled) {
		t.Errorf("batch with an ended context: %v, want context.Canceled", err)
	}
}

// Results yields results as they come and ends with the context's error.
func TestResultsFollows(t *testing.T) {
	_, c := newClient(t, bus.Topology{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		for r, err := range c.Results(ctx, client.ResultsFilter{Type: "echo"}) {
			if err != nil {
				done <- err
				return
			}
			got <- r.ID
		}
		done <- nil
	}()
	// Results published before the consumer exists are not "new": keep
	// publishing until one arrives, then check what follows is in order.
	var first string
	for i := 0; first == ""; i++ {
		id := fmt.Sprintf("f-%d", i)
		if _, err := c.PublishAndWait(ctx, "echo", nil, client.WithID(id)); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-got:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := c.PublishAndWait(ctx, "echo", nil, client.WithID("last")); err != nil {
		t.Fatal(err)
	}
	for id := range got {
		if id == "last" {
			break
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("iteration ended with %v, want context.Canceled", err)
	}
	for _, err := range c.Results(t.Context(), client.ResultsFilter{Type: "a.*"}) {
		if !errors.Is(err, client.ErrInvalid) {
			t.Errorf("bad type: %v, want ErrInvalid", err)
		}
	}
}

// A stream the server does not have is named, with what it usually means.
func TestNoStreamHint(t *testing.T) {
	in, _ := newClient(t, bus.Topology{})
	c, err := client.New(in.nc, client.WithPrefix("none"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Result(t.Context(), "echo", "x")
	if err == nil || !strings.Contains(err.Error(), "stream none_RESULTS not found (has a worker started") {
		t.Errorf("Result: %v, want the missing stream named", err)
	}
	_, err = c.Publish(t.Context(), "echo", nil)
	if err == nil || !strings.Contains(err.Error(), "publish to none.tasks.echo") || !strings.Contains(err.Error(), "no stream none_TASKS stores this subject") {
		t.Errorf("Publish: %v, want the subject and the missing stream named", err)
	}
}
