package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// The server behaviour (nats-server 2.15.2) the crash-loop watcher and its
// reconcile rely on, checked against the real server. A message of the
// work-queue stream that reaches the consumer's max_deliver:
//   - stays in the stream and is never delivered again;
//   - leaves the consumer's ack-pending set, while a message naked with a
//     delay (or held with InProgress) stays in it;
//   - does NOT move the ack floor past it: the floor stays below a given-up
//     message for good (the server keeps it so that the work queue does not
//     drop the message), so "at or below the ack floor" finds nothing, and
//     the reconcile uses "delivered (at or below Delivered.Stream), still in
//     the stream, while nothing is ack-pending" instead;
//   - makes the server publish the max-deliveries advisory once, which
//     ADVISORIES captures with no subscriber anywhere.
func TestServerMaxDeliverBehaviour(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cons, err := bus.EnsureConsumer(ctx, e.js, e.topo, bus.ConsumerOptions{AckWait: 200 * time.Millisecond, MaxDeliver: 2})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, id := range []string{"given-up", "naked"} {
		ack, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: "tasks.b", Header: nats.Header{"Task-Id": {id}}})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	// given-up: delivered twice, never answered. naked: put off for an hour.
	deliveries := 0
	testkit.Eventually(t, 10*time.Second, "given-up delivered twice", func() (bool, string) {
		batch, err := cons.Fetch(2, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if m.Headers().Get("Task-Id") == "naked" {
				if err := m.NakWithDelay(time.Hour); err != nil {
					t.Fatal(err)
				}
				continue
			}
			deliveries++
		}
		return deliveries >= 2, fmt.Sprintf("delivered %d times", deliveries)
	})
	if deliveries != 2 {
		t.Fatalf("given-up delivered %d times, want 2", deliveries)
	}
	adv, err := e.js.Stream(ctx, "ADVISORIES")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the advisory in ADVISORIES", func() (bool, string) {
		info, err := adv.Info(ctx)
		return err == nil && info.State.Msgs > 0, ""
	})
	m, err := adv.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Stream     string `json:"stream"`
		Consumer   string `json:"consumer"`
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries int    `json:"deliveries"`
	}
	if err := json.Unmarshal(m.Data, &body); err != nil {
		t.Fatal(err)
	}
	if body.Stream != "TASKS" || body.Consumer != "workers" || body.StreamSeq != seqs[0] || body.Deliveries != 2 ||
		m.Subject != "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.workers" {
		t.Fatalf("advisory %s %+v; want TASKS/workers seq %d, 2 deliveries", m.Subject, body, seqs[0])
	}
	// Never delivered again, and published once: more pulls deliver
	// nothing and add no advisory.
	for range 3 {
		if batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond)); err == nil {
			for m := range batch.Messages() {
				t.Fatalf("delivered beyond max_deliver: %s", m.Headers().Get("Task-Id"))
			}
		}
	}
	if info, err := adv.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("ADVISORIES holds %v (%v), want the one advisory", info.State.Msgs, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 1 || info.Delivered.Stream < seqs[1] || info.AckFloor.Stream >= seqs[0] {
		t.Fatalf("consumer: ack pending %d (want 1, the naked one), delivered %d (want >= %d), ack floor %d (want below %d)",
			info.NumAckPending, info.Delivered.Stream, seqs[1], info.AckFloor.Stream, seqs[0])
	}
	tasks, _ := e.js.Stream(ctx, "TASKS")
	for _, seq := range seqs {
		if _, err := tasks.GetMsg(ctx, seq); errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("task %d left TASKS", seq)
		}
	}
}
