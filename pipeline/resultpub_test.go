package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/internal/testkit"
)

// answers records what a resultPublisher told of each delivery.
type answers struct {
	mu     sync.Mutex
	stored map[*delivery]int
	failed map[*delivery]error
}

func newAnswers() *answers {
	return &answers{stored: map[*delivery]int{}, failed: map[*delivery]error{}}
}

func (a *answers) onStored(d *delivery) { a.mu.Lock(); a.stored[d]++; a.mu.Unlock() }
func (a *answers) onFailed(d *delivery, err error) {
	a.mu.Lock()
	a.failed[d] = err
	a.mu.Unlock()
}

func (a *answers) counts() (stored, failed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.stored), len(a.failed)
}

func (a *answers) failure(d *delivery) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed[d]
}

func startPublisher(t *testing.T, nc *nats.Conn, window int, timeout time.Duration, a *answers) *resultPublisher {
	t.Helper()
	p := newResultPublisher(nc, window, timeout, a.onStored, a.onFailed)
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func TestResultPublisherStoresThroughASmallWindow(t *testing.T) {
	nc, js := testkit.StartServer(t).JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}}); err != nil {
		t.Fatal(err)
	}
	a := newAnswers()
	p := startPublisher(t, nc, 4, 30*time.Second, a)
	const n = 512
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range n / 8 {
				msg := &nats.Msg{Subject: fmt.Sprintf("r.%d.%d", g, i), Data: []byte("x")}
				if err := p.publish(ctx, &delivery{}, msg); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	testkit.Eventually(t, 10*time.Second, "every result stored", func() (bool, string) {
		s, f := a.counts()
		return s == n && f == 0, fmt.Sprintf("stored %d, failed %d", s, f)
	})
	for d, c := range a.stored {
		if c != 1 {
			t.Fatalf("delivery %p told stored %d times", d, c)
		}
	}
	if len(p.window) != 0 || len(p.pending) != 0 {
		t.Errorf("left: %d window slots, %d pending", len(p.window), len(p.pending))
	}
	info, err := js.Stream(ctx, "R")
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != n {
		t.Errorf("stream holds %d messages, want %d", got, n)
	}
}

func TestResultPublisherFailures(t *testing.T) {
	nc, js := testkit.StartServer(t).JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 16}); err != nil {
		t.Fatal(err)
	}
	// A core subscriber that never answers: the publish is delivered and
	// no acknowledgement comes.
	silent, err := nc.Subscribe("silent.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Unsubscribe()
	a := newAnswers()
	p := startPublisher(t, nc, 16, time.Second, a)
	cases := []struct {
		subject string
		is      func(error) bool
	}{
		{"small.x", func(err error) bool { return isMaxPayload(err) }},
		{"nostream.x", func(err error) bool { return errors.Is(err, jetstream.ErrNoStreamResponse) }},
		{"silent.x", func(err error) bool { return errors.Is(err, errResultAckTimeout) }},
	}
	ds := make([]*delivery, len(cases))
	for i, c := range cases {
		ds[i] = &delivery{}
		if err := p.publish(ctx, ds[i], &nats.Msg{Subject: c.subject, Data: []byte("a result larger than sixteen bytes")}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "every store failed", func() (bool, string) {
		s, f := a.counts()
		return f == len(cases), fmt.Sprintf("stored %d, failed %d", s, f)
	})
	for i, c := range cases {
		if err := a.failure(ds[i]); !c.is(err) {
			t.Errorf("%s: failed with %v", c.subject, err)
		}
	}
	if s, _ := a.counts(); s != 0 {
		t.Errorf("stored %d, want 0", s)
	}
}

// TestResultPublisherRepublishes: a result whose acknowledgement may have
// been lost (a reconnect) is sent again under its token, and the first
// answer settles it once.
func TestResultPublisherRepublishes(t *testing.T) {
	nc, _ := testkit.StartServer(t).JetStream(t)
	ctx := context.Background()
	got := make(chan *nats.Msg, 4)
	sub, err := nc.Subscribe("held.>", func(m *nats.Msg) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	a := newAnswers()
	p := startPublisher(t, nc, 16, 30*time.Second, a)
	d := &delivery{}
	if err := p.publish(ctx, d, &nats.Msg{Subject: "held.x", Data: []byte("r")}); err != nil {
		t.Fatal(err)
	}
	first := <-got
	p.republishAll()
	second := <-got
	if first.Reply != second.Reply || string(second.Data) != "r" {
		t.Fatalf("republished as %q %q, first %q", second.Reply, second.Data, first.Reply)
	}
	for _, m := range []*nats.Msg{first, second} {
		if err := m.Respond([]byte(`{"stream":"R","seq":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "stored", func() (bool, string) {
		s, f := a.counts()
		return s == 1 && f == 0, fmt.Sprintf("stored %d, failed %d", s, f)
	})
	// The second answer may still be on its way to the handler: it must
	// not settle the delivery again.
	testkit.Consistently(t, 500*time.Millisecond, "stored once", func() (bool, string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.stored[d] == 1, fmt.Sprintf("told stored %d times", a.stored[d])
	})
}

func TestAckError(t *testing.T) {
	cases := []struct {
		data string
		ok   bool
		code jetstream.ErrorCode
	}{
		{`{"stream":"RESULTS","seq":12}`, true, 0},
		{`{"stream":"RESULTS","seq":12,"duplicate":true}`, true, 0},
		{`{"stream":"RESULTS","domain":"hub","seq":3}`, true, 0},
		{`{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"},"stream":"RESULTS","seq":0}`, false, 10054},
		{`{"stream":"R\"error\"","seq":1}`, true, 0},
		{`{"seq":1}`, false, 0},
		{`not json`, false, 0},
		{``, false, 0},
	}
	for _, c := range cases {
		err := ackError([]byte(c.data))
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.data, err)
		}
		var api *jetstream.APIError
		if c.code != 0 && (!errors.As(err, &api) || api.ErrorCode != c.code) {
			t.Errorf("%s: %v, want error code %d", c.data, err, c.code)
		}
	}
}
