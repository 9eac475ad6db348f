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
	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/schedule"
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
	if err := client.ValidHeader(k, v); err != nil {
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
	if err := client.ValidType(typ); err != nil {
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
	if _, err := a.topology(); err != nil {
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
	c, closeConn, err := a.client(wctx, "publish", traces)
	if err != nil {
		return err
	}
	defer closeConn()

	opts := []client.PublishOption{client.WithID(id)}
	for k, vs := range hdr {
		for _, v := range vs {
			opts = append(opts, client.WithHeader(k, v))
		}
	}
	if !due.IsZero() {
		opts = append(opts, client.WithAt(due))
	}
	if !pf.wait {
		_, err := c.Publish(wctx, typ, data, opts...)
		if errors.Is(err, client.ErrDuplicate) {
			fmt.Fprintf(a.stderr, "publisher: task %s was already published within the duplicate window; not stored again\n", id)
			err = nil
		}
		if err != nil {
			return a.failed(ctx, err)
		}
		_, err = fmt.Fprintln(a.stdout, id)
		return err
	}
	res, err := c.PublishAndWait(wctx, typ, data, opts...)
	switch {
	case err == nil:
		return writeBody(a.stdout, res.Body)
	case ctx.Err() == nil && errors.Is(err, client.ErrNoResult) && errors.Is(err, client.ErrDuplicate):
		return fmt.Errorf("no result for task %s within %s (a duplicate of an earlier publish: it may still be running, may have failed, or its result may have expired)", id, timeout)
	case ctx.Err() == nil && errors.Is(err, client.ErrNoResult):
		return fmt.Errorf("no result for task %s within %s", id, timeout)
	}
	return a.failed(ctx, err)
}

// failed is the error a command reports for err: "interrupted" when the
// user interrupted it (ctx ended), a usage error for bad input.
func (a *app) failed(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return errors.New("interrupted")
	case errors.Is(err, client.ErrInvalid), errors.Is(err, schedule.ErrInvalid):
		return usageError{msg: err.Error()}
	}
	return err
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
