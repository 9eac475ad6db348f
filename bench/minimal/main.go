// Command minimal is the ceiling Breakwater's throughput is measured
// against in BENCHMARKS.md: it consumes tasks from the worker's consumer,
// publishes each payload as the result to its own subject
// (results.<type>.<task-id>) and acks once the result's publish is
// acknowledged, and does nothing else (no parsing, routing, headers or
// failure handling). It is a benchmark anchor, not a product.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
)

func main() {
	url := flag.String("nats-url", bus.DefaultURL, "NATS server URL")
	batch := flag.Int("batch", 64, "messages buffered by the pull consumer")
	flag.Parse()
	if err := run(*url, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "minimal:", err)
		os.Exit(1)
	}
}

func run(url string, batch int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	// The server delivers at most maxAckPending unacknowledged tasks, and a
	// task here stays unacknowledged until its result's PubAck: with the
	// hand-off channel and the client's async-publish window above that
	// bound, the Consume callback never blocks, so the client always handles
	// the pull's heartbeats. (With a 1024 channel the anchor itself stalled
	// for 30 s on a 100k backlog, "no heartbeat received": nats.go#1726.)
	// Twice the bound leaves room for redelivered copies.
	const maxAckPending = 10000
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*maxAckPending))
	if err != nil {
		return err
	}
	topo := bus.Topology{}
	if err := bus.EnsureStreams(ctx, js, topo); err != nil {
		return err
	}
	cons, err := bus.EnsureConsumer(ctx, js, topo, bus.ConsumerOptions{MaxAckPending: maxAckPending})
	if err != nil {
		return err
	}
	type pending struct {
		msg jetstream.Msg
		fut jetstream.PubAckFuture
	}
	acks := make(chan pending, 2*maxAckPending)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range acks {
			select {
			case <-p.fut.Ok():
				_ = p.msg.Ack()
			case err := <-p.fut.Err():
				fmt.Fprintln(os.Stderr, "minimal: publish:", err)
				_ = p.msg.Nak()
			}
		}
	}()
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		typ := strings.TrimPrefix(msg.Subject(), "tasks.")
		id, ok := taskID(msg)
		if !ok {
			_ = msg.Term() // a task without a usable id has no result subject
			return
		}
		fut, err := js.PublishAsync("results."+typ+"."+id, msg.Data())
		if err != nil {
			_ = msg.Nak()
			return
		}
		acks <- pending{msg, fut}
	}, jetstream.PullMaxMessages(batch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// Printed so that bench/drain.sh can count heartbeat stalls of the
		// anchor the same way as the worker's.
		fmt.Fprintln(os.Stderr, "minimal: consume:", err)
	}))
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	close(acks)
	<-done
	return nil
}

// taskID names the result subject the way the contract and the worker do:
// Task-Id, else Nats-Msg-Id, else the stream sequence (tasks published by
// `nats bench` carry no id). The stream sequence costs a metadata parse, as
// it does in the worker; ids are not validated beyond that.
func taskID(msg jetstream.Msg) (string, bool) {
	h := msg.Headers()
	if id := h.Get("Task-Id"); id != "" {
		return id, true
	}
	if id := h.Get("Nats-Msg-Id"); id != "" {
		return id, true
	}
	md, err := msg.Metadata()
	if err != nil {
		return "", false
	}
	return strconv.FormatUint(md.Sequence.Stream, 10), true
}
