package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/dlq"
)

// Dead-lettering and replay throughput beside the raw JetStream publish
// they are made of, on one server in one run (each is one acknowledged
// publish per task; replay adds a result lookup and a delete):
//
//	go test -run '^$' -bench . -benchtime 5000x -count 5 ./dlq/
func BenchmarkDLQ(b *testing.B) {
	payload := make([]byte, 128)
	b.Run("impl=raw-publish", func(b *testing.B) {
		e := newEnv(b)
		ctx := context.Background()
		i := 0
		for b.Loop() {
			i++
			if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: "dlq.bench", Data: payload}, jetstream.WithMsgID(fmt.Sprint("r", i))); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	b.Run("impl=dead-letter", func(b *testing.B) {
		e := newEnv(b)
		w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
		ctx := context.Background()
		i := 0
		for b.Loop() {
			i++
			id := fmt.Sprint("t", i)
			if err := w.Write(ctx, &dlq.Entry{ID: id, Type: "bench", Subject: "tasks.bench", Seq: uint64(i),
				Header: nats.Header{"Task-Id": {id}}, Payload: payload, Reason: dlq.Exhausted, Err: errors.New("503"),
				Attempts: 3, Backends: []string{"svc"}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	b.Run("impl=replay", func(b *testing.B) {
		e := newEnv(b)
		w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w"})
		ctx := context.Background()
		for i := range b.N {
			id := fmt.Sprint("t", i)
			if err := w.Write(ctx, &dlq.Entry{ID: id, Type: "bench", Subject: "tasks.bench", Seq: uint64(i + 1),
				Header: nats.Header{"Task-Id": {id}}, Payload: payload, Reason: dlq.Exhausted}); err != nil {
				b.Fatal(err)
			}
		}
		a, err := dlq.NewAdmin(ctx, e.js, e.topo)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		// As publisher dlq replay does: scan, then 16 replays at once.
		var items []*dlq.Item
		if err := a.Scan(ctx, dlq.Filter{}, func(i *dlq.Item) error {
			items = append(items, i)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if len(items) != b.N {
			b.Fatalf("scanned %d of %d", len(items), b.N)
		}
		next := make(chan *dlq.Item)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for i := range next {
					if _, err := a.Replay(ctx, i); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for _, i := range items {
			next <- i
		}
		close(next)
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
}
