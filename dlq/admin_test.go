package dlq_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/task"
)

// fill dead-letters the entries of the table below and returns an admin.
func fill(t *testing.T, e *env) *dlq.Admin {
	t.Helper()
	ctx := context.Background()
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1"})
	entries := []struct {
		id, typ  string
		reason   dlq.Reason
		backends []string
	}{
		{"a1", "alpha", dlq.Exhausted, []string{"x", "y"}},
		{"a2", "alpha", dlq.Rejected, []string{"y"}},
		{"b1", "beta", dlq.Exhausted, []string{"x"}},
		{"b2", "beta", dlq.Poison, nil},
		{"c1", "code.gen", dlq.NoRoute, nil},
	}
	for i, en := range entries {
		err := w.Write(ctx, &dlq.Entry{
			// TASKS sequences no task in this test's TASKS has: the DLQ
			// dedupes on them, and a replayed task (TASKS seq 1, 2, ...)
			// dead-lettered again must not look like one of these.
			ID: en.id, Type: en.typ, Subject: "tasks." + en.typ, Seq: uint64(1001 + i),
			Header:  nats.Header{"Task-Id": {en.id}, "Nats-Msg-Id": {en.id}, "X-Keep": {"k"}},
			Payload: []byte("payload-" + en.id), Reason: en.reason, Err: errors.New("boom"),
			Attempts: 1, Backends: en.backends,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ids(t *testing.T, a *dlq.Admin, f dlq.Filter) []string {
	t.Helper()
	var out []string
	if err := a.Scan(context.Background(), f, func(i *dlq.Item) error {
		out = append(out, i.ID())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestScanFilters(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	third, err := a.Get(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    dlq.Filter
		want []string
	}{
		{"until the third", dlq.Filter{Until: third.Time}, []string{"a1", "a2", "b1"}},
		{"since the third", dlq.Filter{Since: third.Time}, []string{"b1", "b2", "c1"}},
		{"since and until the third", dlq.Filter{Since: third.Time, Until: third.Time}, []string{"b1"}},
		{"seq and reason", dlq.Filter{Seqs: []uint64{1, 2}, Reasons: []dlq.Reason{dlq.Rejected}}, []string{"a2"}},
		{"all", dlq.Filter{}, []string{"a1", "a2", "b1", "b2", "c1"}},
		{"type", dlq.Filter{Types: []string{"beta"}}, []string{"b1", "b2"}},
		{"multi-token type", dlq.Filter{Types: []string{"code.gen"}}, []string{"c1"}},
		{"reason", dlq.Filter{Reasons: []dlq.Reason{dlq.Exhausted}}, []string{"a1", "b1"}},
		{"backend", dlq.Filter{Backends: []string{"y"}}, []string{"a1", "a2"}},
		{"type and reason", dlq.Filter{Types: []string{"alpha"}, Reasons: []dlq.Reason{dlq.Rejected}}, []string{"a2"}},
		{"seq", dlq.Filter{Seqs: []uint64{2, 4, 99}}, []string{"a2", "b2"}},
		{"limit", dlq.Filter{Limit: 2}, []string{"a1", "a2"}},
		{"since the future", dlq.Filter{Since: time.Now().Add(time.Hour)}, nil},
		{"until the past", dlq.Filter{Until: time.Now().Add(-time.Hour)}, nil},
		{"since an hour ago", dlq.Filter{Since: time.Now().Add(-time.Hour), Types: []string{"alpha"}}, []string{"a1", "a2"}},
		{"no match", dlq.Filter{Types: []string{"none"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(t, a, tc.f); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// A replay republishes with the same Task-Id, <id>-r1 and Dlq-Replays 1
// and no other Dlq-* header; the same task failing again and replayed
// again is <id>-r2.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	ctx := context.Background()
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w2"})
	tasks, _ := e.js.Stream(ctx, "TASKS")
	for n, wantID := range []string{"a1-r1", "a1-r2"} {
		items, err := a.List(ctx, dlq.Filter{Types: []string{"alpha"}, Reasons: []dlq.Reason{dlq.Exhausted}})
		if err != nil || len(items) != 1 {
			t.Fatalf("List = %v, %v; want a1 alone", items, err)
		}
		i := items[0]
		if out, err := a.ReplayOne(ctx, i); err != nil || out != dlq.Replayed {
			t.Fatalf("ReplayOne = %v, %v", out, err)
		}
		m, err := tasks.GetLastMsgForSubject(ctx, "tasks.alpha")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"Task-Id": "a1", "Nats-Msg-Id": wantID, "Dlq-Replays": strconv.Itoa(n + 1), "X-Keep": "k"}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Errorf("replay %d: %s = %q, want %q", n+1, k, got, v)
			}
		}
		for k := range m.Header {
			if strings.HasPrefix(k, "Dlq-") && k != "Dlq-Replays" {
				t.Errorf("replay %d kept %s", n+1, k)
			}
		}
		if string(m.Data) != "payload-a1" {
			t.Errorf("replayed body %q", m.Data)
		}
		if _, err := a.Get(ctx, i.Seq); !errors.Is(err, dlq.ErrNotFound) {
			t.Errorf("entry still in the DLQ after replay: %v", err)
		}
		// The replayed task fails again: a worker takes it from TASKS
		// and dead-letters it with the headers it came with.
		if err := tasks.DeleteMsg(ctx, m.Sequence); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, &dlq.Entry{ID: "a1", Type: "alpha", Subject: m.Subject, Seq: m.Sequence,
			Header: m.Header, Payload: m.Data, Reason: dlq.Exhausted}); err != nil {
			t.Fatal(err)
		}
	}
}

// A replay killed after its publish and run again does not queue the task
// twice; one whose result is stored is only removed from the DLQ.
func TestReplayRerunExactlyOnce(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	ctx := context.Background()
	i, _ := a.Get(ctx, 3)
	// The first run got as far as the publish.
	if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: a.ReplaySubject(i), Header: dlq.ReplayHeader(i), Data: i.Data},
		jetstream.WithMsgID(dlq.ReplayMsgID(i))); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReplayOne(ctx, i); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, "TASKS"); n != 1 {
		t.Fatalf("TASKS holds %d copies, want 1", n)
	}
	// b2's result is stored already: replay publishes nothing.
	if _, err := e.js.Publish(ctx, "results.beta.b2", []byte("done")); err != nil {
		t.Fatal(err)
	}
	j, _ := a.Get(ctx, 4)
	if out, err := a.ReplayOne(ctx, j); err != nil || out != dlq.AlreadyDone {
		t.Fatalf("Replay = %v, %v; want AlreadyDone", out, err)
	}
	if n := e.count(t, "TASKS"); n != 1 {
		t.Fatalf("TASKS holds %d, want 1", n)
	}
	if got := ids(t, a, dlq.Filter{}); !slices.Equal(got, []string{"a1", "a2", "c1"}) {
		t.Fatalf("left in the DLQ: %v", got)
	}
}

func TestPurgeAndUsage(t *testing.T) {
	e := newEnv(t)
	a := fill(t, e)
	ctx := context.Background()
	if err := a.Scan(ctx, dlq.Filter{Types: []string{"alpha"}}, func(i *dlq.Item) error { return a.PurgeOne(ctx, i) }); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, a, dlq.Filter{}); !slices.Equal(got, []string{"b1", "b2", "c1"}) {
		t.Fatalf("after purge: %v", got)
	}
	used, limit, err := dlq.Usage(ctx, e.js, e.topo)
	if err != nil || used == 0 || limit != 0 {
		t.Fatalf("Usage = %d, %d, %v; want bytes used and no limit", used, limit, err)
	}
}

// DLQ stream gone: Write fails, so the caller keeps the task.
func TestWriteFailsWithoutStream(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "DLQ"); err != nil {
		t.Fatal(err)
	}
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := w.Write(ctx, &dlq.Entry{ID: "x", Type: "t", Subject: "tasks.t", Seq: 1, Reason: dlq.Poison})
	if err == nil {
		t.Fatal("Write succeeded with no DLQ stream")
	}
}

// A replay is a new trace linked to the failed task's, and the replayed
// task carries the replay's context.
func TestReplayLinkedToFailedTrace(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const failedTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo})
	if err := w.Write(ctx, &dlq.Entry{ID: "tr", Type: "t", Subject: "tasks.t", Seq: 1, Reason: dlq.Exhausted,
		Header: nats.Header{"traceparent": {"00-" + failedTrace + "-00f067aa0ba902b7-01"}}}); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prop := propagation.TraceContext{}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo, dlq.WithTracing(tp.Tracer("t"), prop))
	if err != nil {
		t.Fatal(err)
	}
	i, _ := a.Get(ctx, 1)
	if _, err := a.ReplayOne(ctx, i); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || len(spans[0].Links) != 1 || spans[0].Links[0].SpanContext.TraceID().String() != failedTrace {
		t.Fatalf("replay spans %+v: want one, linked to the failed trace", spans)
	}
	replay := spans[0]
	if replay.SpanContext.TraceID().String() == failedTrace || replay.Parent.IsValid() {
		t.Fatal("the replay span is parented by the failed trace instead of linked")
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	m, err := tasks.GetLastMsgForSubject(ctx, "tasks.t")
	if err != nil {
		t.Fatal(err)
	}
	if tp := m.Header.Get("traceparent"); !strings.Contains(tp, replay.SpanContext.TraceID().String()) {
		t.Fatalf("replayed task traceparent %q, want the replay's trace", tp)
	}
}

type deadlineCase struct {
	id         string
	reason     dlq.Reason
	header     nats.Header
	wantHeader string // Task-Deadline of the replayed task
}

// An expired task replayed with its Task-Deadline would be dead-lettered
// again at once: its replay drops the deadline (and the summary counts
// it); a task dead-lettered for another reason keeps its own.
func TestReplayExpiredDropsDeadline(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	tests := []deadlineCase{
		{"late", dlq.Expired, nats.Header{"Task-Deadline": {past}}, ""},
		{"oddcase", dlq.Expired, nats.Header{"task-deadline": {past}}, ""},
		{"undated", dlq.Expired, nats.Header{}, ""},
		{"failed", dlq.Exhausted, nats.Header{"Task-Deadline": {past}}, past},
	}
	for k, tc := range tests {
		tc.header.Set("Task-Id", tc.id)
		if err := w.Write(ctx, &dlq.Entry{ID: tc.id, Type: "dl", Subject: "tasks.dl", Seq: uint64(k + 1),
			Header: tc.header, Payload: []byte(tc.id), Reason: tc.reason}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := a.Replay(ctx, dlq.ReplayOptions{})
	if err != nil || sum.Replayed != len(tests) || sum.DeadlinesDropped != 2 {
		t.Fatalf("Replay = %+v, %v; want %d replayed, 2 deadlines dropped", sum, err, len(tests))
	}
	tasks, err := e.js.Stream(ctx, "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= uint64(len(tests)); seq++ {
		m, err := tasks.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get("Task-Id")
		k := slices.IndexFunc(tests, func(tc deadlineCase) bool { return tc.id == id })
		if k < 0 {
			t.Fatalf("replayed an unknown task %q", id)
		}
		var got []string
		for key, v := range m.Header {
			if strings.EqualFold(key, "Task-Deadline") {
				got = append(got, v...)
			}
		}
		if want := tests[k].wantHeader; strings.Join(got, ",") != want {
			t.Errorf("%s (%s): replayed Task-Deadline %q, want %q", id, tests[k].reason, got, want)
		}
		// What a worker would make of it: only the one that failed for
		// another reason is still expired.
		tk, err := task.Parse(m.Subject, "dl", m.Header, m.Data, m.Sequence, task.ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tk.Expired(time.Now()), tests[k].wantHeader != ""; got != want {
			t.Errorf("%s: replayed task expired %v, want %v", id, got, want)
		}
	}
}

// A poison entry keeps the Task-Id it came with, whatever it is: an id
// such as ">" must not be read as a subject wildcard that finds another
// task's result and removes the entry as already done.
func TestReplayWildcardIDNotTakenForDone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.Publish(ctx, "results.alpha.other", []byte("done")); err != nil {
		t.Fatal(err)
	}
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	for k, id := range []string{">", "*", "a.b", "a b", ""} {
		if err := w.Write(ctx, &dlq.Entry{ID: strconv.Itoa(k + 1), Type: "alpha", Subject: "tasks.alpha", Seq: uint64(k + 1),
			Header: nats.Header{"Task-Id": {id}, "Nats-Msg-Id": {"m" + strconv.Itoa(k)}}, Reason: dlq.Poison}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	sum, err := a.Replay(ctx, dlq.ReplayOptions{DryRun: true, Parallel: 1, OnEntry: func(i *dlq.Item, out dlq.Outcome, err error) {
		got = append(got, i.ID()+" "+out.String())
	}})
	if err != nil || sum.Replayed != 5 || sum.Skipped != 0 {
		t.Fatalf("dry replay %+v, %v: %q; want every entry replayed, none skipped", sum, err, got)
	}
	if sum, err := a.Replay(ctx, dlq.ReplayOptions{}); err != nil || sum.Replayed != 5 || e.count(t, "TASKS") != 5 {
		t.Fatalf("replay %+v, %v, TASKS %d; want the 5 tasks back", sum, err, e.count(t, "TASKS"))
	}
}
