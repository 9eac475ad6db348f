package pipeline

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/internal/testkit"
)

// TestPullerCountsCorrected: tasks are counted against the oldest open
// request; a request's end, with what it did not deliver, corrects the
// count so that fetching is what may still arrive.
func TestPullerCountsCorrected(t *testing.T) {
	const inbox = "_INBOX.t."
	var got int
	p := newPuller(100, time.Second, slog.New(slog.DiscardHandler), nil, "", func(*nats.Msg) { got++ })
	ask := func(n int) uint64 {
		p.next++
		p.reqs = append(p.reqs, pullReq{token: p.next, remaining: n, deadline: time.Now().Add(time.Hour)})
		p.fetching.Add(int64(n))
		p.open.Add(1)
		return p.next
	}
	task := func(n int) {
		for range n {
			p.receive(inbox, &nats.Msg{Subject: "tasks.x", Data: []byte("x")})
		}
	}
	status := func(token uint64, code string, pending int) {
		h := nats.Header{"Status": {code}}
		if code == "409" {
			h.Set("Description", "Leadership Change")
		}
		if pending >= 0 {
			h.Set("Nats-Pending-Messages", strconv.Itoa(pending))
		}
		p.receive(inbox, &nats.Msg{Subject: inbox + strconv.FormatUint(token, 36), Header: h})
	}
	check := func(step string, fetching, open int) {
		t.Helper()
		if f, o := p.fetching.Load(), p.open.Load(); f != int64(fetching) || o != int64(open) {
			t.Fatalf("%s: fetching %d, open %d; want %d, %d", step, f, o, fetching, open)
		}
	}

	a := ask(10)
	ask(10)
	task(12) // counted: a 10 (complete), b 2; truly a 7, b 5
	check("12 of 20 arrived", 8, 1)
	status(a, "408", 3) // a ended with 3 undelivered: b brought 3 more than counted
	check("a expired", 5, 1)
	task(5)
	check("b complete", 0, 0)

	c, d := ask(10), ask(10)
	task(4)             // counted: c 4; truly c 1, d 3
	status(c, "408", 9) // c brought 1: d brought the other 3
	check("c expired", 7, 1)
	status(d, "408", 7)
	check("d expired", 0, 0)

	e := ask(10)
	task(2)
	status(e, "409", -1) // a leadership change, no count: the rest will not come
	check("e ended", 0, 0)
	if len(p.ended) != 0 {
		t.Errorf("a leadership change reported as an error")
	}
	f := ask(5)
	status(f, "100", -1) // a heartbeat ends nothing
	check("heartbeat", 5, 1)
	p.expire(time.Now().Add(2 * time.Hour)) // lost: the client ends it
	check("f expired", 0, 0)

	if got != 23 {
		t.Errorf("delivered %d tasks, want 23", got)
	}
}

// TestPullerDrainsAStream: a puller over a real consumer delivers every
// task once, and when it stops no request is left open or counted.
func TestPullerDrainsAStream(t *testing.T) {
	nc, js := testkit.StartServer(t).JetStream(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		if _, err := js.PublishAsync("t."+strconv.Itoa(i%7), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]atomic.Int32, n)
	var count atomic.Int64
	var p *puller
	p = newPuller(16, 500*time.Millisecond, slog.New(slog.DiscardHandler), nc, apiPrefixOf(js), func(m *nats.Msg) {
		p.take()
		i, _ := strconv.Atoi(string(m.Data))
		seen[i].Add(1)
		count.Add(1)
		_ = m.Respond(ackAck)
		p.free()
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.run(rctx, c) }()
	testkit.Eventually(t, 20*time.Second, "every task delivered", func() (bool, string) {
		return count.Load() >= n, strconv.FormatInt(count.Load(), 10)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if v := seen[i].Load(); v != 1 {
			t.Fatalf("task %d delivered %d times", i, v)
		}
	}
	if f, o, h := p.fetching.Load(), p.open.Load(), p.held.Load(); f != 0 || o != 0 || h != 0 || len(p.reqs) != 0 {
		t.Errorf("after the drain: fetching %d, open %d, held %d, %d requests", f, o, h, len(p.reqs))
	}
}
