package dlq_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
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
			Conn: e.nc, JS: e.js, Topology: e.topo, Consumer: "workers", Writer: w, History: hist,
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
	waitFor(t, 10*time.Second, func() bool { return e.count(t, "DLQ") == 1 && e.count(t, "TASKS") == 0 }, "task moved to the DLQ")
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
	if left, err := hist.Load(ctx, ack.Sequence); err != nil || len(left) != 0 {
		t.Fatalf("history kept after the move: %v, %v", left, err)
	}
	// The same advisory handled again (a redelivered advisory, a second
	// watcher): the task is gone, nothing more happens.
	again, err := dlq.NewCrashLoopWatcher(ctx, dlq.CrashLoopOptions{Conn: e.nc, JS: e.js, Topology: e.topo,
		Consumer: "workers", Writer: w, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Handle(ctx, ack.Sequence, 2); err != nil || e.count(t, "DLQ") != 1 {
		t.Fatalf("second Handle: %v, DLQ %d; want nil and one entry", err, e.count(t, "DLQ"))
	}
}
