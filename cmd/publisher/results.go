package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

// maxBodyInLine is how much of a body the one-line format of `results`
// shows; --json and `result` show it whole.
const maxBodyInLine = 200

func (a *app) resultsCmd() *cobra.Command {
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "results [TYPE]",
		Short: "Stream results as they arrive",
		Long: `Stream results from the RESULTS stream as they arrive, of every type or of
TYPE only, until interrupted. Each result is one line:

  TYPE ID STATUS BACKEND DURATION BODY

with the body cut to 200 bytes and line breaks escaped; --json prints one JSON
object a line with every header and the whole body instead. --all starts with
the results already stored.`,
		Example: `  publisher results
  publisher results code.generate --all --json | jq .body`,
		Args: argsRange(0, 1, "[TYPE]"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			typ := ""
			if len(args) == 1 {
				typ = args[0]
				if err := validType(typ); err != nil {
					return usageError{msg: err.Error()}
				}
			}
			return a.streamResults(cmd.Context(), typ, all, asJSON)
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "start with the results already stored, not only new ones")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object a line, with all headers and the whole body")
	return cmd
}

func (a *app) resultCmd() *cobra.Command {
	var headers bool
	cmd := &cobra.Command{
		Use:   "result TYPE ID",
		Short: "Fetch the result of one task",
		Long: `Fetch the stored result of task ID of type TYPE and print its body. With
--headers, the headers come first, one "Name: value" a line, then an empty
line. Exits 1 when there is no such result (not done yet, failed, or expired).`,
		Example: `  publisher result echo job-42`,
		Args:    argsRange(2, 2, "TYPE ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			typ, id := args[0], args[1]
			if err := validType(typ); err != nil {
				return usageError{msg: err.Error()}
			}
			if err := task.ValidID(id); err != nil {
				return usageError{msg: err.Error()}
			}
			return a.fetchResult(cmd.Context(), typ, id, headers)
		}),
	}
	cmd.Flags().BoolVar(&headers, "headers", false, "print the result's headers before its body")
	return cmd
}

func (a *app) fetchResult(ctx context.Context, typ, id string, withHeaders bool) error {
	topo, err := a.topology()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	nc, js, err := a.connectJS(ctx, "result")
	if err != nil {
		return err
	}
	defer nc.Close()
	var s jetstream.Stream
	m, err := lastResult(ctx, js, &s, topo, typ, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("no result for %s %s", typ, id)
	}
	if err != nil {
		return err
	}
	if withHeaders {
		if err := writeHeaders(a.stdout, storedHeaders(m.Header)); err != nil {
			return err
		}
	}
	return writeBody(a.stdout, m.Data)
}

// directGetHeaders are added by a direct get to describe where the message
// was stored; they are not part of the result.
var directGetHeaders = []string{
	jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer,
	jetstream.SubjectHeader, "Nats-Last-Sequence", "Nats-Num-Pending",
}

// storedHeaders is h without the headers a direct get adds, so `result
// --headers` shows the same whether or not the stream allows direct gets.
func storedHeaders(h nats.Header) nats.Header {
	out := make(nats.Header, len(h))
	for k, v := range h {
		if !slices.Contains(directGetHeaders, k) {
			out[k] = v
		}
	}
	return out
}

// writeHeaders prints h sorted by name, one "Name: value" a line, and the
// empty line that separates headers from the body.
func writeHeaders(w io.Writer, h nats.Header) error {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// streamResults prints results as they are stored until ctx ends. An
// ordered consumer needs no state on the server beyond this run (it is
// ephemeral) and recovers by itself from gaps and reconnects.
func (a *app) streamResults(ctx context.Context, typ string, all, asJSON bool) error {
	topo, err := a.topology()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	nc, js, err := a.connectJS(cctx, "results")
	if err != nil {
		return err
	}
	defer nc.Close()
	policy := jetstream.DeliverNewPolicy
	if all {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := js.OrderedConsumer(cctx, topo.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topo.ResultsFilter(typ)},
		DeliverPolicy:  policy,
	})
	if err != nil {
		return fmt.Errorf("follow results: %w", streamHint(err, topo.ResultsStream()))
	}

	// The handler runs on one goroutine, in stream order; a write error
	// (closed pipe) ends the command through werr.
	werr := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		line, err := formatResult(topo, m, asJSON)
		if err == nil {
			_, err = a.stdout.Write(line)
		}
		if err != nil {
			select {
			case werr <- err:
			default:
			}
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recreates itself after missed heartbeats
		// and reconnects; only say something about what it cannot fix.
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) {
			fmt.Fprintf(a.stderr, "publisher: follow results: %v\n", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("follow results: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		// Interrupted by the user: the normal way to end a stream.
		return nil
	case err := <-werr:
		return fmt.Errorf("write result: %w", err)
	}
}

// resultJSON is one line of `results --json`.
type resultJSON struct {
	Subject    string      `json:"subject"`
	Seq        uint64      `json:"seq,omitempty"`
	Time       *time.Time  `json:"time,omitempty"`
	Type       string      `json:"type"`
	ID         string      `json:"id"`
	Status     string      `json:"status,omitempty"`
	Headers    nats.Header `json:"headers"`
	Body       *string     `json:"body,omitempty"`
	BodyBase64 []byte      `json:"body_base64,omitempty"`
}

// formatResult renders one result as a line of text or JSON.
func formatResult(topo bus.Topology, m jetstream.Msg, asJSON bool) ([]byte, error) {
	h := m.Headers()
	typ, id := resultKey(topo, m.Subject(), h)
	if asJSON {
		r := resultJSON{Subject: m.Subject(), Type: typ, ID: id, Status: h.Get(task.HeaderStatus), Headers: h}
		if r.Headers == nil {
			r.Headers = nats.Header{}
		}
		if md, err := m.Metadata(); err == nil {
			r.Seq = md.Sequence.Stream
			t := md.Timestamp
			r.Time = &t
		}
		// A body that is not text would be mangled in a JSON string:
		// it goes as base64 instead, in a field of its own.
		if body := m.Data(); utf8.Valid(body) {
			s := string(body)
			r.Body = &s
		} else {
			r.BodyBase64 = body
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	var b []byte
	for _, f := range []string{typ, id, h.Get(task.HeaderStatus), h.Get(task.HeaderBackend), h.Get(task.HeaderDuration)} {
		if f == "" {
			f = "-"
		}
		b = append(b, f...)
		b = append(b, ' ')
	}
	b = appendEscaped(b, m.Data(), maxBodyInLine)
	return append(b, '\n'), nil
}

// resultKey returns the type and id of a result, from its headers or, for
// a result written by another tool, from its subject
// (results.<type>.<id>, the type possibly of several tokens).
func resultKey(topo bus.Topology, subject string, h nats.Header) (typ, id string) {
	typ, id = h.Get(task.HeaderType), h.Get(task.HeaderID)
	rest, ok := strings.CutPrefix(subject, strings.TrimSuffix(topo.ResultsFilter(""), ">"))
	if !ok {
		return typ, id
	}
	if i := strings.LastIndexByte(rest, '.'); i > 0 {
		if typ == "" {
			typ = rest[:i]
		}
		if id == "" {
			id = rest[i+1:]
		}
	}
	return typ, id
}

// appendEscaped appends at most limit bytes of body to b on one line:
// line breaks, tabs, other control characters and invalid UTF-8 are
// escaped, and a cut body ends with "…". A rune is never split.
func appendEscaped(b, body []byte, limit int) []byte {
	n := 0
	for i := 0; i < len(body); {
		r, size := utf8.DecodeRune(body[i:])
		if n+size > limit {
			return append(b, "…"...)
		}
		switch {
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f:
			b = fmt.Appendf(b, `\x%02x`, body[i])
		default:
			b = append(b, body[i:i+size]...)
		}
		n += size
		i += size
	}
	return b
}
