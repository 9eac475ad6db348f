package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
)

// installation is a real Breakwater in one process, for the examples and
// the tests: an embedded NATS server with the contract's streams and a
// pipeline worker serving "echo" (the built-in handler) and "fail" (a
// backend that refuses every task, so it is dead-lettered as rejected);
// other types are dead-lettered as no_route.
type installation struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	topo bus.Topology
	stop func()
}

// start brings an installation up; stop brings it down and removes its
// store. The examples cannot take a testing.T, hence errors, not Fatal.
func start(topo bus.Topology) (*installation, error) {
	dir, err := os.MkdirTemp("", "breakwater-client-")
	if err != nil {
		return nil, err
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: dir, NoSyncAlways: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	in := &installation{topo: topo}
	undo := []func(){func() { os.RemoveAll(dir) }, srv.Shutdown}
	in.stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	fail := func(err error) (*installation, error) {
		in.stop()
		return nil, err
	}
	if in.nc, err = nats.Connect(srv.ClientURL()); err != nil {
		return fail(err)
	}
	undo = append(undo, in.nc.Close)
	if in.js, err = jetstream.New(in.nc); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, in.js, topo); err != nil {
		return fail(err)
	}
	cons, err := bus.EnsureConsumer(ctx, in.js, topo, bus.ConsumerOptions{AckWait: 5 * time.Second})
	if err != nil {
		return fail(err)
	}
	echo, err := handlers.Builtin("echo")
	if err != nil {
		return fail(err)
	}
	refuse := handlers.BackendFunc(func(context.Context, *handlers.Request) (*handlers.Response, error) {
		return nil, handlers.Permanent(errors.New("400 bad request"))
	})
	w, err := pipeline.New(ctx, pipeline.Options{
		JS: in.js, Conn: in.nc, Consumer: cons, Topology: topo,
		Router: resilience.NewRouter([]*resilience.Route{
			{Name: "echo", Targets: []resilience.Target{{Name: "echo", Backend: echo}}},
			{Name: "fail", Targets: []resilience.Target{{Name: "refuser", Backend: refuse}}},
		}),
		DLQ:      dlq.NewWriter(in.js, dlq.WriterOptions{Topology: topo, Worker: "w1"}),
		WorkerID: "w1",
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return fail(err)
	}
	// The worker runs until stop, which waits for it.
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	undo = append(undo, func() {
		wcancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
		}
	})
	return in, nil
}

// mustStart is start for the examples: an installation that cannot start
// ends the example.
func mustStart() *installation {
	in, err := start(bus.Topology{})
	if err != nil {
		panic(err)
	}
	return in
}
