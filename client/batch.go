package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// BatchLine is one line of the JSON Lines batch format PublishBatch reads:
//
//	{"type": "echo", "data": <any JSON value>, "id": "optional", "headers": {"K": "V"}}
//
// A JSON string as data is sent as its text, null or absent as nothing,
// any other value as its JSON. Unknown fields are errors, so that a typo
// ("hedaers") is reported rather than a task published without them.
type BatchLine struct {
	Type    string            `json:"type"`
	Data    json.RawMessage   `json:"data"`
	ID      string            `json:"id"`
	Headers map[string]string `json:"headers"`
}

// BatchSummary counts what PublishBatch did.
type BatchSummary struct {
	// Tasks is the lines read that were not blank.
	Tasks int
	// Stored were stored, Duplicates dropped by the server as repeats
	// of an id within the duplicate window.
	Stored, Duplicates int
	// Failed were bad lines or failed publishes (see WithOnFailure).
	Failed int
}

// BatchOption configures PublishBatch.
type BatchOption func(*batchOptions) error

type batchOptions struct {
	common    nats.Header
	onFailure func(line int, err error)
}

// WithBatchHeader adds the header k: v to every task of the batch
// (repeatable); a line's own headers win over it. Task-Id, Nats-Msg-Id
// and Task-Reply-To (which would mix the replies of every task) are
// refused.
func WithBatchHeader(k, v string) BatchOption {
	return func(o *batchOptions) error {
		if err := checkHeader(k, v); err != nil {
			return err
		}
		if k == task.HeaderReplyTo {
			return invalidf("a shared %s would mix the replies of every task", task.HeaderReplyTo)
		}
		if o.common == nil {
			o.common = nats.Header{}
		}
		o.common.Add(k, v)
		return nil
	}
}

// WithOnFailure is told of every task that failed, by its line number
// (PublishBatch) or its position (PublishTasks), 1 first: bad input or a
// publish the server refused. It may be called
// from another goroutine than PublishBatch's, never concurrently.
func WithOnFailure(fn func(line int, err error)) BatchOption {
	return func(o *batchOptions) error {
		o.onFailure = fn
		return nil
	}
}

// PublishBatch publishes the tasks of a JSON Lines input (see BatchLine)
// asynchronously: at most the async window of publishes await their ack,
// and past it the server's pace sets the batch's (backpressure: nothing is
// dropped, nothing buffered without limit). A bad line or a failed
// publish is counted as failed and reported to WithOnFailure with its
// line number, without stopping the rest. The error is not nil only when
// the batch stopped early: ctx ended (wrapping its error) or the input
// could not be read. Every task's ack is awaited before it returns.
func (c *Client) PublishBatch(ctx context.Context, r io.Reader, opts ...BatchOption) (BatchSummary, error) {
	o, err := batchOpts(opts)
	if err != nil {
		return BatchSummary{}, err
	}
	in := bufio.NewReaderSize(r, 1<<20)
	lineNo := 0
	return c.batch(ctx, o, func() (int, *nats.Msg, error, bool) {
		for {
			// ReadBytes, not a Scanner: a line is as long as its task,
			// with no arbitrary limit that would end the whole batch.
			line, rerr := in.ReadBytes('\n')
			lineNo++
			if len(bytes.TrimSpace(line)) > 0 {
				msg, err := c.parseLine(line, o.common)
				return lineNo, msg, err, true
			}
			if rerr == io.EOF {
				return 0, nil, nil, false
			}
			if rerr != nil {
				return 0, nil, fmt.Errorf("read tasks: %w", rerr), false
			}
		}
	})
}

// Task is one task of PublishTasks.
type Task struct {
	Type string
	// ID is the task id, also its Nats-Msg-Id; empty: a fresh one.
	ID     string
	Header nats.Header
	Data   []byte
}

// PublishTasks publishes tasks as PublishBatch publishes the lines of its
// input, with the same backpressure and counts; WithOnFailure learns the
// position of a failed task in tasks (1 first).
func (c *Client) PublishTasks(ctx context.Context, tasks iter.Seq[Task], opts ...BatchOption) (BatchSummary, error) {
	o, err := batchOpts(opts)
	if err != nil {
		return BatchSummary{}, err
	}
	next, stop := iter.Pull(tasks)
	defer stop()
	n := 0
	return c.batch(ctx, o, func() (int, *nats.Msg, error, bool) {
		t, ok := next()
		if !ok {
			return 0, nil, nil, false
		}
		n++
		msg, err := c.taskMsg(t, o.common)
		return n, msg, err, true
	})
}

func batchOpts(opts []BatchOption) (batchOptions, error) {
	var o batchOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// batch publishes the tasks next yields: each with its number, its message
// or why it has none, until next says there are no more (with an error if
// the input broke off). The collector goroutine reads the acks in order;
// it is owned by this call and awaited before it returns.
func (c *Client) batch(ctx context.Context, o batchOptions, next func() (n int, msg *nats.Msg, err error, ok bool)) (BatchSummary, error) {
	var (
		mu  sync.Mutex // guards sum and serialises onFailure
		sum BatchSummary
	)
	fail := func(n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		sum.Failed++
		if o.onFailure != nil {
			o.onFailure(n, err)
		}
	}
	tasks := c.o.topo.TasksStream()
	pending := make(chan inflight, c.o.asyncWindow)
	var collector sync.WaitGroup
	collector.Go(func() {
		for p := range pending {
			select {
			case ack := <-p.paf.Ok():
				p.span.End()
				mu.Lock()
				if ack.Duplicate {
					sum.Duplicates++
				} else {
					sum.Stored++
				}
				mu.Unlock()
			case err := <-p.paf.Err():
				tracing.End(p.span, err)
				fail(p.line, fmt.Errorf("publish: %w", StreamHint(err, tasks)))
			}
		}
	})

	var stop error
	for {
		if ctx.Err() != nil {
			stop = fmt.Errorf("batch: %w", ctx.Err())
			break
		}
		n, msg, err, ok := next()
		if !ok {
			stop = err
			break
		}
		mu.Lock()
		sum.Tasks++
		mu.Unlock()
		if err != nil {
			fail(n, err)
		} else if span, paf, err := c.publishTraced(ctx, msg); err != nil {
			fail(n, fmt.Errorf("publish: %w", StreamHint(err, tasks)))
		} else {
			pending <- inflight{line: n, paf: paf, span: span}
		}
	}
	close(pending)
	collector.Wait()
	return sum, stop
}

// inflight is a published task whose ack is awaited.
type inflight struct {
	line int
	paf  jetstream.PubAckFuture
	span trace.Span // its publish span, ended at the ack
}

// parseLine decodes one JSON Lines task into a message. common holds the
// batch's headers; the line's own win over them.
func (c *Client) parseLine(line []byte, common nats.Header) (*nats.Msg, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var bl BatchLine
	if err := dec.Decode(&bl); err != nil {
		return nil, invalidf("invalid JSON: %v", err)
	}
	if dec.More() {
		return nil, invalidf("invalid JSON: more than one value on the line")
	}
	if bl.Type == "" {
		return nil, invalidf(`missing "type"`)
	}
	data, err := linePayload(bl.Data)
	if err != nil {
		return nil, err
	}
	t := Task{Type: bl.Type, ID: bl.ID, Data: data, Header: make(nats.Header, len(bl.Headers))}
	for k, v := range bl.Headers {
		t.Header.Set(k, v)
	}
	return c.taskMsg(t, common)
}

// taskMsg checks t and makes its message. common holds the batch's
// headers; the task's own win over them.
func (c *Client) taskMsg(t Task, common nats.Header) (*nats.Msg, error) {
	if err := ValidType(t.Type); err != nil {
		return nil, err
	}
	if t.ID == "" {
		t.ID = nuid.Next()
	} else if err := ValidID(t.ID); err != nil {
		return nil, err
	}
	hdr := make(nats.Header, len(common)+len(t.Header)+2)
	for k, v := range common {
		hdr[k] = append([]string(nil), v...)
	}
	for k, vs := range t.Header {
		for _, v := range vs {
			if err := checkHeader(k, v); err != nil {
				return nil, err
			}
		}
		hdr[k] = append([]string(nil), vs...)
	}
	hdr.Set(task.HeaderID, t.ID)
	hdr.Set(task.HeaderMsgID, t.ID)
	return &nats.Msg{Subject: c.o.topo.TaskSubject(t.Type), Header: hdr, Data: t.Data}, nil
}

// linePayload maps a line's "data" to task bytes: a JSON string is sent as
// its text (the common case of a prompt), null or absent as nothing, and
// any other value as its JSON.
func linePayload(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalidf("data: %v", err)
		}
		return []byte(s), nil
	}
	return raw, nil
}

// publishTraced publishes m asynchronously inside a publish span, whose
// context it writes into m's headers; the caller ends the span at the ack.
// A traceparent already in m (given by the caller) is the span's parent.
func (c *Client) publishTraced(ctx context.Context, m *nats.Msg) (trace.Span, jetstream.PubAckFuture, error) {
	on, tr, prop := c.tracing()
	if on {
		ctx = tracing.Extract(ctx, prop, m.Header)
	}
	_, span := tracing.StartPublish(ctx, tr, prop, m.Subject, m.Header.Get(task.HeaderMsgID), m.Header, len(m.Data))
	paf, err := PublishAsync(ctx, c.js, m)
	if err != nil {
		tracing.End(span, err)
		return nil, nil, err
	}
	return span, paf, nil
}

// PublishAsync publishes m without waiting for its ack. When the window
// of unacknowledged publishes stays full past the client's stall wait, it
// waits for the window to empty and tries again: backpressure, never a
// dropped message. It gives up only when ctx ends.
func PublishAsync(ctx context.Context, js jetstream.Publisher, m *nats.Msg) (jetstream.PubAckFuture, error) {
	for {
		paf, err := js.PublishMsgAsync(m)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return paf, err
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
