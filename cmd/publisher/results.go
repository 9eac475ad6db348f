package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/client"
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
				if err := client.ValidType(typ); err != nil {
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
			if err := client.ValidType(typ); err != nil {
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
	ctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	c, closeConn, err := a.client(ctx, "result", nil)
	if err != nil {
		return err
	}
	defer closeConn()
	r, err := c.Result(ctx, typ, id)
	if err != nil {
		return err
	}
	if withHeaders {
		if err := writeHeaders(a.stdout, r.Header); err != nil {
			return err
		}
	}
	return writeBody(a.stdout, r.Body)
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

// streamResults prints results as they are stored until ctx ends.
func (a *app) streamResults(ctx context.Context, typ string, all, asJSON bool) error {
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	c, closeConn, err := a.client(cctx, "results", nil)
	if err != nil {
		return err
	}
	defer closeConn()
	var pending error
	for r, err := range c.Results(ctx, client.ResultsFilter{Type: typ, All: all}) {
		if ctx.Err() != nil {
			// Interrupted by the user: the normal way to end a stream.
			return nil
		}
		a.reportFollowError(pending)
		if pending = err; err != nil {
			continue
		}
		if _, err := a.stdout.Write(formatResult(r, asJSON)); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	return pending
}

// reportFollowError prints an error a followed stream recovered from (the
// iteration went on after it); nil prints nothing. The error that ends an
// iteration is the command's.
func (a *app) reportFollowError(err error) {
	if err != nil {
		fmt.Fprintf(a.stderr, "publisher: %v\n", oneLine(err.Error()))
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
func formatResult(r *client.Result, asJSON bool) []byte {
	h := r.Header
	if asJSON {
		out := resultJSON{Subject: r.Subject, Seq: r.Seq, Type: r.Type, ID: r.ID, Status: r.Status, Headers: h}
		if !r.Stored.IsZero() {
			out.Time = &r.Stored
		}
		// A body that is not text would be mangled in a JSON string:
		// it goes as base64 instead, in a field of its own.
		if utf8.Valid(r.Body) {
			s := string(r.Body)
			out.Body = &s
		} else {
			out.BodyBase64 = r.Body
		}
		b, _ := json.Marshal(out) // strings, bytes and a header: always encodable
		return append(b, '\n')
	}
	var b []byte
	for _, f := range []string{r.Type, r.ID, h.Get(task.HeaderStatus), h.Get(task.HeaderBackend), h.Get(task.HeaderDuration)} {
		if f == "" {
			f = "-"
		}
		b = append(b, f...)
		b = append(b, ' ')
	}
	b = appendEscaped(b, r.Body, maxBodyInLine)
	return append(b, '\n')
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
