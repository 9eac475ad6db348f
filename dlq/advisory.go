package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

// CrashLoopOptions configure a CrashLoopWatcher.
type CrashLoopOptions struct {
	Conn     *nats.Conn
	JS       jetstream.JetStream
	Topology bus.Topology
	// Consumer is the durable consumer on TASKS whose advisories to act on.
	Consumer string
	Writer   *Writer
	// History, when set, supplies the attempts recorded before the loop.
	History *History
	Logger  *slog.Logger
}

// CrashLoopWatcher moves tasks that reached the consumer's max_deliver
// without ever reporting an outcome (the worker died, or a backend hung
// it, on every delivery) to the DLQ as max_deliveries. The server no longer
// delivers such a task but keeps it in TASKS and says so with a
// max-deliveries advisory; the watcher reads the task by sequence, stores
// its DLQ copy, then deletes it from TASKS.
//
// Every worker runs one; they share a queue group, so each advisory is
// handled once. Handling is idempotent: the DLQ copy is deduplicated and a
// task already gone is left alone.
type CrashLoopWatcher struct {
	o     CrashLoopOptions
	tasks jetstream.Stream
}

// NewCrashLoopWatcher checks o and opens the TASKS stream.
func NewCrashLoopWatcher(ctx context.Context, o CrashLoopOptions) (*CrashLoopWatcher, error) {
	if o.Conn == nil || o.JS == nil || o.Writer == nil || o.Consumer == "" {
		return nil, errors.New("dlq: crash-loop watcher needs Conn, JS, Writer and Consumer")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s, err := o.JS.Stream(ctx, o.Topology.TasksStream())
	if err != nil {
		return nil, fmt.Errorf("dlq: tasks stream: %w", err)
	}
	return &CrashLoopWatcher{o: o, tasks: s}, nil
}

// AdvisorySubject is the server's max-deliveries advisory for the watched
// consumer.
func (c *CrashLoopWatcher) AdvisorySubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + c.o.Topology.TasksStream() + "." + c.o.Consumer
}

// maxDeliveriesAdvisory is the part of the server's advisory we read.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// Run handles advisories until ctx ends. It subscribes before returning
// any error about the subscription; handling errors are logged and the
// task stays in TASKS (an operator can still find it there).
func (c *CrashLoopWatcher) Run(ctx context.Context) error {
	ch := make(chan *nats.Msg, 256)
	sub, err := c.o.Conn.ChanQueueSubscribe(c.AdvisorySubject(), "breakwater-crash-loop", ch)
	if err != nil {
		return fmt.Errorf("dlq: subscribe %s: %w", c.AdvisorySubject(), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			var adv maxDeliveriesAdvisory
			if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
				c.o.Logger.Warn("unreadable max-deliveries advisory", "err", err)
				continue
			}
			if err := c.Handle(ctx, adv.StreamSeq, adv.Deliveries); err != nil {
				c.o.Logger.Error("crash-looping task not moved to the DLQ", "seq", adv.StreamSeq, "err", err)
			}
		}
	}
}

// Handle moves the task at seq (delivered deliveries times) to the DLQ as
// max_deliveries. A task no longer in TASKS is not an error.
func (c *CrashLoopWatcher) Handle(ctx context.Context, seq uint64, deliveries int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := c.tasks.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled after all, or handled by another worker
	}
	if err != nil {
		return fmt.Errorf("read task %d: %w", seq, err)
	}
	typ, _ := c.o.Topology.TaskType(raw.Subject)
	if typ == "" {
		typ = "_invalid"
	}
	id := raw.Header.Get(task.HeaderID)
	if id == "" {
		id = raw.Header.Get(task.HeaderMsgID)
	}
	if id == "" {
		id = fmt.Sprint(seq)
	}
	e := &Entry{
		ID: id, Type: typ, Subject: raw.Subject, Seq: seq, Header: raw.Header, Payload: raw.Data,
		Reason:   MaxDeliveries,
		Err:      fmt.Errorf("delivered %d times without an outcome: the worker crashed or hung each time", deliveries),
		Attempts: deliveries,
	}
	if c.o.History != nil {
		if recs, err := c.o.History.Load(ctx, seq); err == nil {
			e.History = recs
			e.Backends = backendsOf(recs)
		}
	}
	if err := c.o.Writer.Write(ctx, e); err != nil {
		return err
	}
	if err := c.tasks.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove task %d from %s: %w", seq, c.o.Topology.TasksStream(), err)
	}
	if c.o.History != nil {
		_ = c.o.History.Delete(ctx, seq)
	}
	c.o.Logger.Warn("crash-looping task dead-lettered", "task_id", id, "type", typ, "seq", seq,
		"reason", MaxDeliveries, "deliveries", deliveries)
	return nil
}

func backendsOf(recs []Record) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range recs {
		if !seen[r.Backend] {
			seen[r.Backend] = true
			out = append(out, r.Backend)
		}
	}
	return out
}
