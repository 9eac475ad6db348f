// Command minimal is the ceiling Breakwater's throughput is measured
// against in BENCHMARKS.md: it consumes tasks from the worker's consumer,
// publishes each payload as the result and acks once the result's publish
// is acknowledged, and does nothing else (no parsing, routing, headers or
// failure handling). It is a benchmark anchor, not a product.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
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
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	topo := bus.Topology{}
	if err := bus.EnsureStreams(ctx, js, topo); err != nil {
		return err
	}
	cons, err := bus.EnsureConsumer(ctx, js, topo, bus.ConsumerOptions{})
	if err != nil {
		return err
	}
	type pending struct {
		msg jetstream.Msg
		fut jetstream.PubAckFuture
	}
	acks := make(chan pending, 1024) // bounds unacknowledged results below the client's async limit
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
		id := msg.Headers().Get("Nats-Msg-Id")
		fut, err := js.PublishAsync("results."+typ+"."+id, msg.Data())
		if err != nil {
			_ = msg.Nak()
			return
		}
		acks <- pending{msg, fut}
	}, jetstream.PullMaxMessages(batch))
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
