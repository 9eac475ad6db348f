package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/internal/testkit"
)

func TestHistoryAcrossDeliveries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h, err := dlq.EnsureHistory(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)
	first := dlq.NewRecord(1, "a", "transient", 503, time.Millisecond, at, "w1", nil)
	second := dlq.NewRecord(2, "b", "transient", 0, time.Second, at.Add(time.Second), "w2", nil)
	if err := h.Append(ctx, 7, []dlq.Record{first}); err != nil {
		t.Fatal(err)
	}
	if err := h.Append(ctx, 7, []dlq.Record{second}); err != nil {
		t.Fatal(err)
	}
	got, err := h.Load(ctx, 7)
	if err != nil || len(got) != 2 || got[0].Worker != "w1" || got[1].Backend != "b" {
		t.Fatalf("Load = %+v, %v; want the two deliveries in order", got, err)
	}
	if err := h.Delete(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if got, err := h.Load(ctx, 7); err != nil || len(got) != 0 {
		t.Fatalf("after Delete: %v, %v", got, err)
	}
}

func TestHistoryHeaderBounded(t *testing.T) {
	w := dlq.NewWriter(nil, dlq.WriterOptions{Worker: "w"})
	var recs []dlq.Record
	for i := range 200 {
		recs = append(recs, dlq.NewRecord(i/3+1, "backend", "transient", 503, time.Millisecond, time.Now(), "worker-1",
			errString("GET https://api.local/run?token=abc said no, at length, at length, at length")))
	}
	h := w.Header(&dlq.Entry{ID: "x", Type: "t", History: recs})
	v := h.Get(dlq.HeaderHistory)
	if len(v) == 0 || len(v) > dlq.MaxHistoryLen {
		t.Fatalf("Dlq-History is %d bytes, want 1..%d", len(v), dlq.MaxHistoryLen)
	}
	kept, err := dlq.DecodeHistory(v)
	if err != nil {
		t.Fatal(err)
	}
	if kept[len(kept)-1] != recs[len(recs)-1] {
		t.Error("the most recent attempt was not kept")
	}
	if d := h.Get(dlq.HeaderHistoryDropped); d == "" || len(kept)+atoi(t, d) != len(recs) {
		t.Errorf("kept %d + dropped %q != %d", len(kept), d, len(recs))
	}
	if contains(v, "abc") {
		t.Error("a token reached the history")
	}
}

// A task whose every delivery ends without an outcome (nobody acks it) is
// moved to the DLQ as max_deliveries, once, even with two watchers.
func TestCrashLoopToDLQ(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 300 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1"})
	hist, err := dlq.EnsureHistory(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		watcher, err := dlq.NewCrashLoopWatcher(ctx, dlq.CrashLoopOptions{
			JS: e.js, Topology: e.topo, Consumer: "workers", Writer: w, History: hist,
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- watcher.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: "tasks.boom", Header: nats.Header{"Task-Id": {"crash1"}}, Data: []byte("payload")}
	ack, err := e.js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	// Its first delivery failed a call before the worker hung.
	rec := dlq.NewRecord(1, "svc", dlq.ClassTransient, 503, time.Millisecond, time.Now(), "w0", errString("status 503"))
	if err := hist.Append(ctx, ack.Sequence, []dlq.Record{rec}); err != nil {
		t.Fatal(err)
	}
	// A worker that dies on every delivery: it fetches and never answers.
	for range 2 {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range batch.Messages() {
		}
	}
	// The server notices the limit when a pull asks for more, as a running
	// worker always does.
	if batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
		for m := range batch.Messages() {
			t.Fatalf("delivered beyond max_deliver: %s", m.Subject())
		}
	}
	testkit.Eventually(t, 10*time.Second, "task moved to the DLQ", func() (bool, string) { return e.count(t, "DLQ") == 1 && e.count(t, "TASKS") == 0, "" })
	s, _ := e.js.Stream(ctx, "DLQ")
	m, err := s.GetLastMsgForSubject(ctx, "dlq.boom")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("Dlq-Reason"); got != "max_deliveries" || m.Header.Get("Task-Id") != "crash1" ||
		m.Header.Get("Dlq-Attempts") != "2" || string(m.Data) != "payload" {
		t.Fatalf("DLQ copy: reason %q, id %q, attempts %q, data %q", got, m.Header.Get("Task-Id"), m.Header.Get("Dlq-Attempts"), m.Data)
	}
	recs, err := dlq.DecodeHistory(m.Header.Get(dlq.HeaderHistory))
	if err != nil || len(recs) != 1 || recs[0].Worker != "w0" || m.Header.Get("Dlq-Backends") != "svc" {
		t.Fatalf("DLQ copy history %v (%v), backends %q; want the recorded call", recs, err, m.Header.Get("Dlq-Backends"))
	}
	// Forgotten last, after the task left TASKS.
	testkit.Eventually(t, 10*time.Second, "the history forgotten after the move", func() (bool, string) {
		left, err := hist.Load(ctx, ack.Sequence)
		return err == nil && len(left) == 0, ""
	})
	// The same advisory handled again (a redelivered advisory, a second
	// watcher): the task is gone, nothing more happens.
	again, err := dlq.NewCrashLoopWatcher(ctx, dlq.CrashLoopOptions{JS: e.js, Topology: e.topo,
		Consumer: "workers", Writer: w, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Handle(ctx, ack.Sequence, 2); err != nil || e.count(t, "DLQ") != 1 {
		t.Fatalf("second Handle: %v, DLQ %d; want nil and one entry", err, e.count(t, "DLQ"))
	}
}

// giveUp delivers the task with Task-Id id until the consumer gives up on
// it (max deliveries, never answered), as a worker that dies on it would;
// every other task it sees it puts off for an hour, so that those stay
// ack-pending, and returns them. others is how many such tasks there are:
// the server has given up on id when only they are ack-pending.
func giveUp(t *testing.T, cons jetstream.Consumer, id string, maxDeliver, others int) []jetstream.Msg {
	t.Helper()
	var putOff []jetstream.Msg
	deliveries := 0
	testkit.Eventually(t, 15*time.Second, fmt.Sprintf("%s delivered %d times", id, maxDeliver), func() (bool, string) {
		batch, err := cons.Fetch(4, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if m.Headers().Get("Task-Id") == id {
				deliveries++
				continue
			}
			if err := m.NakWithDelay(time.Hour); err != nil {
				t.Fatal(err)
			}
			putOff = append(putOff, m)
		}
		return deliveries >= maxDeliver, fmt.Sprintf("%s delivered %d times, want %d", id, deliveries, maxDeliver)
	})
	testkit.Eventually(t, 10*time.Second, id+" given up", func() (bool, string) {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == others, ""
	})
	return putOff
}

// publishTask stores a task in TASKS and returns its sequence.
func publishTask(t *testing.T, e *env, id string, data []byte) uint64 {
	t.Helper()
	ack, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: "tasks.boom", Header: nats.Header{"Task-Id": {id}}, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// runWatcher starts a watcher and stops it at the end of the test.
func runWatcher(t *testing.T, e *env, o dlq.CrashLoopOptions) *dlq.CrashLoopWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o.JS, o.Topology, o.Consumer = e.js, e.topo, "workers"
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w, err := dlq.NewCrashLoopWatcher(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return w
}

func dlqEntry(t *testing.T, e *env, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(context.Background(), "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Every worker is down when the task reaches its limit: the server's
// advisory waits in ADVISORIES, and a watcher started later moves the
// task. Another task stays ack-pending throughout, so the reconcile has no
// part in it: this is the advisory's path alone.
func TestAdvisoryHandledByLaterWatcher(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	seq := publishTask(t, e, "lost", []byte("payload"))
	publishTask(t, e, "busy", nil)
	giveUp(t, cons, "lost", 2, 1)
	adv, _ := e.js.Stream(ctx, "ADVISORIES")
	testkit.Eventually(t, 10*time.Second, "the advisory stored with no watcher", func() (bool, string) {
		info, err := adv.Info(ctx)
		return err == nil && info.State.Msgs == 1, ""
	})
	if n := e.count(t, "DLQ"); n != 0 {
		t.Fatalf("DLQ holds %d before any watcher ran", n)
	}
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "late"})
	runWatcher(t, e, dlq.CrashLoopOptions{Writer: w})
	testkit.Eventually(t, 10*time.Second, "the task in the DLQ", func() (bool, string) { return e.count(t, "DLQ") == 1, "" })
	m := dlqEntry(t, e, "dlq.boom")
	if m.Header.Get("Task-Id") != "lost" || m.Header.Get("Dlq-Reason") != "max_deliveries" || string(m.Data) != "payload" ||
		!strings.Contains(m.Header.Get("Dlq-Error"), "delivered 2 times") || m.Header.Get("Dlq-Original-Seq") != fmt.Sprint(seq) {
		t.Fatalf("DLQ copy %v %q", m.Header, m.Data)
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	testkit.Eventually(t, 10*time.Second, "the task gone from TASKS", func() (bool, string) {
		_, err := tasks.GetMsg(ctx, seq)
		return errors.Is(err, jetstream.ErrMsgNotFound), ""
	})
	// The advisory is acknowledged once the move is done.
	ac, err := e.js.Consumer(ctx, "ADVISORIES", dlq.DefaultCrashLoopConsumer)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the advisory acknowledged", func() (bool, string) {
		info, err := ac.Info(ctx)
		return err == nil && info.AckFloor.Stream == 1 && info.NumAckPending == 0, ""
	})
	if n := e.count(t, "TASKS"); n != 1 {
		t.Fatalf("TASKS holds %d, want the busy task alone", n)
	}
}

// A task given up while no stream captured advisories (ADVISORIES did not
// exist yet, as on an installation upgraded while tasks were looping): no
// advisory at all, and the reconcile at the watcher's start finds it.
func TestReconcileFindsStrandedTask(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "ADVISORIES"); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	seq := publishTask(t, e, "stranded", []byte("s"))
	giveUp(t, cons, "stranded", 2, 0)
	if err := bus.EnsureStreams(ctx, e.js, e.topo); err != nil {
		t.Fatal(err)
	}
	// A task published afterwards and never delivered is not stranded.
	fresh := publishTask(t, e, "fresh", nil)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	runWatcher(t, e, dlq.CrashLoopOptions{Writer: w, ReconcileSettle: 50 * time.Millisecond})
	testkit.Eventually(t, 10*time.Second, "the stranded task in the DLQ", func() (bool, string) { return e.count(t, "DLQ") == 1, "" })
	m := dlqEntry(t, e, "dlq.boom")
	if m.Header.Get("Task-Id") != "stranded" || m.Header.Get("Dlq-Reason") != "max_deliveries" ||
		!strings.Contains(m.Header.Get("Dlq-Error"), "no advisory") || m.Header.Get("Dlq-Attempts") != "2" {
		t.Fatalf("DLQ copy %v", m.Header)
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	testkit.Eventually(t, 10*time.Second, "the stranded task gone from TASKS (deleted after its copy is stored)", func() (bool, string) {
		_, err := tasks.GetMsg(ctx, seq)
		return errors.Is(err, jetstream.ErrMsgNotFound), ""
	})
	if _, err := tasks.GetMsg(ctx, fresh); err != nil {
		t.Fatalf("the fresh task was taken: %v", err)
	}
	if info, _ := e.js.Stream(ctx, "ADVISORIES"); info.CachedInfo().State.Msgs != 0 {
		t.Fatal("an advisory was captured after all: the test does not test the reconcile")
	}
}

// The reconcile never takes a task some worker may still settle: while
// anything is ack-pending it does nothing; once nothing is, it moves the
// given-up task and only that one.
func TestReconcileLeavesPendingAlone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "ADVISORIES"); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	stranded := publishTask(t, e, "stranded", nil)
	publishTask(t, e, "pending", nil)
	putOff := giveUp(t, cons, "stranded", 2, 1)
	if err := bus.EnsureStreams(ctx, e.js, e.topo); err != nil {
		t.Fatal(err)
	}
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	watcher, err := dlq.NewCrashLoopWatcher(ctx, dlq.CrashLoopOptions{JS: e.js, Topology: e.topo, Consumer: "workers",
		Writer: w, ReconcileSettle: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := watcher.Reconcile(ctx); err != nil || n != 0 {
		t.Fatalf("Reconcile with a task pending = %d, %v; want 0", n, err)
	}
	if e.count(t, "DLQ") != 0 || e.count(t, "TASKS") != 2 {
		t.Fatal("the reconcile acted while a task was pending")
	}
	// A worker settles the pending task.
	if len(putOff) != 1 {
		t.Fatalf("%d tasks put off, want 1", len(putOff))
	}
	// The client refuses to ack a message it naked; the server does not.
	if _, err := e.nc.Request(putOff[0].Reply(), []byte("+ACK"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	n, err := watcher.Reconcile(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Reconcile after = %d, %v; want 1", n, err)
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	if _, err := tasks.GetMsg(ctx, stranded); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("stranded task still in TASKS: %v", err)
	}
	if m := dlqEntry(t, e, "dlq.boom"); m.Header.Get("Task-Id") != "stranded" {
		t.Fatalf("DLQ holds %s", m.Header.Get("Task-Id"))
	}
}

// A move that fails (the DLQ stream is gone) leaves the task in TASKS and
// the advisory unacknowledged; it is tried again later, and the task moved
// once the DLQ is back.
func TestAdvisoryRetriedAfterFailure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.js.DeleteStream(ctx, "DLQ"); err != nil {
		t.Fatal(err)
	}
	seq := publishTask(t, e, "retried", []byte("r"))
	publishTask(t, e, "busy", nil)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	runWatcher(t, e, dlq.CrashLoopOptions{Writer: w, RetryDelay: 50 * time.Millisecond, HandleTimeout: 500 * time.Millisecond})
	giveUp(t, cons, "retried", 2, 1)
	ac, err := e.js.Consumer(ctx, "ADVISORIES", dlq.DefaultCrashLoopConsumer)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the advisory tried more than once", func() (bool, string) {
		info, err := ac.Info(ctx)
		return err == nil && info.NumRedelivered > 0, ""
	})
	tasks, _ := e.js.Stream(ctx, "TASKS")
	if _, err := tasks.GetMsg(ctx, seq); err != nil {
		t.Fatalf("the task left TASKS while its DLQ copy could not be stored: %v", err)
	}
	if err := bus.EnsureStreams(ctx, e.js, e.topo); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the task in the DLQ after the retry", func() (bool, string) { return e.count(t, "DLQ") == 1, "" })
	testkit.Eventually(t, 10*time.Second, "the task gone from TASKS", func() (bool, string) {
		_, err := tasks.GetMsg(ctx, seq)
		return errors.Is(err, jetstream.ErrMsgNotFound), ""
	})
	if m := dlqEntry(t, e, "dlq.boom"); m.Header.Get("Task-Id") != "retried" || string(m.Data) != "r" {
		t.Fatalf("DLQ copy %v %q", m.Header, m.Data)
	}
}

// The stranded case of issue 13: a task near the server's max_payload that
// crash-loops, with a long attempt history, is moved to the DLQ, and its
// payload comes back.
func TestCrashLoopNearMaxPayload(t *testing.T) {
	e := newSmallEnv(t)
	ctx := context.Background()
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	hist, err := dlq.EnsureHistory(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(strings.Repeat("p", smallMaxPayload-100))
	seq := publishTask(t, e, "huge", payload)
	if err := hist.Append(ctx, seq, history(30)); err != nil {
		t.Fatal(err)
	}
	w, err := dlq.EnsureWriter(ctx, e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w", MaxPayload: e.nc.MaxPayload()})
	if err != nil {
		t.Fatal(err)
	}
	runWatcher(t, e, dlq.CrashLoopOptions{Writer: w, History: hist})
	giveUp(t, cons, "huge", 2, 0)
	testkit.Eventually(t, 10*time.Second, "the task in the DLQ", func() (bool, string) { return e.count(t, "DLQ") == 1, "" })
	m := dlqEntry(t, e, "dlq.boom")
	got, err := dlq.LoadPayload(ctx, e.js, e.topo, m.Header, m.Data)
	if err != nil || string(got) != string(payload) {
		t.Fatalf("payload back: %d bytes, %v; want %d", len(got), err, len(payload))
	}
	if recs, err := dlq.DecodeHistory(m.Header.Get(dlq.HeaderHistory)); err != nil || len(recs) == 0 {
		t.Fatalf("history %d records, %v; want the recorded ones", len(recs), err)
	}
	testkit.Eventually(t, 10*time.Second, "TASKS empty", func() (bool, string) { return e.count(t, "TASKS") == 0, "" })
}

// Records appended to the history are redacted with the configured
// headers too, so the bucket never keeps such a secret.
func TestHistoryRedactsConfiguredHeaders(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, RedactHeaders: []string{"X-Tenant-Key"}})
	h, err := dlq.EnsureHistory(ctx, e.js, e.topo, dlq.WithHistoryRedaction(w.Headers()))
	if err != nil {
		t.Fatal(err)
	}
	rec := dlq.NewRecord(1, "a", dlq.ClassPermanent, 401, time.Millisecond, time.Now(), "w",
		errString("401: X-Tenant-Key: tk-42 refused, Cookie: c=1"))
	if err := h.Append(ctx, 3, []dlq.Record{rec}); err != nil {
		t.Fatal(err)
	}
	got, err := h.Load(ctx, 3)
	if err != nil || len(got) != 1 {
		t.Fatalf("Load = %v, %v", got, err)
	}
	if strings.Contains(got[0].Error, "tk-42") || strings.Contains(got[0].Error, "c=1") ||
		!strings.Contains(got[0].Error, "X-Tenant-Key: REDACTED") {
		t.Fatalf("stored error %q", got[0].Error)
	}
}
