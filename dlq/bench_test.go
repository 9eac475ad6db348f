package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/dlq"
)

// Dead-lettering and replay throughput beside the raw JetStream publish
// they are made of, each on its own embedded server in one run, so that
// the ratios mean something on any machine (dead-lettering is one
// acknowledged publish per task; replay adds a result lookup and a
// delete, 16 entries at a time):
//
//	go test -run '^$' -bench . -benchtime 5000x -count 5 ./dlq/

var benchPayload = make([]byte, 128)

// BenchmarkRawPublish is one acknowledged JetStream publish with a
// Nats-Msg-Id, one after the other: the yardstick of the two below.
func BenchmarkRawPublish(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: "dlq.bench", Data: benchPayload}, jetstream.WithMsgID(fmt.Sprint("r", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkDeadLetter is Writer.Write, one task after the other, as one
// worker goroutine dead-letters.
func BenchmarkDeadLetter(b *testing.B) {
	e := newEnv(b)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprint("t", i)
		if err := w.Write(ctx, &dlq.Entry{ID: id, Type: "bench", Subject: "tasks.bench", Seq: uint64(i),
			Header: nats.Header{"Task-Id": {id}}, Payload: benchPayload, Reason: dlq.Exhausted, Err: errors.New("503"),
			Attempts: 3, Backends: []string{"svc"}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkReplay is Admin.Replay of b.N entries, as publisher dlq replay
// runs it (select, then 16 at once), without a rate.
func BenchmarkReplay(b *testing.B) {
	e := newEnv(b)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
	ctx := context.Background()
	for i := range b.N {
		id := fmt.Sprint("t", i)
		if err := w.Write(ctx, &dlq.Entry{ID: id, Type: "bench", Subject: "tasks.bench", Seq: uint64(i + 1),
			Header: nats.Header{"Task-Id": {id}}, Payload: benchPayload, Reason: dlq.Exhausted}); err != nil {
			b.Fatal(err)
		}
	}
	a, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	sum, err := a.Replay(ctx, dlq.ReplayOptions{})
	if err != nil || sum.Replayed != b.N {
		b.Fatalf("Replay = %+v, %v; want %d replayed", sum, err, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
