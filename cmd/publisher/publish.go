package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// publishFlags are the local flags of `publish`.
type publishFlags struct {
	id      string
	headers []string
	wait    bool
	file    string
	in      time.Duration // --in: run the task that much later
	at      string        // --at: run it then (RFC 3339)
}

func (a *app) publishCmd() *cobra.Command {
	var pf publishFlags
	cmd := &cobra.Command{
		Use:   "publish TYPE [DATA | @FILE | -]",
		Short: "Publish a task (or many with --file) and print its id",
		Long: `Publish a task of type TYPE to tasks.TYPE and print its id.

The payload is DATA as given, the contents of FILE for @FILE, standard input
for -, or empty. The task id (--id, default a fresh unique id) is sent as both
Task-Id and Nats-Msg-Id, so publishing the same id twice within the stream's
duplicate window stores the task once.

With --wait, the command waits for the result and prints its body instead of
the id; it exits 1 when the task failed or no result came within --timeout.

With --file, each line of FILE (- for standard input) is one task:
{"type": "echo", "data": <any JSON value>, "id": "optional", "headers": {"K": "V"}}.
A JSON string as data is sent as its text; any other value as its JSON.
Tasks are published asynchronously and a summary is printed; a bad line is
reported and counted as failed without stopping the rest.`,
		Example: `  publisher publish echo '{"hello":"world"}'
  publisher publish code.generate @prompt.json --id job-42 --wait --timeout 2m
  echo hi | publisher publish echo - --header Cache-Control=no-cache
  publisher publish --file tasks.jsonl`,
		Args: func(cmd *cobra.Command, args []string) error {
			if pf.file != "" {
				if len(args) > 0 {
					return usagef("publish --file takes no TYPE or DATA")
				}
				return nil
			}
			return argsRange(1, 2, "TYPE [DATA | @FILE | -]")(cmd, args)
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if pf.file != "" {
				for _, name := range []string{"id", "wait", "in", "at"} {
					if flagChanged(cmd.Flags(), name) {
						return usagef("publish --file: --%s applies to one task; give ids in the file", name)
					}
				}
				return a.publishFile(cmd.Context(), pf)
			}
			return a.publishOne(cmd.Context(), args, pf)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&pf.id, "id", "", "task id, [A-Za-z0-9_-] up to 128 bytes (default a fresh unique id)")
	f.StringArrayVar(&pf.headers, "header", nil, "header K=V to send with the task (repeatable); with --file, added to every task")
	f.BoolVar(&pf.wait, "wait", false, "wait for the result and print its body instead of the id")
	f.StringVar(&pf.file, "file", "", "publish the tasks of a JSON Lines file (- for standard input)")
	// Shadows the global --timeout, whose help must speak of every command,
	// to say what it bounds here.
	f.DurationVar(&a.g.timeout, "timeout", 0, "how long to wait for the server to store the task, or with --wait for its result, publish included (default 10s, with --wait 30s)")
	f.DurationVar(&pf.in, "in", 0, "run the task this much later (the server's scheduler publishes it then; never before)")
	f.StringVar(&pf.at, "at", "", "run the task at this RFC 3339 time (never before it)")
	return cmd
}

// reservedHeaders are set by the publisher itself from --id and --wait.
var reservedHeaders = map[string]string{
	task.HeaderID:    "use --id",
	task.HeaderMsgID: "use --id",
}

// parseHeaders turns --header K=V flags into a header, rejecting malformed
// and reserved names.
func parseHeaders(kvs []string) (nats.Header, error) {
	h := nats.Header{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, usagef("--header %q: want K=V", kv)
		}
		if err := checkHeader(k, v); err != nil {
			return nil, usagef("--header: %v", err)
		}
		h.Add(k, v)
	}
	return h, nil
}

// checkHeader validates a user-supplied header and refuses the ones the
// publisher sets itself (task ids), so a task never carries two ids.
func checkHeader(k, v string) error {
	if err := validHeader(k, v); err != nil {
		return err
	}
	if why, ok := reservedHeaders[k]; ok {
		return fmt.Errorf("header %s is set by the publisher; %s", k, why)
	}
	return nil
}

// readData resolves the DATA argument: literal, @FILE or - (stdin).
func (a *app) readData(args []string) ([]byte, error) {
	if len(args) < 2 {
		return nil, nil
	}
	arg := args[1]
	switch {
	case arg == "-":
		b, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return b, nil
	case strings.HasPrefix(arg, "@"):
		b, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		return b, nil
	}
	return []byte(arg), nil
}

func (a *app) publishOne(ctx context.Context, args []string, pf publishFlags) error {
	typ := args[0]
	if err := validType(typ); err != nil {
		return usageError{msg: err.Error()}
	}
	id := pf.id
	if id == "" {
		id = nuid.Next()
	} else if err := task.ValidID(id); err != nil {
		return usagef("--id: %v", err)
	}
	hdr, err := parseHeaders(pf.headers)
	if err != nil {
		return err
	}
	if pf.wait && hdr.Get(task.HeaderReplyTo) != "" {
		return usagef("--wait sets %s itself; drop the --header", task.HeaderReplyTo)
	}
	topo, err := a.topology()
	if err != nil {
		return err
	}
	due, err := pf.due(time.Now())
	if err != nil {
		return err
	}
	data, err := a.readData(args)
	if err != nil {
		return err
	}
	// With OTEL_TRACES_EXPORTER set, the task starts a trace the worker
	// continues: a producer span whose context goes in the headers.
	traces, shutdown, err := a.setupTracing(ctx)
	if err != nil {
		return err
	}
	defer shutdown()

	timeout := a.requestTimeout()
	if pf.wait {
		timeout = a.resultTimeout()
	}
	timeout += a.delayWait(due, pf.wait)
	// One deadline covers the whole command: with --wait, the user's
	// --timeout is the longest they are prepared to wait, publish included.
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	nc, js, err := a.connectJS(wctx, "publish")
	if err != nil {
		return err
	}
	defer nc.Close()

	hdr.Set(task.HeaderID, id)
	hdr.Set(task.HeaderMsgID, id)
	msg := &nats.Msg{Subject: topo.TaskSubject(typ), Header: hdr, Data: data}
	if err := a.delayTask(topo, msg, typ, id, due); err != nil {
		return err
	}

	var replies chan *nats.Msg
	if pf.wait {
		// Subscribe before publishing: the reply can only come after the
		// task is stored, and the server handles our SUB before our PUB.
		inbox := nc.NewInbox()
		replies = make(chan *nats.Msg, 8)
		sub, err := nc.ChanSubscribe(inbox, replies)
		if err != nil {
			return fmt.Errorf("subscribe to reply inbox: %w", err)
		}
		defer sub.Unsubscribe() //nolint:errcheck // the connection closes next
		hdr.Set(task.HeaderReplyTo, inbox)
	}

	// The span covers the publish up to its ack, not the wait for the
	// result. A traceparent given with --header is the caller's trace,
	// which the span joins.
	pctx := wctx
	if traces.Enabled() {
		pctx = tracing.Extract(wctx, traces.Propagator(), hdr)
	}
	pctx, span := tracing.StartPublish(pctx, traces.Tracer(), traces.Propagator(), msg.Subject, id, hdr, len(data))
	ack, err := js.PublishMsg(pctx, msg)
	tracing.End(span, err)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("publish to %s: %w", msg.Subject, tooLarge(msg, nc.MaxPayload(), err))
		}
		return fmt.Errorf("publish to %s: %w", msg.Subject, streamHint(err, topo.TasksStream()))
	}
	if !pf.wait {
		if ack.Duplicate {
			fmt.Fprintf(a.stderr, "publisher: task %s was already published within the duplicate window; not stored again\n", id)
		}
		_, err := fmt.Fprintln(a.stdout, id)
		return err
	}
	return a.awaitResult(ctx, wctx, js, topo, typ, id, replies, ack.Duplicate, timeout)
}

// tooLarge says why the server refused msg for its size (err, wrapping
// nats.ErrMaxPayload): its limit, which the bare error leaves out and which
// differs between servers, and the task's size.
func tooLarge(msg *nats.Msg, limit int64, err error) error {
	hdr := headerSize(msg.Header)
	size := len(msg.Data) + hdr
	return fmt.Errorf("task of %s (%d bytes: payload %d, headers %d) is over the server's max_payload of %s (%d bytes); "+
		"a default nats-server allows 1 MiB, worker --embedded 8 MiB, set by max_payload in the server's config: %w",
		sizeText(int64(size)), size, len(msg.Data), hdr, sizeText(limit), limit, err)
}

// headerSize is the size of h on the wire: "NATS/1.0\r\n", a "K: V\r\n"
// line per value and a closing "\r\n", what the client counts against
// the server's limit with the payload.
func headerSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// sizeText is n bytes for people: "2.0 MiB", "512.0 KiB", "300 bytes".
func sizeText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// setupTracing sets tracing up from a.traceOpts and the OTEL_* environment,
// with console spans on standard error (standard output is the command's
// result). The returned function flushes the spans; call it before exit.
func (a *app) setupTracing(ctx context.Context) (*tracing.Tracing, func(), error) {
	o := a.traceOpts
	if o.ServiceName == "" {
		o.ServiceName = "breakwater-publisher"
	}
	if o.ConsoleWriter == nil {
		o.ConsoleWriter = a.stderr
	}
	traces, err := tracing.SetupTracing(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	return traces, func() {
		// Flush even when interrupted, but do not hang on a collector
		// that is down.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := traces.Shutdown(sctx); err != nil {
			fmt.Fprintf(a.stderr, "publisher: %v\n", err)
		}
	}, nil
}

// awaitResult waits for the reply to a published task and prints it. When
// the publish was a duplicate, the first publish carried another reply
// subject, so the result can only be found in RESULTS: it is polled there
// too (the original may still be running, hence polling, not one look).
func (a *app) awaitResult(ctx, wctx context.Context, js jetstream.JetStream, topo bus.Topology, typ, id string,
	replies <-chan *nats.Msg, duplicate bool, timeout time.Duration) error {
	var (
		results jetstream.Stream
		poll    <-chan time.Time
		every   = 100 * time.Millisecond
	)
	if duplicate {
		poll = time.After(0)
	}
	for {
		select {
		case m := <-replies:
			return a.printReply(id, m)
		case <-poll:
			m, err := lastResult(wctx, js, &results, topo, typ, id)
			switch {
			case err == nil:
				return a.printReply(id, &nats.Msg{Header: m.Header, Data: m.Data})
			case !errors.Is(err, jetstream.ErrMsgNotFound) && wctx.Err() == nil:
				return err
			}
			every = min(2*every, 2*time.Second)
			poll = time.After(every)
		case <-wctx.Done():
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			if duplicate {
				return fmt.Errorf("no result for task %s within %s (a duplicate of an earlier publish: it may still be running, may have failed, or its result may have expired)", id, timeout)
			}
			return fmt.Errorf("no result for task %s within %s", id, timeout)
		}
	}
}

// lastResult fetches the stored result of task id, looking the RESULTS
// stream up once (*s caches it between polls). A missing result is
// jetstream.ErrMsgNotFound.
func lastResult(ctx context.Context, js jetstream.JetStream, s *jetstream.Stream, topo bus.Topology, typ, id string) (*jetstream.RawStreamMsg, error) {
	if *s == nil {
		st, err := js.Stream(ctx, topo.ResultsStream())
		if err != nil {
			return nil, fmt.Errorf("look up results: %w", streamHint(err, topo.ResultsStream()))
		}
		*s = st
	}
	// Direct get when the stream allows it (the contract's RESULTS does):
	// any replica answers, and it does not go through the stream leader.
	m, err := (*s).GetLastMsgForSubject(ctx, topo.ResultSubject(typ, id))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("get result %s %s: %w", typ, id, err)
	}
	return m, err
}

// printReply prints the body of an ok result, or reports a failed task.
func (a *app) printReply(id string, m *nats.Msg) error {
	status := m.Header.Get(task.HeaderStatus)
	if status == task.StatusOK {
		return writeBody(a.stdout, m.Data)
	}
	reason := m.Header.Get(task.HeaderDLQReason)
	msg := m.Header.Get(task.HeaderDLQError)
	var why string
	switch {
	case reason != "" && msg != "":
		why = reason + ": " + msg
	case reason != "" || msg != "":
		why = reason + msg
	case status != "":
		why = "status " + status
	default:
		why = "reply without " + task.HeaderStatus
	}
	return fmt.Errorf("task %s failed: %s", id, why)
}

// writeBody prints a result body as is, ending it with a newline when it
// has none so the shell prompt (or the next line of a script) starts clean.
func writeBody(w io.Writer, body []byte) error {
	if _, err := w.Write(body); err != nil {
		return err
	}
	if !bytes.HasSuffix(body, []byte("\n")) {
		_, err := io.WriteString(w, "\n")
		return err
	}
	return nil
}
