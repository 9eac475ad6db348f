package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// asyncWindow bounds the publishes awaiting their ack. Past it,
// PublishMsgAsync stalls: the server's pace sets ours and nothing is
// dropped or buffered without limit.
const asyncWindow = 4096

// batchLine is one line of a `publish --file` input.
type batchLine struct {
	Type    string            `json:"type"`
	Data    json.RawMessage   `json:"data"`
	ID      string            `json:"id"`
	Headers map[string]string `json:"headers"`
}

// parseLine decodes one JSON Lines task into a message for topo. Unknown
// fields are errors, so a typo ("hedaers") is reported instead of silently
// publishing a task without its headers. common holds the --header flags;
// the line's own headers win over them.
func parseLine(line []byte, topo bus.Topology, common nats.Header) (*nats.Msg, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var bl batchLine
	if err := dec.Decode(&bl); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: more than one value on the line")
	}
	if bl.Type == "" {
		return nil, errors.New(`missing "type"`)
	}
	if err := validType(bl.Type); err != nil {
		return nil, err
	}
	if bl.ID == "" {
		bl.ID = nuid.Next()
	} else if err := task.ValidID(bl.ID); err != nil {
		return nil, err
	}
	data, err := payload(bl.Data)
	if err != nil {
		return nil, err
	}
	hdr := make(nats.Header, len(common)+len(bl.Headers)+2)
	for k, v := range common {
		hdr[k] = append([]string(nil), v...)
	}
	for k, v := range bl.Headers {
		if err := checkHeader(k, v); err != nil {
			return nil, err
		}
		hdr.Set(k, v)
	}
	hdr.Set(task.HeaderID, bl.ID)
	hdr.Set(task.HeaderMsgID, bl.ID)
	return &nats.Msg{Subject: topo.TaskSubject(bl.Type), Header: hdr, Data: data}, nil
}

// payload maps a line's "data" to task bytes: a JSON string is sent as its
// text (the common case of a prompt), null or absent as nothing, and any
// other value as its JSON.
func payload(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		return []byte(s), nil
	}
	return raw, nil
}

// batchCounts is the outcome of a batch publish.
type batchCounts struct {
	tasks, stored, duplicates, failed int
}

// publishFile publishes every line of pf.file asynchronously. The reading
// goroutine publishes; a collector goroutine, owned by this function and
// awaited before it returns, reads the acks in order.
func (a *app) publishFile(ctx context.Context, pf publishFlags) error {
	common, err := parseHeaders(pf.headers)
	if err != nil {
		return err
	}
	if common.Get(task.HeaderReplyTo) != "" {
		return usagef("publish --file: a shared %s would mix the replies of every task", task.HeaderReplyTo)
	}
	topo, err := a.topology()
	if err != nil {
		return err
	}
	in := a.stdin
	if pf.file != "-" {
		f, err := os.Open(pf.file)
		if err != nil {
			return fmt.Errorf("open tasks: %w", err)
		}
		defer f.Close()
		in = f
	}

	// With OTEL_TRACES_EXPORTER set, every task starts its own trace.
	traces, shutdown, err := a.setupTracing(ctx)
	if err != nil {
		return err
	}
	defer shutdown()

	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	nc, js, err := a.connectJS(cctx, "publish-file",
		jetstream.WithPublishAsyncMaxPending(asyncWindow),
		// Every future resolves: without a timeout a lost ack would hang
		// the summary forever.
		jetstream.WithPublishAsyncTimeout(a.requestTimeout()),
	)
	cancel()
	if err != nil {
		return err
	}
	defer nc.Close()

	c, err := a.runBatch(ctx, js, topo, common, in, traces)
	fmt.Fprintf(a.stdout, "published %d tasks (stored %d, duplicates %d, failed %d)\n",
		c.tasks, c.stored, c.duplicates, c.failed)
	switch {
	case err != nil:
		return err
	case c.failed > 0:
		return fmt.Errorf("%d of %d tasks failed", c.failed, c.tasks)
	}
	return nil
}

// inflight is a published task whose ack is awaited.
type inflight struct {
	line int // its input line (publish --file) or task number (bench)
	paf  jetstream.PubAckFuture
	span trace.Span // its publish span, ended at the ack (publish --file)
}

// runBatch reads tasks from in and publishes them. It returns the counts
// of every task read, and an error only when it stopped early (ctx ended,
// input unreadable); bad lines and failed publishes are counted, reported
// on stderr with their line number, and skipped. Each task has a publish
// span from its publish to its ack; a traceparent in the line's headers
// makes it a child of that trace.
func (a *app) runBatch(ctx context.Context, js jetstream.JetStream, topo bus.Topology, common nats.Header, in io.Reader, traces *tracing.Tracing) (batchCounts, error) {
	var (
		mu sync.Mutex // guards c, written by both goroutines
		c  batchCounts
	)
	fail := func(line int, err error) {
		mu.Lock()
		c.failed++
		mu.Unlock()
		fmt.Fprintf(a.stderr, "publisher: line %d: %v\n", line, oneLine(err.Error()))
	}

	pending := make(chan inflight, asyncWindow)
	var collector sync.WaitGroup
	collector.Go(func() {
		for p := range pending {
			select {
			case ack := <-p.paf.Ok():
				p.span.End()
				mu.Lock()
				if ack.Duplicate {
					c.duplicates++
				} else {
					c.stored++
				}
				mu.Unlock()
			case err := <-p.paf.Err():
				tracing.End(p.span, err)
				fail(p.line, fmt.Errorf("publish: %w", streamHint(err, topo.TasksStream())))
			}
		}
	})

	r := bufio.NewReaderSize(in, 1<<20)
	var stop error
	for lineNo := 1; ; lineNo++ {
		if ctx.Err() != nil {
			stop = errors.New("interrupted")
			break
		}
		// ReadBytes, not a Scanner: a line is as long as its task, with
		// no arbitrary limit that would end the whole batch.
		line, rerr := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			mu.Lock()
			c.tasks++
			mu.Unlock()
			msg, err := parseLine(line, topo, common)
			if err != nil {
				fail(lineNo, err)
			} else if span, paf, err := publishTraced(ctx, js, traces, msg); err != nil {
				fail(lineNo, fmt.Errorf("publish: %w", streamHint(err, topo.TasksStream())))
			} else {
				pending <- inflight{line: lineNo, paf: paf, span: span}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			stop = fmt.Errorf("read tasks: %w", rerr)
			break
		}
	}
	close(pending)
	collector.Wait()
	return c, stop
}

// publishTraced publishes m asynchronously inside a publish span, whose
// context it writes into m's headers; the caller ends the span at the ack.
// A traceparent already in m (given by the user) is the span's parent.
func publishTraced(ctx context.Context, js jetstream.Publisher, traces *tracing.Tracing, m *nats.Msg) (trace.Span, jetstream.PubAckFuture, error) {
	tr, prop := traces.Tracer(), traces.Propagator()
	if traces.Enabled() {
		ctx = tracing.Extract(ctx, prop, m.Header)
	}
	_, span := tracing.StartPublish(ctx, tr, prop, m.Subject, m.Header.Get(task.HeaderMsgID), m.Header, len(m.Data))
	paf, err := publishAsync(ctx, js, m)
	if err != nil {
		tracing.End(span, err)
		return nil, nil, err
	}
	return span, paf, nil
}

// publishAsync publishes m without waiting for its ack. When the window of
// unacknowledged publishes stays full past the client's stall wait, it
// waits for the window to empty and tries again: backpressure, never a
// dropped task. It gives up only when ctx ends.
func publishAsync(ctx context.Context, js jetstream.Publisher, m *nats.Msg) (jetstream.PubAckFuture, error) {
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
